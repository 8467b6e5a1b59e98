"""The outbox part of the JobStore contract (``enqueued``, ``mark_enqueued``, ``unenqueued``,
``mark_queued_unsent``), mixed
into ``StoreContract`` so both stores are held to it (split off to keep the contract file small)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from netshrink.workers.jobs import Job, JobStatus, JobStore, utcnow

MakeJob = Callable[..., Job]


class DispatchContract:
    def test_unenqueued_lists_old_queued_jobs_whose_message_was_never_recorded(
        self, store: JobStore, make_job: MakeJob
    ) -> None:
        t0 = utcnow() - timedelta(minutes=5)
        old = [
            store.create(make_job(enqueued=False, created_at=t0 + timedelta(seconds=i))).job for i in (1, 0)
        ]
        young = store.create(make_job(enqueued=False)).job
        sent = store.create(make_job(created_at=t0)).job  # enqueued=True: the API recorded its message
        started = store.create(make_job(enqueued=False, created_at=t0)).job
        store.mark_running(started.id)
        cutoff = utcnow() - timedelta(minutes=1)
        assert store.unenqueued(cutoff) == [old[1].id, old[0].id]  # oldest first
        store.mark_enqueued(old[1].id)
        assert store.get(old[1].id).enqueued and store.unenqueued(cutoff) == [old[0].id]
        assert young.id in store.unenqueued(utcnow() + timedelta(seconds=1)) and sent.enqueued

    def test_mark_enqueued_with_the_stored_job_keeps_a_change_made_since(
        self, store: JobStore, make_job: MakeJob
    ) -> None:
        """``stored`` lets a store skip its read (Redis: one compare-and-set), never lose a write: a
        job a worker took between the API's create and its mark keeps ``running`` and gets the flag."""
        untouched = store.create(make_job(enqueued=False)).job
        store.mark_enqueued(untouched.id, stored=untouched)
        assert store.get(untouched.id).enqueued
        taken = store.create(make_job(enqueued=False)).job
        assert store.mark_running(taken.id)
        store.mark_enqueued(taken.id, stored=taken)
        after = store.get(taken.id)
        assert after.enqueued and after.status is JobStatus.RUNNING

    def test_mark_queued_unsent_clears_the_flag_of_queued_jobs_only(
        self, store: JobStore, make_job: MakeJob
    ) -> None:
        queued = store.create(make_job()).job
        running = store.create(make_job()).job
        store.mark_running(running.id)
        done = store.create(make_job()).job
        store.mark_failed(done.id, {"type": "about:blank", "title": "x", "status": 500})
        assert store.mark_queued_unsent() == [queued.id]
        assert not store.get(queued.id).enqueued
        assert store.get(running.id).enqueued and store.get(done.id).enqueued
        assert queued.id in store.unenqueued(utcnow() + timedelta(seconds=1))
