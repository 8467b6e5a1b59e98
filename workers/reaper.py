"""The reaper: take back jobs whose worker is gone, so no job is ever stuck.

``reap_orphans`` finds running jobs whose lease expired (``JobStore.expired_leases``) and, per
job, enqueues its id again and then atomically moves it back to ``queued`` (``JobStore.reap``),
or fails it when its attempts are used up. Enqueueing *first* means a crash between the two steps
leaves a message for a job that still looks running, which the next worker claims over the
expired lease, never a queued job without a message. A duplicate message (two reapers racing) is
harmless: ``claim`` answers BUSY or TERMINAL and the message is dropped.

Every worker runs it periodically (``workers/retention.Housekeeper``), and so does the embedded
process, which also runs ``recover_embedded`` at start-up, before its worker thread starts: the
in-memory broker lost every message with the previous process, so the ``queued`` jobs in SQLite
are enqueued again, and, since this process holds the data directory's lock (no other embedded
process can be running jobs from it), every ``running`` job is taken back at once.
Bound: a crashed job is queued again within ``lease_s + reaper_interval_s`` =
``2 × lease_heartbeat_s + reaper_interval_s`` of the crash (README "Crash recovery").

``dispatch_stranded`` closes the API's crash gap in Redis mode: the API stores a job
(``enqueued=False``), sends its message, then records ``enqueued=True``. (The embedded API stores
it with ``enqueued=True`` in one write: its memory:// message dies with the process anyway, and
``recover_embedded`` enqueues every queued job at the next start.) A job still queued and not enqueued
``dispatch_grace_s`` after its creation lost its API process between the two steps; the reaper
sends the message and records it. Bound: such a job is enqueued within
``dispatch_grace_s + reaper_interval_s`` of its creation. Sending before recording means a crash of
the reaper in between only leads to a second message, which ``claim`` makes harmless (BUSY or
TERMINAL): the job store, not the queue, says whether a job runs.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO

from netshrink.workers.jobs import Job, JobNotFoundError, JobStatus, JobStore, utcnow

log = logging.getLogger(__name__)

Enqueue = Callable[[Job], None]
Notify = Callable[[str, Job], None]  # webhook events: ``workers/tasks.webhook_notifier``
_EVENTS = {JobStatus.FAILED: "job.failed", JobStatus.CANCELLED: "job.cancelled"}
_FOREVER = timedelta(days=36500)


@dataclass
class ReapResult:
    """Job ids by what the reaper did with them."""

    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)


def reap_orphans(
    store: JobStore,
    enqueue: Enqueue,
    *,
    max_attempts: int,
    now: datetime | None = None,
    notify: Notify | None = None,
) -> ReapResult:
    """Requeue (or fail) every running job whose lease expired by ``now``; a job the reaper
    ends (failed or cancelled) gets its ``job.failed``/``job.cancelled`` webhook via ``notify``."""
    result = ReapResult()
    for job_id in store.expired_leases(now):
        try:
            job = store.get(job_id)
        except JobNotFoundError:
            continue
        if job.attempts < max_attempts and not job.cancel_requested:
            enqueue(job)
        status = store.reap(job_id, max_attempts=max_attempts, now=now)
        if status is JobStatus.QUEUED:
            result.requeued.append(job_id)
        elif status is JobStatus.FAILED:
            result.failed.append(job_id)
        elif status is JobStatus.CANCELLED:
            result.cancelled.append(job_id)
        if status in _EVENTS and notify is not None:
            _notify(store, job_id, _EVENTS[status], notify)
    if result.requeued or result.failed or result.cancelled:
        log.warning(
            "reaper: lease expired; requeued %s, failed %s, cancelled %s",
            result.requeued,
            result.failed,
            result.cancelled,
        )
    return result


def dispatch_stranded(
    store: JobStore, enqueue: Enqueue, *, grace_s: float, now: datetime | None = None
) -> list[str]:
    """Enqueue every queued job created over ``grace_s`` ago whose message was never recorded as
    sent (``JobStore.unenqueued``), then record it; returns their ids, oldest first."""
    sent = []
    for job_id in store.unenqueued((now or utcnow()) - timedelta(seconds=grace_s)):
        try:
            job = store.get(job_id)
        except JobNotFoundError:
            continue
        if job.status is JobStatus.QUEUED and not job.enqueued:
            enqueue(job)
            store.mark_enqueued(job_id)
            sent.append(job_id)
    if sent:
        log.warning("reaper: queued jobs without a message (API crash?); enqueued %s", sent)
    return sent


def _notify(store: JobStore, job_id: str, event: str, notify: Notify) -> None:
    try:
        job = store.get(job_id)
        if job.callback is not None and event in job.callback.events:
            notify(event, job)
    except Exception:  # a webhook problem never stops the reaper
        log.exception("reaper: could not emit %s for job %s", event, job_id)


def queued_jobs(store: JobStore) -> list[Job]:
    """Every queued job of every owner, oldest first."""
    jobs: list[Job] = []
    cursor: str | None = None
    while True:
        page = store.list(None, status=JobStatus.QUEUED, limit=500, cursor=cursor)
        jobs.extend(page.items)
        if page.next_cursor is None:
            return jobs[::-1]
        cursor = page.next_cursor


def recover_embedded(
    store: JobStore, enqueue: Enqueue, *, max_attempts: int, exclusive: bool, notify: Notify | None = None
) -> ReapResult:
    """Start-up of the embedded process, before its worker starts: take back the running jobs of
    the previous process (all of them when ``exclusive``, i.e. this process holds the data
    directory's lock; else only those whose lease expired), then enqueue every queued job."""
    waiting = queued_jobs(store)
    now = utcnow() + _FOREVER if exclusive else None
    result = reap_orphans(store, enqueue, max_attempts=max_attempts, now=now, notify=notify)
    for job in waiting:
        enqueue(job)
        if not job.enqueued:
            store.mark_enqueued(job.id)
    if waiting:
        log.warning("start-up: re-enqueued %d queued jobs", len(waiting))
    return result


class DataDirLock:
    """An exclusive ``flock`` on ``data_dir/serve.lock``, held while an embedded process runs.

    The kernel drops it when the process dies (even by SIGKILL), so holding it proves that no other
    embedded process is running jobs from this data directory.
    """

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / "serve.lock"
        self._fh: IO[str] | None = None

    def acquire(self) -> bool:
        """True when this process now holds the lock; False when another one does."""
        fh = self.path.open("a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            return False
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._fh = fh
        return True

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


__all__ = [
    "DataDirLock",
    "Enqueue",
    "Notify",
    "ReapResult",
    "dispatch_stranded",
    "queued_jobs",
    "reap_orphans",
    "recover_embedded",
]
