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
are enqueued again (a duplicate of a message a sibling process still holds is dropped by
``claim``). When this process holds the data directory's lock exclusively (no other embedded
process can be running jobs from it), every ``running`` job is taken back at once; a sibling of
``serve --workers N`` holds it shared, and then only expired leases are taken back. An embedded
process that stops hands its queued jobs back (``hand_back_queued``).
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
import time
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
    """A ``flock`` on ``data_dir/serve.lock``, held by every embedded process that runs jobs.

    A process takes it exclusively for its start-up recovery when it can, then holds it shared while
    it runs (``share``). Getting it exclusively therefore proves that no other embedded process is
    running jobs from this data directory: not a sibling of ``serve --workers N``, not an orphan
    whose supervisor died. The kernel drops a dead process's lock, even after SIGKILL.
    """

    def __init__(self, data_dir: Path, *, wait_s: float = 60.0) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / "serve.lock"
        self.wait_s = wait_s
        self._fh: IO[str] | None = None

    def acquire(self) -> bool:
        """True when this process now holds the lock exclusively. Else it waits (up to ``wait_s``,
        while another process recovers) to hold it shared, and returns False."""
        fh = self.path.open("a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._fh = fh if _flock_within(fh, fcntl.LOCK_SH, self.wait_s) else None
            if self._fh is None:
                fh.close()
                log.warning(
                    "%s stayed locked exclusively for %.0f s; running without it", self.path, self.wait_s
                )
            return False
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._fh = fh
        return True

    def share(self) -> None:
        """Exclusive -> shared: start-up recovery is over; other embedded processes may start."""
        if self._fh is not None:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_SH)

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


def _flock_within(fh: IO[str], operation: int, wait_s: float) -> bool:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fh.fileno(), operation | fcntl.LOCK_NB)
            return True
        except OSError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


def hand_back_queued(store: JobStore) -> list[str]:
    """Shutdown of an embedded process, after its worker stopped: the messages still in its memory://
    broker die with it, so every queued job is marked unsent (``JobStore.mark_queued_unsent``). The
    reaper of any other process of ``serve --workers N`` sends them again within
    ``dispatch_grace_s + reaper_interval_s``; with none left, the next start enqueues every queued
    job anyway. A job that still had a message elsewhere gets a second one, which ``claim`` drops."""
    try:
        marked = store.mark_queued_unsent()
    except Exception:  # the store is unreachable: the next start's recovery still enqueues them
        log.exception("shutdown: could not mark the queued jobs unsent")
        return []
    if marked:
        log.info("shutdown: %d queued jobs handed back to the reaper", len(marked))
    return marked


__all__ = [
    "DataDirLock",
    "Enqueue",
    "Notify",
    "ReapResult",
    "dispatch_stranded",
    "hand_back_queued",
    "queued_jobs",
    "reap_orphans",
    "recover_embedded",
]
