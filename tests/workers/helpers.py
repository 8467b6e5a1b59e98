"""Small helpers shared by the worker tests."""

from __future__ import annotations

import os
import time
from pathlib import Path

from netshrink.workers.jobs import Job, JobStore
from netshrink.workers.settings import WorkerSettings

REDIS_URL = "redis://127.0.0.1:6379/0"
ROOT = Path(__file__).resolve().parents[2]


def wait_terminal(store: JobStore, job_id: str, timeout_s: float = 60.0) -> Job:
    """Poll the store until the job is terminal; fail the test with its last state otherwise."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = store.get(job_id)
        if job.status.is_terminal:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} not terminal after {timeout_s}s: {store.get(job_id)}")


def redis_worker_env(
    tmp_path: Path, redis_prefix: str, **extra: str
) -> tuple[dict[str, str], WorkerSettings]:
    """The environment of a `netshrink worker` subprocess on the real Redis, and the same settings here."""
    env = {
        **os.environ,
        "NETSHRINK_REDIS_URL": REDIS_URL,
        "NETSHRINK_REDIS_KEY_PREFIX": redis_prefix,
        "NETSHRINK_DATA_DIR": str(tmp_path / "data"),
        "NETSHRINK_DEVICE": "cpu",
        "PYTHONPATH": str(ROOT),
        **{f"NETSHRINK_{k.upper()}": v for k, v in extra.items()},
    }
    settings = WorkerSettings(
        _env_file=None,  # type: ignore[call-arg]
        redis_url=REDIS_URL,
        redis_key_prefix=redis_prefix,
        data_dir=tmp_path / "data",
    )
    return env, settings
