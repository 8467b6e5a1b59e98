"""Cancel and DELETE on a job whose worker is gone (its lease expired) work at once (issue 13 §1),
while a job with a live worker keeps the usual 202 / 409 answers."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from netshrink.service.deps import AppState
from netshrink.service.main import create_app
from tests.service.conftest import SPEC, app_state, assert_problem, make_settings, submit

REDIS_URL = "redis://127.0.0.1:6379/0"


def _orphan(client: TestClient, job_id: str) -> None:
    """A worker claims the job, then dies: nobody renews its (short) lease."""
    store = app_state(client).store
    store.lease_s = 0.05  # type: ignore[attr-defined]
    store.claim(job_id, owner="msg", token="dead-worker", max_attempts=3)
    time.sleep(0.1)


def test_cancel_a_job_whose_worker_is_gone_is_immediate(
    client: TestClient, submitted: Callable[..., dict[str, Any]]
) -> None:
    job = submitted()
    _orphan(client, job["id"])
    r = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    assert client.delete(f"/v1/jobs/{job['id']}").status_code == 204


def test_delete_a_job_whose_worker_is_gone_cancels_and_removes_it(
    client: TestClient, submitted: Callable[..., dict[str, Any]]
) -> None:
    live, orphan = submitted(), submitted()
    app_state(client).store.claim(live["id"], owner="msg", token="alive", max_attempts=3)
    assert_problem(client.delete(f"/v1/jobs/{live['id']}"), 409, "job-active")
    assert client.post(f"/v1/jobs/{live['id']}/cancel").status_code == 202  # the live worker stops it
    _orphan(client, orphan["id"])
    assert client.delete(f"/v1/jobs/{orphan['id']}").status_code == 204
    assert_problem(client.get(f"/v1/jobs/{orphan['id']}"), 404)
    assert not app_state(client).artifacts.job_dir(orphan["id"]).exists()


def _record_enqueues(state: AppState) -> tuple[list[tuple[str, bool]], list[str]]:
    """(job id, its stored ``enqueued`` flag at the send) per message; ids given to ``mark_enqueued``."""
    sent: list[tuple[str, bool]] = []
    marked: list[str] = []
    state.enqueue = lambda job: sent.append((job.id, state.store.get(job.id).enqueued))
    mark = state.store.mark_enqueued

    def recording_mark(job_id: str, **kwargs: Any) -> None:
        marked.append(job_id)
        mark(job_id, **kwargs)

    state.store.mark_enqueued = recording_mark  # type: ignore[method-assign]
    return sent, marked


@pytest.mark.redis
def test_submit_records_that_it_enqueued_the_job_in_redis_mode(
    tmp_path: Path, redis_prefix: str, onnx_model: bytes
) -> None:
    """The outbox flag: stored False, True once the message is sent, so the reaper leaves it alone
    (a job whose API died in between stays False: ``tests/faults/test_api_crash.py``)."""
    settings = make_settings(tmp_path, redis_url=REDIS_URL, redis_key_prefix=redis_prefix)
    with TestClient(create_app(settings)) as client:
        state = app_state(client)
        sent, marked = _record_enqueues(state)
        r = submit(client, onnx_model, SPEC)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        assert sent == [(job_id, False)]  # at the send, the stored job still said "not enqueued"
        assert marked == [job_id] and state.store.get(job_id).enqueued


def test_an_embedded_submit_stores_the_job_enqueued_in_one_write(
    client: TestClient, submitted: Callable[..., dict[str, Any]]
) -> None:
    """Embedded mode: the message goes to this process's memory:// broker, which dies with it, and
    the next start enqueues every queued job again (``tests/faults/test_serve_crash.py``), so the
    job is stored with the flag set and no second write records the send."""
    state = app_state(client)
    assert state.in_process_broker
    sent, marked = _record_enqueues(state)
    job = submitted()
    assert sent == [(job["id"], True)] and marked == []
    assert state.store.get(job["id"]).enqueued
