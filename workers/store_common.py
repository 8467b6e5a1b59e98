"""The job-state methods both stores share.

Each is one atomic read-modify-write through the store's own ``_mutate`` (a Redis WATCH/MULTI
transaction, or a SQLite ``BEGIN IMMEDIATE``) applying a pure function from ``workers.transitions``,
so the SQLite and Redis stores cannot drift apart.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from pydantic import TypeAdapter

from netshrink.workers import problems, transitions
from netshrink.workers.jobs import ArtifactInfo, Claim, Job, JobNotFoundError, JobStatus, Progress, utcnow

T = TypeVar("T")

DEFAULT_LEASE_S = 20.0  # 2 × the default lease_heartbeat_s (workers/settings.py)

# Both stores keep a job's report apart from the job (a SQLite column, a Redis key): a status read
# parses ~2 KB instead of ~20 KB (issue 13 §8). A job stored before that split still holds its
# report inside its JSON, which reads back as before and moves on the job's next write.
REPORT_JSON = TypeAdapter(dict[str, Any])


def job_json(job: Job) -> str:
    """The stored JSON of ``job`` without its report (stored apart, ``report_json``)."""
    return job.model_dump_json(exclude={"report"})


def report_json(job: Job) -> str | None:
    return None if job.report is None else REPORT_JSON.dump_json(job.report).decode()


class TransitionMethods:
    retention_s: int
    lease_s: float = DEFAULT_LEASE_S

    def _mutate(self, job_id: str, fn: Callable[[Job], T]) -> T:  # pragma: no cover - abstract
        raise NotImplementedError

    def get(self, job_id: str, *, report: bool = True) -> Job:  # pragma: no cover - abstract
        raise NotImplementedError

    def _jobs_in(self, status: JobStatus) -> builtins.list[Job]:  # pragma: no cover - abstract
        """Every job in ``status`` (an indexed read: the status set / column)."""
        raise NotImplementedError

    def mark_running(self, job_id: str) -> bool:
        return self._mutate(job_id, lambda job: transitions.start(job, self.lease_s))

    def claim(self, job_id: str, *, owner: str, token: str, max_attempts: int) -> Claim:
        def apply(job: Job) -> Claim:
            problem = problems.too_many_attempts(job.attempts + 1, max_attempts)
            return transitions.claim(
                job,
                owner=owner,
                token=token,
                lease_s=self.lease_s,
                max_attempts=max_attempts,
                problem=problem,
                retention_s=self.retention_s,
            )

        return self._mutate(job_id, apply)

    def renew_lease(self, job_id: str, token: str) -> bool:
        return self._mutate(job_id, lambda job: transitions.renew(job, token, self.lease_s))

    def expired_leases(self, now: datetime | None = None) -> builtins.list[str]:
        when = now or utcnow()
        return [job.id for job in self._jobs_in(JobStatus.RUNNING) if not transitions.lease_live(job, when)]

    def reap(self, job_id: str, *, max_attempts: int, now: datetime | None = None) -> JobStatus | None:
        when = now or utcnow()

        def apply(job: Job) -> JobStatus | None:
            problem = problems.too_many_attempts(job.attempts, max_attempts)
            return transitions.reap(
                job, now=when, max_attempts=max_attempts, problem=problem, retention_s=self.retention_s
            )

        return self._mutate(job_id, apply)

    def mark_enqueued(self, job_id: str, *, stored: Job | None = None) -> None:
        self._mutate(job_id, transitions.mark_enqueued)

    def mark_queued_unsent(self) -> builtins.list[str]:
        marked = []
        for job in self._jobs_in(JobStatus.QUEUED):
            try:
                if self._mutate(job.id, transitions.mark_unsent):
                    marked.append(job.id)
            except JobNotFoundError:  # deleted meanwhile
                continue
        return marked

    def unenqueued(self, older_than: datetime) -> builtins.list[str]:
        stranded = [
            j for j in self._jobs_in(JobStatus.QUEUED) if not j.enqueued and j.created_at < older_than
        ]
        return [j.id for j in sorted(stranded, key=lambda j: (j.created_at, j.id))]

    def bump_attempts(self, job_id: str) -> int:
        return self._mutate(job_id, transitions.bump_attempts)

    def set_progress(self, job_id: str, progress: Progress) -> None:
        self._mutate(job_id, lambda job: transitions.set_progress(job, progress))

    def mark_succeeded(
        self,
        job_id: str,
        *,
        report: dict[str, Any],
        artifacts: builtins.list[ArtifactInfo],
        lease_token: str | None = None,
    ) -> bool:
        return self._mutate(
            job_id, lambda job: transitions.succeed(job, report, artifacts, self.retention_s, lease_token)
        )

    def mark_failed(self, job_id: str, problem: dict[str, Any], *, lease_token: str | None = None) -> bool:
        return self._mutate(job_id, lambda job: transitions.fail(job, problem, self.retention_s, lease_token))

    def request_cancel(self, job_id: str) -> Job:
        def apply(job: Job) -> Job:
            transitions.request_cancel(job, self.retention_s)
            return job

        return self._mutate(job_id, apply)

    def is_cancel_requested(self, job_id: str) -> bool:
        job = self.get(job_id)
        return job.cancel_requested or job.status is JobStatus.CANCELLED

    def mark_cancelled(self, job_id: str, *, lease_token: str | None = None) -> bool:
        return self._mutate(job_id, lambda job: transitions.cancel(job, self.retention_s, lease_token))
