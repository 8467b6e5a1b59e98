"""The reaper, the lease heartbeat and embedded start-up recovery, on the real SQLite store.

The same store methods are held to the shared contract on both stores (``jobstore_contract.py``);
the process-level faults (SIGKILL of workers, of ``netshrink serve``, of Redis) are in
``tests/faults/``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from netshrink.service.schemas import to_public
from netshrink.workers.artifacts import ArtifactStore
from netshrink.workers.jobs import INTERNAL_FIELDS, Claim, Job, JobStatus, utcnow
from netshrink.workers.lease import LeaseKeeper
from netshrink.workers.reaper import (
    DataDirLock,
    dispatch_stranded,
    hand_back_queued,
    reap_orphans,
    recover_embedded,
)
from netshrink.workers.retention import Housekeeper
from netshrink.workers.settings import WorkerSettings
from netshrink.workers.store_sqlite import SQLiteJobStore
from netshrink.workers.webhooks import build_event

MakeJob = Callable[..., Job]


def _store(tmp_path: Path, lease_s: float) -> SQLiteJobStore:
    return SQLiteJobStore(tmp_path / "jobs.sqlite3", retention_s=60, lease_s=lease_s)


def test_reap_orphans_requeues_fails_cancels_and_spares_live_leases(
    tmp_path: Path, make_job: MakeJob
) -> None:
    short, long = _store(tmp_path, 0.05), _store(tmp_path, 60)
    orphan, worn, flagged, live = (short.create(make_job()).job for _ in range(4))
    short.claim(orphan.id, owner="m", token="a", max_attempts=3)
    for i in range(3):  # three deliveries, each lost its worker
        short.claim(worn.id, owner=f"m{i}", token=f"w{i}", max_attempts=3)
        if i < 2:
            short.reap(worn.id, max_attempts=3, now=utcnow() + timedelta(hours=1))
    short.claim(flagged.id, owner="m", token="c", max_attempts=3)
    short.request_cancel(flagged.id)
    long.claim(live.id, owner="m", token="l", max_attempts=3)
    time.sleep(0.1)
    sent: list[str] = []
    result = reap_orphans(short, lambda job: sent.append(job.id), max_attempts=3)
    assert sent == [orphan.id] and result.requeued == [orphan.id]
    assert result.failed == [worn.id] and result.cancelled == [flagged.id]
    assert short.get(orphan.id).status is JobStatus.QUEUED
    assert short.get(worn.id).status is JobStatus.FAILED
    assert short.get(flagged.id).status is JobStatus.CANCELLED
    assert short.get(live.id).status is JobStatus.RUNNING
    assert reap_orphans(short, lambda job: sent.append(job.id), max_attempts=3).requeued == []


def test_recover_embedded_takes_back_running_jobs_first_then_enqueues_queued_oldest_first(
    tmp_path: Path, make_job: MakeJob
) -> None:
    store = _store(tmp_path, 60)
    t0 = utcnow()
    running = store.create(make_job(created_at=t0)).job
    queued = [store.create(make_job(created_at=t0 + timedelta(seconds=i + 1))).job for i in range(3)]
    store.claim(running.id, owner="dead-process", token="x", max_attempts=3)  # lease still live
    sent: list[str] = []
    result = recover_embedded(store, lambda job: sent.append(job.id), max_attempts=3, exclusive=True)
    assert result.requeued == [running.id]
    assert sent == [running.id, *[j.id for j in queued]]
    assert all(store.get(j).status is JobStatus.QUEUED for j in sent)
    # Without the data-dir lock another process may own that lease: only expired ones are taken.
    store.claim(running.id, owner="other-process", token="y", max_attempts=3)
    sent.clear()
    recover_embedded(store, lambda job: sent.append(job.id), max_attempts=3, exclusive=False)
    assert sent == [j.id for j in queued] and store.get(running.id).status is JobStatus.RUNNING


def test_data_dir_lock_is_exclusive_only_while_no_other_embedded_process_holds_it(tmp_path: Path) -> None:
    """flock locks belong to open files, so two locks in one process conflict as two processes would."""
    first = DataDirLock(tmp_path)
    assert first.acquire()  # alone: exclusive, for its start-up recovery
    waiting = DataDirLock(tmp_path, wait_s=0.2)
    assert not waiting.acquire()  # the first recovers: not even shared is granted meanwhile
    assert waiting._fh is None
    first.share()  # recovery over: a sibling may start
    sibling = DataDirLock(tmp_path, wait_s=0.2)
    assert not sibling.acquire() and sibling._fh is not None  # shared, not exclusive
    first.release()  # the first stops (or dies): the sibling still runs jobs
    assert not DataDirLock(tmp_path, wait_s=0.2).acquire()  # so no newcomer takes every job back
    sibling.release()
    last = DataDirLock(tmp_path)
    assert last.acquire()  # nobody left: exclusive again
    last.release()


def test_a_stopping_process_hands_its_queued_jobs_to_the_reaper_once(
    tmp_path: Path, make_job: MakeJob
) -> None:
    """Its memory:// messages die with it: every queued job is marked unsent and a sibling's reaper
    sends each once; running and finished jobs are left alone."""
    store = _store(tmp_path, 60)
    old = utcnow() - timedelta(seconds=30)
    queued = [store.create(make_job(created_at=old + timedelta(seconds=i))).job for i in range(2)]
    running = store.create(make_job(created_at=old)).job
    store.mark_running(running.id)
    assert hand_back_queued(store) == [j.id for j in queued]
    assert not any(store.get(j.id).enqueued for j in queued) and store.get(running.id).enqueued
    sent: list[str] = []
    assert (
        dispatch_stranded(store, lambda job: sent.append(job.id), grace_s=10)
        == sent
        == [j.id for j in queued]
    )
    assert dispatch_stranded(store, lambda job: sent.append(job.id), grace_s=10) == []


def test_lease_keeper_renews_and_notices_a_lost_lease(tmp_path: Path, make_job: MakeJob) -> None:
    store = _store(tmp_path, 0.3)
    job = store.create(make_job()).job
    assert store.claim(job.id, owner="m", token="t", max_attempts=3) is Claim.RUN
    first = store.get(job.id).lease_expires_at
    with LeaseKeeper(store, job.id, "t", interval_s=0.05) as keeper:
        time.sleep(0.6)  # twice the lease: alive only because it was renewed
        assert store.expired_leases() == [] and not keeper.lost
        renewed = store.get(job.id).lease_expires_at
        assert first is not None and renewed is not None and renewed > first
        store.reap(job.id, max_attempts=3, now=utcnow() + timedelta(hours=1))
        time.sleep(0.2)
        assert keeper.lost


def test_housekeeper_reaps_within_the_documented_bound(
    tmp_path: Path, settings: WorkerSettings, make_job: MakeJob
) -> None:
    fast = settings.model_copy(update={"lease_heartbeat_s": 0.1, "reaper_interval_s": 0.2})
    store = SQLiteJobStore(fast.sqlite_path, retention_s=60, lease_s=fast.lease_s)
    job = store.create(make_job()).job
    store.claim(job.id, owner="m", token="t", max_attempts=3)
    crashed = time.monotonic()  # nobody renews from here on
    sent: list[float] = []
    keeper = Housekeeper(
        store,
        ArtifactStore(fast.artifacts_dir),
        fast,
        queues=["cpu"],
        enqueue=lambda j: sent.append(time.monotonic() - crashed),
    )
    keeper.start()
    try:
        deadline = time.monotonic() + 10
        while not sent:
            assert time.monotonic() < deadline, "the housekeeper never reaped"
            time.sleep(0.02)
    finally:
        keeper.stop()
    assert store.get(job.id).status is JobStatus.QUEUED
    assert sent[0] <= fast.recovery_bound_s + 0.5  # 2 × heartbeat + reaper period, plus scheduling


def test_dispatch_stranded_enqueues_a_job_its_api_never_enqueued_once(
    tmp_path: Path, make_job: MakeJob
) -> None:
    """The API stored the job (``enqueued=False``) and died before sending its message."""
    store = _store(tmp_path, 60)
    stranded = store.create(make_job(enqueued=False, created_at=utcnow() - timedelta(seconds=30))).job
    fresh = store.create(make_job(enqueued=False)).job  # its API may still be about to send it
    normal = store.create(make_job(created_at=utcnow() - timedelta(seconds=30))).job
    sent: list[str] = []
    assert dispatch_stranded(store, lambda job: sent.append(job.id), grace_s=10) == [stranded.id]
    assert sent == [stranded.id] and store.get(stranded.id).enqueued
    assert dispatch_stranded(store, lambda job: sent.append(job.id), grace_s=10) == []  # once
    assert not store.get(fresh.id).enqueued and store.get(normal.id).status is JobStatus.QUEUED


def test_recover_embedded_records_what_it_enqueued(tmp_path: Path, make_job: MakeJob) -> None:
    store = _store(tmp_path, 60)
    job = store.create(make_job(enqueued=False, created_at=utcnow() - timedelta(seconds=30))).job
    recover_embedded(store, lambda j: None, max_attempts=3, exclusive=True)
    assert store.get(job.id).enqueued and dispatch_stranded(store, lambda j: None, grace_s=1) == []


def test_lease_fields_stay_internal(make_job: MakeJob) -> None:
    job = make_job(lease_owner="m", lease_token="t", lease_expires_at=utcnow(), enqueued=False)
    assert not INTERNAL_FIELDS & set(to_public(job).model_dump())
    assert not INTERNAL_FIELDS & set(build_event("job.started", job)["data"])


def test_jobs_the_reaper_ends_get_their_webhook_event(tmp_path: Path, make_job: MakeJob) -> None:
    store = _store(tmp_path, 0.05)
    hook = {"url": "https://example.com/h"}
    worn, flagged = store.create(make_job(callback=hook)).job, store.create(make_job(callback=hook)).job
    quiet = store.create(make_job(callback={"url": "https://example.com/h", "events": ["job.succeeded"]})).job
    for job in (worn, quiet):
        store.claim(job.id, owner="m", token="t", max_attempts=1)
    store.claim(flagged.id, owner="m", token="t", max_attempts=3)
    store.request_cancel(flagged.id)
    time.sleep(0.1)
    events: list[tuple[str, str, JobStatus]] = []
    reap_orphans(
        store, lambda job: None, max_attempts=1, notify=lambda e, j: events.append((e, j.id, j.status))
    )
    assert sorted(events) == sorted(
        [("job.failed", worn.id, JobStatus.FAILED), ("job.cancelled", flagged.id, JobStatus.CANCELLED)]
    )
