"""Fixtures for the API tests: the REAL app (``create_app``) over a SQLite store in a tmp dir.

No route is mocked. Job states a worker would produce are written through the same real
``JobStore``/``ArtifactStore`` API the worker uses (``finish_job``), so artifact and report
endpoints are tested without running the compression core; the embedded end-to-end test in
``test_jobs_api.py`` runs a real job through Celery.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from netshrink.service.deps import AppState
from netshrink.service.main import create_app
from netshrink.service.settings import ServiceSettings
from netshrink.workers.jobs import Job
from tests import factories

# Starlette 1.10 prefers the `httpx2` fork for its TestClient and warns once, at import, when only
# httpx is installed. The warning is about the test client's transport, not about our code.
warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`", category=UserWarning)
from fastapi.testclient import TestClient  # noqa: E402

torch.set_num_threads(1)

SPEC = {"prune": {"keep": 0.5}, "seed": 7}


def make_settings(tmp_path: Path, **overrides: Any) -> ServiceSettings:
    """Settings isolated from the environment: a tmp data dir, embedded store, no worker thread."""
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "redis_url": None,
        "embedded_worker": False,
        "host": "127.0.0.1",
        "auth_disabled": False,
        "rate_limit_requests": 1000,
        "prefer_wait_max_s": 2.0,
    }
    values.update(overrides)
    return ServiceSettings(**values)


@pytest.fixture
def settings(tmp_path: Path) -> ServiceSettings:
    return make_settings(tmp_path)


@pytest.fixture
def client(settings: ServiceSettings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def app_state(client: TestClient) -> AppState:
    state: AppState = client.app.state.netshrink  # type: ignore[attr-defined]
    return state


@pytest.fixture(scope="session")
def onnx_model() -> bytes:
    return factories.mlp_onnx()


def submit(
    client: TestClient,
    model: bytes,
    spec: dict[str, Any] | str | None = None,
    *,
    headers: dict[str, str] | None = None,
    filename: str = "model.onnx",
    **extra: Any,
) -> httpx.Response:
    """POST /v1/jobs as multipart, the way curl -F does it."""
    files: dict[str, Any] = {"model": (filename, model, "application/octet-stream")}
    data: dict[str, str] = {}
    if spec is not None:
        data["spec"] = spec if isinstance(spec, str) else json.dumps(spec)
    for name, value in extra.items():
        if isinstance(value, bytes):
            files[name] = (f"{name}.bin", value, "application/octet-stream")
        else:
            data[name] = value if isinstance(value, str) else json.dumps(value)
    return client.post("/v1/jobs", files=files, data=data, headers=headers or {})


@pytest.fixture
def submitted(client: TestClient, onnx_model: bytes) -> Callable[..., dict[str, Any]]:
    """Submit a valid job and return its JSON body."""

    def _submit(**kwargs: Any) -> dict[str, Any]:
        r = submit(client, onnx_model, SPEC, **kwargs)
        assert r.status_code == 202, r.text
        body: dict[str, Any] = r.json()
        return body

    return _submit


def finish_job(client: TestClient, job_id: str, artifacts: dict[str, bytes] | None = None) -> Job:
    """Drive a job to ``succeeded`` through the real stores, as ``workers/run.py`` does."""
    state = app_state(client)
    assert state.store.mark_running(job_id)
    infos = [state.artifacts.save(job_id, name, data) for name, data in (artifacts or {}).items()]
    report = {"summary": {"rel_l2": 0.01}, "reproducibility": {"seed": 7}}
    assert state.store.mark_succeeded(job_id, report=report, artifacts=infos)
    return state.store.get(job_id)


def assert_problem(r: httpx.Response, status: int, type_suffix: str | None = None) -> dict[str, Any]:
    """Every non-2xx answer is RFC 9457 problem+json with the standard members."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    assert body["status"] == status
    assert body["title"]
    assert "type" in body and "instance" in body
    assert "Traceback" not in r.text
    if type_suffix is not None:
        assert body["type"].endswith("/" + type_suffix), body["type"]
    return body
