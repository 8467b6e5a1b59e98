"""The JobStore contract, one suite for every implementation.

``test_jobs_sqlite.py`` and ``test_jobs_redis.py`` subclass ``StoreContract`` and provide the
``store`` fixture, so both stores are held to exactly the same assertions.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta

import pytest

from netshrink.workers.jobs import (
    ApiKeyRecord,
    ArtifactInfo,
    Claim,
    IdempotencyConflictError,
    Job,
    JobNotFoundError,
    JobStatus,
    JobStore,
    Progress,
    WorkerHeartbeat,
    utcnow,
)
from tests.workers.jobstore_dispatch import DispatchContract
from tests.workers.jobstore_report import ReportContract

MakeJob = Callable[..., Job]
ART = ArtifactInfo(name="model.onnx", media_type="application/onnx", size_bytes=3, sha256="a" * 64)


class StoreContract(DispatchContract, ReportContract):
    def test_satisfies_protocol(self, store: JobStore) -> None:
        assert isinstance(store, JobStore)
        assert store.ping()

    def test_create_get_roundtrip(self, store: JobStore, make_job: MakeJob) -> None:
        job = make_job(owner="k1", callback={"url": "https://example.com/h", "events": ["job.failed"]})
        result = store.create(job)
        assert result.created
        got = store.get(job.id)
        assert got == job
        assert got.status is JobStatus.QUEUED and got.attempts == 0 and got.callback is not None

    def test_get_unknown_raises(self, store: JobStore) -> None:
        with pytest.raises(JobNotFoundError) as info:
            store.get("job_missing")
        assert info.value.job_id == "job_missing"

    def test_idempotency_same_payload_replays(self, store: JobStore, make_job: MakeJob) -> None:
        first = store.create(make_job(owner="k1"), idempotency_key="abc", fingerprint="fp1")
        again = store.create(make_job(owner="k1"), idempotency_key="abc", fingerprint="fp1")
        assert first.created and not again.created
        assert again.job.id == first.job.id
        assert store.idempotency_lookup("abc", "k1") == ("fp1", first.job.id)
        assert store.list("k1").items == [store.get(first.job.id)]

    def test_idempotency_different_payload_conflicts(self, store: JobStore, make_job: MakeJob) -> None:
        first = store.create(make_job(owner="k1"), idempotency_key="abc", fingerprint="fp1")
        with pytest.raises(IdempotencyConflictError) as info:
            store.create(make_job(owner="k1"), idempotency_key="abc", fingerprint="fp2")
        assert info.value.job_id == first.job.id
        assert len(store.list("k1").items) == 1

    def test_idempotency_keys_are_per_owner(self, store: JobStore, make_job: MakeJob) -> None:
        a = store.create(make_job(owner="k1"), idempotency_key="same", fingerprint="fp")
        b = store.create(make_job(owner="k2"), idempotency_key="same", fingerprint="fp")
        assert a.created and b.created and a.job.id != b.job.id
        assert store.idempotency_lookup("same", "k3") is None

    def test_concurrent_idempotent_creates_make_one_job(self, store: JobStore, make_job: MakeJob) -> None:
        results: list[bool] = []
        barrier = threading.Barrier(6)

        def submit() -> None:
            barrier.wait()
            results.append(
                store.create(make_job(owner="k1"), idempotency_key="race", fingerprint="fp").created
            )

        threads = [threading.Thread(target=submit) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == [False] * 5 + [True]
        assert len(store.list("k1").items) == 1

    def test_list_filters_owner_and_orders_newest_first(self, store: JobStore, make_job: MakeJob) -> None:
        t0 = utcnow()
        mine = [make_job(owner="me", created_at=t0 + timedelta(seconds=i)) for i in range(3)]
        for job in [*mine, make_job(owner="other")]:
            store.create(job)
        page = store.list("me")
        assert [j.id for j in page.items] == [j.id for j in reversed(mine)]
        assert page.next_cursor is None
        assert len(store.list(None).items) == 4

    def test_cursor_pagination_visits_each_job_once_even_with_tied_timestamps(
        self, store: JobStore, make_job: MakeJob
    ) -> None:
        t0 = utcnow()
        jobs = [make_job(owner="me", created_at=t0 + timedelta(seconds=i // 3)) for i in range(11)]
        for job in jobs:
            store.create(job)
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            page = store.list("me", limit=4, cursor=cursor)
            seen += [j.id for j in page.items]
            pages += 1
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert pages == 3
        assert sorted(seen) == sorted(j.id for j in jobs) and len(seen) == len(set(seen))
        expected = sorted(jobs, key=lambda j: (j.created_at, j.id), reverse=True)
        assert seen == [j.id for j in expected]

    def test_list_status_filter(self, store: JobStore, make_job: MakeJob) -> None:
        jobs = [make_job(owner="me") for _ in range(5)]
        for job in jobs:
            store.create(job)
        store.mark_running(jobs[1].id)
        store.mark_failed(jobs[3].id, {"type": "x", "status": 500})
        assert [j.id for j in store.list("me", status=JobStatus.FAILED).items] == [jobs[3].id]
        assert {j.id for j in store.list("me", status=JobStatus.QUEUED).items} == {
            jobs[0].id,
            jobs[2].id,
            jobs[4].id,
        }
        page = store.list("me", status=JobStatus.QUEUED, limit=2)
        assert len(page.items) == 2 and page.next_cursor is not None
        rest = store.list("me", status=JobStatus.QUEUED, limit=2, cursor=page.next_cursor)
        assert len(rest.items) == 1 and rest.next_cursor is None

    def test_bad_cursor_is_value_error(self, store: JobStore) -> None:
        with pytest.raises(ValueError):
            store.list("me", cursor="%%%not-a-cursor")

    def test_lifecycle_success(self, store: JobStore, make_job: MakeJob) -> None:
        job = store.create(make_job()).job
        assert store.mark_running(job.id)
        started = store.get(job.id).started_at
        assert started is not None
        assert store.bump_attempts(job.id) == 1 and store.bump_attempts(job.id) == 2
        store.set_progress(job.id, Progress(stage="compressing", layer=1, layers_total=3, fraction=0.3))
        assert store.get(job.id).progress.layer == 1
        assert store.mark_running(job.id)  # redelivery keeps the first start time
        assert store.get(job.id).started_at == started
        assert store.mark_succeeded(job.id, report={"summary": {"ratio": 2.0}}, artifacts=[ART])
        done = store.get(job.id)
        assert done.status is JobStatus.SUCCEEDED and done.report == {"summary": {"ratio": 2.0}}
        assert done.artifacts == [ART] and done.progress.fraction == 1.0
        assert done.finished_at is not None and done.expires_at is not None
        assert done.expires_at - done.finished_at == timedelta(seconds=3600)

    def test_terminal_states_never_change(self, store: JobStore, make_job: MakeJob) -> None:
        job = store.create(make_job()).job
        store.mark_running(job.id)
        assert store.mark_failed(job.id, {"type": "t", "status": 422})
        assert not store.mark_succeeded(job.id, report={}, artifacts=[])
        assert not store.mark_cancelled(job.id)
        assert not store.mark_running(job.id)
        assert not store.mark_failed(job.id, {"type": "other"})
        store.set_progress(job.id, Progress(stage="late", fraction=0.5))
        final = store.get(job.id)
        assert final.status is JobStatus.FAILED and final.error == {"type": "t", "status": 422}
        assert final.progress.stage != "late"

    def test_cancel_queued_is_immediate(self, store: JobStore, make_job: MakeJob) -> None:
        job = store.create(make_job()).job
        after = store.request_cancel(job.id)
        assert after.status is JobStatus.CANCELLED and after.finished_at is not None
        assert store.is_cancel_requested(job.id)
        assert not store.mark_running(job.id)

    def test_cancel_running_sets_flag(self, store: JobStore, make_job: MakeJob) -> None:
        job = store.create(make_job()).job
        store.mark_running(job.id)
        assert not store.is_cancel_requested(job.id)
        after = store.request_cancel(job.id)
        assert after.status is JobStatus.RUNNING and after.cancel_requested
        assert store.is_cancel_requested(job.id)
        assert store.mark_cancelled(job.id)
        assert store.get(job.id).status is JobStatus.CANCELLED
        assert store.request_cancel(job.id).status is JobStatus.CANCELLED  # terminal: unchanged

    def test_delete_removes_job_and_idempotency_key(self, store: JobStore, make_job: MakeJob) -> None:
        job = store.create(make_job(owner="k1"), idempotency_key="key", fingerprint="fp").job
        store.mark_failed(job.id, {"type": "t"})
        store.delete(job.id)
        with pytest.raises(JobNotFoundError):
            store.get(job.id)
        assert store.idempotency_lookup("key", "k1") is None
        assert store.list("k1").items == []
        assert store.counts_by_status()[JobStatus.FAILED] == 0
        with pytest.raises(JobNotFoundError):
            store.delete(job.id)

    def test_counts_by_status(self, store: JobStore, make_job: MakeJob) -> None:
        ids = [store.create(make_job()).job.id for _ in range(4)]
        store.mark_running(ids[0])
        store.mark_running(ids[1])
        store.mark_succeeded(ids[1], report={}, artifacts=[])
        counts = store.counts_by_status()
        assert set(counts) == set(JobStatus)
        assert counts == {
            JobStatus.QUEUED: 2,
            JobStatus.RUNNING: 1,
            JobStatus.SUCCEEDED: 1,
            JobStatus.FAILED: 0,
            JobStatus.CANCELLED: 0,
        }

    def test_expired_jobs(self, store: JobStore, make_job: MakeJob) -> None:
        done, live = store.create(make_job()).job, store.create(make_job()).job
        store.mark_failed(done.id, {"type": "t"})
        store.mark_running(live.id)
        assert store.expired_jobs() == []
        later = utcnow() + timedelta(seconds=3601)
        assert store.expired_jobs(later) == [done.id]

    def test_attempts_are_atomic_under_contention(self, store: JobStore, make_job: MakeJob) -> None:
        job = store.create(make_job()).job

        def bump() -> None:
            for _ in range(10):
                store.bump_attempts(job.id)

        threads = [threading.Thread(target=bump) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert store.get(job.id).attempts == 40

    def test_api_keys(self, store: JobStore) -> None:
        a = ApiKeyRecord(id="key_a", name="ci", key_hash="h" * 64, webhook_secret="whsec_AAAA")
        b = ApiKeyRecord(id="key_b", key_hash="g" * 64, webhook_secret="whsec_BBBB")
        store.create_api_key(a)
        store.create_api_key(b)
        assert store.get_api_key_by_hash("h" * 64) == a
        assert store.get_api_key("key_b") == b
        assert store.get_api_key_by_hash("nope") is None and store.get_api_key("nope") is None
        assert [k.id for k in store.list_api_keys()] == ["key_a", "key_b"]
        with pytest.raises(Exception):  # noqa: B017 - sqlite3.IntegrityError / ValueError
            store.create_api_key(ApiKeyRecord(id="key_c", key_hash="h" * 64, webhook_secret="whsec_C"))

    def test_worker_heartbeats(self, store: JobStore) -> None:
        now = utcnow()
        fresh = WorkerHeartbeat(
            worker_id="w1", hostname="h", pid=1, queues=["cpu"], device="cpu", started_at=now
        )
        old = fresh.model_copy(update={"worker_id": "w0", "last_seen": now - timedelta(seconds=120)})
        store.heartbeat(fresh)
        store.heartbeat(old)
        assert [w.worker_id for w in store.list_workers(max_age_s=60)] == ["w1"]
        assert {w.worker_id for w in store.list_workers(max_age_s=600)} == {"w0", "w1"}

    # -- leases (issue 13: no job is ever stuck after a crash) -----------------------------------

    def test_claim_takes_the_lease_and_counts_the_attempt(self, store: JobStore, make_job: MakeJob) -> None:
        job = store.create(make_job()).job
        before = utcnow()
        assert store.claim(job.id, owner="msg1", token="t1", max_attempts=3) is Claim.RUN
        got = store.get(job.id)
        assert got.status is JobStatus.RUNNING and got.attempts == 1 and got.started_at is not None
        assert (got.lease_owner, got.lease_token) == ("msg1", "t1")
        assert got.lease_expires_at is not None
        assert got.lease_expires_at - before >= timedelta(seconds=store.lease_s)  # type: ignore[attr-defined]
        # the same execution retrying its write: no second attempt counted
        assert store.claim(job.id, owner="msg1", token="t1", max_attempts=3) is Claim.RUN
        assert store.get(job.id).attempts == 1

    def test_live_lease_of_another_message_is_busy(self, store: JobStore, make_job: MakeJob) -> None:
        job = store.create(make_job()).job
        assert store.claim(job.id, owner="msg1", token="t1", max_attempts=3) is Claim.RUN
        assert store.claim(job.id, owner="msg2", token="t2", max_attempts=3) is Claim.BUSY
        assert store.get(job.id).attempts == 1 and store.get(job.id).lease_token == "t1"
        # a redelivery of the same message (its pool child died) takes over at once
        assert store.claim(job.id, owner="msg1", token="t3", max_attempts=3) is Claim.RUN
        got = store.get(job.id)
        assert got.attempts == 2 and got.lease_token == "t3"
        assert not store.renew_lease(job.id, "t1") and store.renew_lease(job.id, "t3")

    def test_concurrent_claims_run_the_job_once(self, store: JobStore, make_job: MakeJob) -> None:
        job = store.create(make_job()).job
        outcomes: list[Claim] = []
        barrier = threading.Barrier(5)

        def claim(i: int) -> None:
            barrier.wait()
            outcomes.append(store.claim(job.id, owner=f"m{i}", token=f"t{i}", max_attempts=9))

        threads = [threading.Thread(target=claim, args=(i,)) for i in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcomes) == sorted([Claim.RUN] + [Claim.BUSY] * 4)
        assert store.get(job.id).attempts == 1

    def test_claim_terminal_cancelled_and_too_many(self, store: JobStore, make_job: MakeJob) -> None:
        done = store.create(make_job()).job
        store.mark_failed(done.id, {"type": "t"})
        assert store.claim(done.id, owner="m", token="t", max_attempts=3) is Claim.TERMINAL
        flagged = store.create(make_job()).job
        store.mark_running(flagged.id)
        store.request_cancel(flagged.id)
        assert store.claim(flagged.id, owner="m", token="t", max_attempts=3) is Claim.CANCELLED
        assert store.get(flagged.id).status is JobStatus.CANCELLED
        worn = store.create(make_job()).job
        for i in range(2):
            store.reap(worn.id, max_attempts=9)  # no-op: not running
            assert store.claim(worn.id, owner=f"m{i}", token=f"t{i}", max_attempts=2) is Claim.RUN
            assert store.reap(worn.id, max_attempts=9, now=utcnow() + timedelta(hours=1)) is JobStatus.QUEUED
        assert store.claim(worn.id, owner="m9", token="t9", max_attempts=2) is Claim.TOO_MANY
        failed = store.get(worn.id)
        assert failed.status is JobStatus.FAILED and failed.attempts == 3 and failed.lease_token is None
        assert failed.error is not None and failed.error["type"].endswith("/too-many-attempts")

    def test_expired_leases_and_reap_requeue(self, store: JobStore, make_job: MakeJob) -> None:
        job, other = store.create(make_job()).job, store.create(make_job()).job
        store.claim(job.id, owner="m1", token="t1", max_attempts=3)
        assert store.expired_leases() == []
        assert store.reap(job.id, max_attempts=3) is None  # live lease: untouched
        later = utcnow() + timedelta(seconds=store.lease_s + 1)  # type: ignore[attr-defined]
        assert store.expired_leases(later) == [job.id]
        assert store.reap(other.id, max_attempts=3, now=later) is None  # queued: untouched
        assert store.reap(job.id, max_attempts=3, now=later) is JobStatus.QUEUED
        back = store.get(job.id)
        assert back.status is JobStatus.QUEUED and back.lease_token is None and back.attempts == 1
        assert back.progress.stage == "queued"
        assert store.expired_leases(later) == []
        assert not store.renew_lease(job.id, "t1")  # the old execution learns it lost the job
        assert store.claim(job.id, owner="m2", token="t2", max_attempts=3) is Claim.RUN
        assert store.get(job.id).attempts == 2

    def test_reap_fails_when_attempts_are_used_up_and_honours_cancel(
        self, store: JobStore, make_job: MakeJob
    ) -> None:
        later = utcnow() + timedelta(hours=1)
        worn, flagged = store.create(make_job()).job, store.create(make_job()).job
        store.claim(worn.id, owner="m", token="t", max_attempts=1)
        assert store.reap(worn.id, max_attempts=1, now=later) is JobStatus.FAILED
        failed = store.get(worn.id)
        assert failed.error is not None and failed.error["type"].endswith("/too-many-attempts")
        assert failed.expires_at is not None and failed.lease_expires_at is None
        store.claim(flagged.id, owner="m", token="t", max_attempts=3)
        store.request_cancel(flagged.id)  # live lease: only flagged
        assert store.get(flagged.id).status is JobStatus.RUNNING
        assert store.reap(flagged.id, max_attempts=3, now=later) is JobStatus.CANCELLED

    def test_stale_execution_cannot_overwrite_the_live_one(self, store: JobStore, make_job: MakeJob) -> None:
        job = store.create(make_job()).job
        store.claim(job.id, owner="m1", token="old", max_attempts=3)
        store.reap(job.id, max_attempts=3, now=utcnow() + timedelta(hours=1))
        store.claim(job.id, owner="m2", token="new", max_attempts=3)
        assert not store.mark_succeeded(job.id, report={"stale": True}, artifacts=[], lease_token="old")
        assert not store.mark_failed(job.id, {"type": "stale"}, lease_token="old")
        assert not store.mark_cancelled(job.id, lease_token="old")
        assert store.get(job.id).status is JobStatus.RUNNING
        assert store.mark_succeeded(job.id, report={"fresh": True}, artifacts=[ART], lease_token="new")
        done = store.get(job.id)
        assert done.report == {"fresh": True} and done.lease_token is None and done.lease_expires_at is None
        assert not store.renew_lease(job.id, "new")

    def test_stale_execution_may_finish_a_job_nobody_holds(self, store: JobStore, make_job: MakeJob) -> None:
        """Reaped (queued, no lease) but the old worker finishes first: its result stands, and
        the requeued message then finds the job terminal."""
        job = store.create(make_job()).job
        store.claim(job.id, owner="m1", token="old", max_attempts=3)
        store.reap(job.id, max_attempts=3, now=utcnow() + timedelta(hours=1))
        assert store.mark_succeeded(job.id, report={}, artifacts=[ART], lease_token="old")
        assert store.claim(job.id, owner="m2", token="new", max_attempts=3) is Claim.TERMINAL

    def test_cancel_a_job_whose_worker_is_gone_is_immediate(self, store: JobStore, make_job: MakeJob) -> None:
        job = store.create(make_job()).job
        store.lease_s = 0.05  # type: ignore[attr-defined]
        store.claim(job.id, owner="m", token="t", max_attempts=3)
        time.sleep(0.1)  # the worker died: nobody renewed the lease
        after = store.request_cancel(job.id)
        assert after.status is JobStatus.CANCELLED and after.finished_at is not None
        assert after.lease_token is None
