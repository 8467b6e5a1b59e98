"""``LeaseKeeper``: the heartbeat that keeps a running job's lease alive while its worker lives.

``run_job`` claims a job with a lease of ``lease_s = 2 × lease_heartbeat_s`` and runs it inside a
``LeaseKeeper``, a daemon thread in the *same process as the job* that renews the lease every
``lease_heartbeat_s``. If that process dies (SIGKILL, OOM, the machine), renewals stop and the
lease runs out; the reaper (``workers/reaper.py``) then takes the job back. If a renewal finds
the lease gone (the job was reaped while this worker was cut off from the store), ``lost`` turns
True and the job stops at its next cancellation point without writing a result.
Ref: Gray & Cheriton, "Leases: an efficient fault-tolerant mechanism for distributed file cache
consistency", SOSP 1989; ``workers/jobs.py`` (the lease fields).
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType

from netshrink.workers.jobs import JobStore

log = logging.getLogger(__name__)


class LeaseKeeper:
    """Renew ``token``'s lease on ``job_id`` every ``interval_s`` until the ``with`` block ends."""

    def __init__(self, store: JobStore, job_id: str, token: str, interval_s: float) -> None:
        self.store, self.job_id, self.token, self.interval_s = store, job_id, token, interval_s
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{job_id}", daemon=True)

    @property
    def lost(self) -> bool:
        """True once a renewal found that this execution no longer holds the lease."""
        return self._lost.is_set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                if not self.store.renew_lease(self.job_id, self.token):
                    if not self._stop.is_set():
                        log.warning("job %s: lease lost (reaped or re-claimed); stopping", self.job_id)
                        self._lost.set()
                    return
            except Exception:  # a store outage: keep trying, the lease still has one heartbeat left
                log.warning("job %s: lease renewal failed; retrying", self.job_id, exc_info=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)  # a renewal stuck in a store outage must not hold up the job


__all__ = ["LeaseKeeper"]
