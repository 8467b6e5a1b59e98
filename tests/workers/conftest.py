"""Fixtures for the workers tests: settings under tmp_path, both job stores, a real Redis.

Redis tests use the real server at 127.0.0.1:6379 with a unique key prefix per test (and, for
Celery, unique queue names), and delete every key they created.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from netshrink.workers.artifacts import ArtifactStore
from netshrink.workers.jobs import InputInfo, Job
from netshrink.workers.settings import WorkerSettings
from netshrink.workers.store_redis import RedisJobStore
from netshrink.workers.store_sqlite import SQLiteJobStore

torch.set_num_threads(1)

REDIS_URL = "redis://127.0.0.1:6379/0"
RETENTION_S = 3600


@pytest.fixture
def sqlite_store(tmp_path: Path) -> SQLiteJobStore:
    return SQLiteJobStore(tmp_path / "jobs.sqlite3", retention_s=RETENTION_S)


@pytest.fixture
def store(settings: WorkerSettings) -> SQLiteJobStore:
    """The SQLite store at the settings' path, as ``run_job`` finds it (modules may define their own)."""
    return SQLiteJobStore(settings.sqlite_path, retention_s=settings.artifact_retention_s)


@pytest.fixture
def redis_store(redis_prefix: str) -> Iterator[RedisJobStore]:
    store = RedisJobStore(REDIS_URL, retention_s=RETENTION_S, prefix=redis_prefix)
    yield store
    store.close()


@pytest.fixture
def settings(tmp_path: Path) -> WorkerSettings:
    """Embedded-mode settings rooted in tmp_path (no environment involved)."""
    return WorkerSettings(
        _env_file=None,  # type: ignore[call-arg]
        redis_url=None,
        data_dir=tmp_path / "data",
        artifact_retention_s=RETENTION_S,
        max_attempts=3,
        webhook_progress_interval_s=0.0,
    )


@pytest.fixture
def artifacts(settings: WorkerSettings) -> ArtifactStore:
    return ArtifactStore(settings.artifacts_dir)


@pytest.fixture
def make_job() -> Callable[..., Job]:
    """``make_job(owner=..., spec=..., ...)``: a queued Job with a plausible ONNX input record."""

    def make(**fields: Any) -> Job:
        fields.setdefault(
            "input", InputInfo(filename="model.onnx", format="onnx", sha256="0" * 64, size_bytes=1)
        )
        fields.setdefault("spec", {"kind": fields.get("kind", "compress"), "seed": 7})
        return Job(**fields)

    return make
