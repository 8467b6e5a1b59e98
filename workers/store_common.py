"""The job-state methods both stores share.

Each is one atomic read-modify-write through the store's own ``_mutate`` (a Redis WATCH/MULTI
transaction, or a SQLite ``BEGIN IMMEDIATE``) applying a pure function from ``workers.transitions``,
so the SQLite and Redis stores cannot drift apart.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from typing import Any, TypeVar

from netshrink.workers import transitions
from netshrink.workers.jobs import ArtifactInfo, Job, JobStatus, Progress

T = TypeVar("T")


class TransitionMethods:
    retention_s: int

    def _mutate(self, job_id: str, fn: Callable[[Job], T]) -> T:  # pragma: no cover - abstract
        raise NotImplementedError

    def get(self, job_id: str) -> Job:  # pragma: no cover - abstract
        raise NotImplementedError

    def mark_running(self, job_id: str) -> bool:
        return self._mutate(job_id, transitions.start)

    def bump_attempts(self, job_id: str) -> int:
        return self._mutate(job_id, transitions.bump_attempts)

    def set_progress(self, job_id: str, progress: Progress) -> None:
        self._mutate(job_id, lambda job: transitions.set_progress(job, progress))

    def mark_succeeded(
        self, job_id: str, *, report: dict[str, Any], artifacts: builtins.list[ArtifactInfo]
    ) -> bool:
        return self._mutate(job_id, lambda job: transitions.succeed(job, report, artifacts, self.retention_s))

    def mark_failed(self, job_id: str, problem: dict[str, Any]) -> bool:
        return self._mutate(job_id, lambda job: transitions.fail(job, problem, self.retention_s))

    def request_cancel(self, job_id: str) -> Job:
        def apply(job: Job) -> Job:
            transitions.request_cancel(job, self.retention_s)
            return job

        return self._mutate(job_id, apply)

    def is_cancel_requested(self, job_id: str) -> bool:
        job = self.get(job_id)
        return job.cancel_requested or job.status is JobStatus.CANCELLED

    def mark_cancelled(self, job_id: str) -> bool:
        return self._mutate(job_id, lambda job: transitions.cancel(job, self.retention_s))
