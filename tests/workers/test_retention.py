"""Retention cleanup and the housekeeper thread (heartbeat + periodic cleanup)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import timedelta

import pytest

from netshrink.workers.artifacts import ArtifactStore
from netshrink.workers.jobs import Job, JobNotFoundError, JobStatus, utcnow
from netshrink.workers.retention import Housekeeper, cleanup_expired
from netshrink.workers.settings import WorkerSettings
from netshrink.workers.store_sqlite import SQLiteJobStore


def test_cleanup_removes_expired_jobs_and_files_only(
    sqlite_store: SQLiteJobStore, artifacts: ArtifactStore, make_job: Callable[..., Job]
) -> None:
    old, fresh, running = (sqlite_store.create(make_job()).job for _ in range(3))
    for job in (old, fresh, running):
        artifacts.save(job.id, "model.onnx", b"m")
    sqlite_store.mark_succeeded(old.id, report={}, artifacts=[])
    sqlite_store.mark_running(running.id)
    later = utcnow() + timedelta(seconds=3601)
    sqlite_store.mark_failed(fresh.id, {"type": "t"})  # also expires at ~now + 3600 s: within `later`
    assert cleanup_expired(sqlite_store, artifacts, utcnow()) == 0
    assert cleanup_expired(sqlite_store, artifacts, later) == 2
    for job in (old, fresh):
        with pytest.raises(JobNotFoundError):
            sqlite_store.get(job.id)
    assert list(artifacts.job_ids()) == [running.id]
    assert sqlite_store.get(running.id).status is JobStatus.RUNNING


def test_cleanup_removes_old_orphan_directories(
    sqlite_store: SQLiteJobStore, artifacts: ArtifactStore
) -> None:
    artifacts.save_input("job_orphan_old", "model.onnx", b"x")
    artifacts.save_input("job_orphan_new", "model.onnx", b"x")  # an upload in flight: keep it
    past = time.time() - 7200
    os.utime(artifacts.job_dir("job_orphan_old"), (past, past))
    cleanup_expired(sqlite_store, artifacts)
    assert list(artifacts.job_ids()) == ["job_orphan_new"]


def test_housekeeper_heartbeats_and_cleans(
    sqlite_store: SQLiteJobStore,
    artifacts: ArtifactStore,
    settings: WorkerSettings,
    make_job: Callable[..., Job],
) -> None:
    short = SQLiteJobStore(sqlite_store.path, retention_s=0)
    job = short.create(make_job()).job
    short.mark_failed(job.id, {"type": "t"})  # expires immediately
    keeper = Housekeeper(short, artifacts, settings, queues=["cpu"], heartbeat_interval_s=0.05)
    keeper.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and short.counts_by_status()[JobStatus.FAILED]:
            time.sleep(0.02)
        (hb,) = short.list_workers()
        assert hb.pid == os.getpid() and hb.queues == ["cpu"]
        with pytest.raises(JobNotFoundError):
            short.get(job.id)
    finally:
        keeper.stop()
    assert not keeper.is_alive()


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_a_stopped_housekeeper_removes_its_heartbeat(
    kind: str, request: pytest.FixtureRequest, artifacts: ArtifactStore, settings: WorkerSettings
) -> None:
    """A cleanly stopped worker leaves ``GET /v1/workers`` at once (it counted as alive for up to
    ``heartbeat_ttl_s`` = 60 s until 2026-12-05); another worker's record stays."""
    store = request.getfixturevalue(f"{kind}_store")
    keepers = [
        Housekeeper(store, artifacts, settings, queues=["cpu"], heartbeat_interval_s=0.05) for _ in "ab"
    ]
    for keeper in keepers:
        keeper.start()
    deadline = time.monotonic() + 10
    while len(store.list_workers()) < 2:
        assert time.monotonic() < deadline, "no heartbeats"
        time.sleep(0.02)
    keepers[0].stop()
    try:
        assert [hb.worker_id for hb in store.list_workers()] == [keepers[1].record.worker_id]
    finally:
        keepers[1].stop()
    assert store.list_workers() == []
    Housekeeper(store, artifacts, settings, queues=["cpu"]).stop()  # never started: nothing to remove
