"""Pure job-state transitions shared by every ``JobStore`` implementation.

Each function mutates a ``Job`` in place and returns what the store method returns. The stores
only provide atomicity (read → apply → write in one transaction), so the Redis and SQLite stores
cannot drift apart in semantics. Ref: the lifecycle diagram and the lease paragraph in
``workers/jobs.py``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from netshrink.workers.jobs import ArtifactInfo, Claim, Job, JobStatus, Progress, utcnow


def _finish(job: Job, status: JobStatus, retention_s: int) -> None:
    now = utcnow()
    job.status = status
    job.finished_at = now
    job.expires_at = now + timedelta(seconds=retention_s)
    _release(job)


def _release(job: Job) -> None:
    job.lease_owner = job.lease_token = job.lease_expires_at = None


def lease_live(job: Job, now: datetime | None = None) -> bool:
    """True while the job's lease has not expired (a job without a lease has none live)."""
    return job.lease_expires_at is not None and job.lease_expires_at > (now or utcnow())


def _fenced(job: Job, token: str | None) -> bool:
    """A write by ``token`` is refused while a *different* execution holds a live lease."""
    return token is not None and job.lease_token not in (None, token) and lease_live(job)


def start(job: Job, lease_s: float) -> bool:
    """queued/running → running with an anonymous lease; first start stamps ``started_at``."""
    if job.status.is_terminal:
        return False
    job.status = JobStatus.RUNNING
    if job.started_at is None:
        job.started_at = utcnow()
    job.lease_owner = job.lease_token = None
    job.lease_expires_at = utcnow() + timedelta(seconds=lease_s)
    return True


def mark_enqueued(job: Job) -> None:
    """The job's broker message was sent (the outbox flag; see "Dispatch" in ``workers/jobs.py``)."""
    job.enqueued = True


def mark_unsent(job: Job) -> bool:
    """A queued job's message may be gone (its broker is going away): clear the outbox flag, so that
    a reaper sends it again (``reaper.dispatch_stranded``). False when the job is not queued."""
    if job.status is not JobStatus.QUEUED:
        return False
    job.enqueued = False
    return True


def claim(
    job: Job,
    *,
    owner: str,
    token: str,
    lease_s: float,
    max_attempts: int,
    problem: dict[str, Any],
    retention_s: int,
) -> Claim:
    """The atomic start of one delivery (``JobStore.claim``); ``problem`` is the too-many-attempts body."""
    now = utcnow()
    if job.status.is_terminal:
        return Claim.TERMINAL
    if job.status is JobStatus.RUNNING and job.lease_token == token:
        job.lease_expires_at = now + timedelta(seconds=lease_s)  # our own retried write
        return Claim.RUN
    if job.status is JobStatus.RUNNING and lease_live(job, now) and job.lease_owner not in (None, owner):
        return Claim.BUSY
    job.attempts += 1
    if job.attempts > max_attempts:
        fail(job, problem, retention_s)
        return Claim.TOO_MANY
    if job.cancel_requested:
        cancel(job, retention_s)
        return Claim.CANCELLED
    job.status = JobStatus.RUNNING
    if job.started_at is None:
        job.started_at = now
    job.lease_owner, job.lease_token = owner, token
    job.lease_expires_at = now + timedelta(seconds=lease_s)
    return Claim.RUN


def renew(job: Job, token: str, lease_s: float) -> bool:
    """Extend the lease ``token`` holds; False once the job was reaped, finished or re-claimed."""
    if job.status is not JobStatus.RUNNING or job.lease_token != token:
        return False
    job.lease_expires_at = utcnow() + timedelta(seconds=lease_s)
    return True


def reap(
    job: Job, *, now: datetime, max_attempts: int, problem: dict[str, Any], retention_s: int
) -> JobStatus | None:
    """Take back a running job whose lease expired by ``now`` (its worker is gone)."""
    if job.status is not JobStatus.RUNNING or lease_live(job, now):
        return None
    if job.cancel_requested:
        cancel(job, retention_s)
    elif job.attempts >= max_attempts:
        fail(job, problem, retention_s)
    else:
        job.status = JobStatus.QUEUED
        job.progress = Progress(stage="queued")
        _release(job)
    return job.status


def bump_attempts(job: Job) -> int:
    job.attempts += 1
    return job.attempts


def set_progress(job: Job, progress: Progress) -> None:
    if not job.status.is_terminal:
        job.progress = progress


def succeed(
    job: Job,
    report: dict[str, Any],
    artifacts: list[ArtifactInfo],
    retention_s: int,
    token: str | None = None,
) -> bool:
    if job.status.is_terminal or _fenced(job, token):
        return False
    _finish(job, JobStatus.SUCCEEDED, retention_s)
    job.report = report
    job.artifacts = list(artifacts)
    job.progress = Progress(
        stage="done", layer=job.progress.layers_total, layers_total=job.progress.layers_total, fraction=1.0
    )
    return True


def fail(job: Job, problem: dict[str, Any], retention_s: int, token: str | None = None) -> bool:
    if job.status.is_terminal or _fenced(job, token):
        return False
    _finish(job, JobStatus.FAILED, retention_s)
    job.error = problem
    return True


def cancel(job: Job, retention_s: int, token: str | None = None) -> bool:
    if job.status.is_terminal or _fenced(job, token):
        return False
    _finish(job, JobStatus.CANCELLED, retention_s)
    job.cancel_requested = True
    return True


def request_cancel(job: Job, retention_s: int) -> None:
    """A queued job, or a running one whose worker is gone (lease expired), is cancelled at once;
    a running one with a live lease is flagged for its worker."""
    if job.status is JobStatus.QUEUED or (job.status is JobStatus.RUNNING and not lease_live(job)):
        cancel(job, retention_s)
    elif job.status is JobStatus.RUNNING:
        job.cancel_requested = True
