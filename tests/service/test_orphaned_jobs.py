"""Cancel and DELETE on a job whose worker is gone (its lease expired) work at once (issue 13 §1),
while a job with a live worker keeps the usual 202 / 409 answers."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

from tests.service.conftest import app_state, assert_problem


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


def test_submit_records_that_it_enqueued_the_job(
    client: TestClient, submitted: Callable[..., dict[str, Any]]
) -> None:
    """The outbox flag: stored False, True once the message is sent, so the reaper leaves it alone
    (a job whose API died in between stays False: ``tests/faults/test_api_crash.py``)."""
    sent: list[str] = []
    state = app_state(client)
    state.enqueue = lambda job: sent.append(job.id) if state.store.get(job.id).enqueued is False else None
    job = submitted()
    assert sent == [job["id"]]  # at the enqueue, the stored job still said "not enqueued"
    assert state.store.get(job["id"]).enqueued
