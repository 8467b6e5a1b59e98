"""Retention and worker liveness: delete expired jobs and their files; heartbeat the job store.

``cleanup_expired`` is a plain function (tests call it). ``Housekeeper`` is a daemon thread
that every worker process runs: a heartbeat every few seconds, the reaper
(``workers/reaper.reap_orphans`` and ``dispatch_stranded``) every ``reaper_interval_s`` when it is
given an ``enqueue``,
and ``cleanup_expired`` on start and then every ``retention_interval_s``. Every worker running
it is harmless (deletes and reaps are atomic and idempotent), so no Celery beat is needed.
Ref: docs/api.md "Operations" (``GET /v1/workers``),
``expires_at``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from datetime import datetime

from netshrink.workers.artifacts import ArtifactStore
from netshrink.workers.jobs import JobNotFoundError, JobStore, WorkerHeartbeat, utcnow
from netshrink.workers.reaper import Enqueue, Notify, dispatch_stranded, reap_orphans
from netshrink.workers.settings import WorkerSettings

log = logging.getLogger(__name__)


def cleanup_expired(
    store: JobStore, artifacts: ArtifactStore, now: datetime | None = None, *, orphans: bool = True
) -> int:
    """Delete every terminal job whose ``expires_at`` has passed, files first; return how many.

    With ``orphans``, also remove job directories that have no job record left (a crash
    between the two deletes, or an upload whose job was never created).
    """
    removed, seen = 0, set()
    while batch := [job_id for job_id in store.expired_jobs(now) if job_id not in seen]:
        for job_id in batch:
            seen.add(job_id)
            artifacts.delete(job_id)
            try:
                store.delete(job_id)
            except JobNotFoundError:
                continue
            removed += 1
    if orphans:
        for job_id in artifacts.job_ids():
            try:
                store.get(job_id)
            except JobNotFoundError:
                if _older_than(artifacts.job_dir(job_id).stat().st_mtime, 3600.0):
                    artifacts.delete(job_id)
    return removed


def _older_than(mtime: float, age_s: float) -> bool:
    return time.time() - mtime > age_s


class Housekeeper(threading.Thread):
    """Heartbeat, reaper and periodic retention for one worker process (a daemon thread)."""

    def __init__(
        self,
        store: JobStore,
        artifacts: ArtifactStore,
        settings: WorkerSettings,
        *,
        queues: list[str],
        heartbeat_interval_s: float = 10.0,
        enqueue: Enqueue | None = None,
        notify: Notify | None = None,
    ) -> None:
        super().__init__(name="netshrink-housekeeper", daemon=True)
        self.store, self.artifacts, self.settings = store, artifacts, settings
        self.heartbeat_interval_s = heartbeat_interval_s
        self.enqueue, self.notify = enqueue, notify
        self.record = WorkerHeartbeat(
            worker_id=f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}",
            hostname=socket.gethostname(),
            pid=os.getpid(),
            queues=queues,
            device=settings.device,
            started_at=utcnow(),
        )
        self._stop_event = threading.Event()

    def run(self) -> None:
        next_beat = next_reap = next_cleanup = 0.0
        tick = min(self.heartbeat_interval_s, self.settings.reaper_interval_s)
        while not self._stop_event.is_set():
            now = time.monotonic()
            try:
                if now >= next_beat:
                    next_beat = now + self.heartbeat_interval_s
                    self.record.last_seen = utcnow()
                    self.store.heartbeat(self.record)
                if self.enqueue is not None and now >= next_reap:
                    next_reap = now + self.settings.reaper_interval_s
                    reap_orphans(
                        self.store, self.enqueue, max_attempts=self.settings.max_attempts, notify=self.notify
                    )
                    dispatch_stranded(self.store, self.enqueue, grace_s=self.settings.dispatch_grace_s)
                if now >= next_cleanup:
                    next_cleanup = now + self.settings.retention_interval_s
                    n = cleanup_expired(self.store, self.artifacts)
                    if n:
                        log.info("retention: removed %d expired jobs", n)
            except Exception:  # the store may be briefly down; never kill the thread
                log.exception("housekeeping failed; retrying")
            self._stop_event.wait(tick)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the thread, then remove this worker's heartbeat record: ``GET /v1/workers`` stops
        counting a cleanly stopped worker at once, not ``heartbeat_ttl_s`` later (until 2026-12-05
        a SIGTERMed worker stayed "alive" for up to 60 s). A killed worker's record still just ages
        out. Best effort: with the store down the record ages out too."""
        self._stop_event.set()
        if self.ident is None:  # never started: no record was written
            return
        self.join(timeout_s)
        if self.is_alive():  # stuck in a store call: it may still write a heartbeat after a delete
            return
        try:
            self.store.forget_worker(self.record.worker_id)
        except Exception:
            log.warning("could not remove the heartbeat of %s; it ages out", self.record.worker_id)


__all__ = ["Housekeeper", "cleanup_expired"]
