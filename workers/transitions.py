"""Pure job-state transitions shared by every ``JobStore`` implementation.

Each function mutates a ``Job`` in place and returns what the store method returns. The stores
only provide atomicity (read → apply → write in one transaction), so the Redis and SQLite stores
cannot drift apart in semantics. Ref: the lifecycle diagram in ``workers/jobs.py``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from netshrink.workers.jobs import ArtifactInfo, Job, JobStatus, Progress, utcnow


def _finish(job: Job, status: JobStatus, retention_s: int) -> None:
    now = utcnow()
    job.status = status
    job.finished_at = now
    job.expires_at = now + timedelta(seconds=retention_s)


def start(job: Job) -> bool:
    """queued/running → running; first start stamps ``started_at``."""
    if job.status.is_terminal:
        return False
    job.status = JobStatus.RUNNING
    if job.started_at is None:
        job.started_at = utcnow()
    return True


def bump_attempts(job: Job) -> int:
    job.attempts += 1
    return job.attempts


def set_progress(job: Job, progress: Progress) -> None:
    if not job.status.is_terminal:
        job.progress = progress


def succeed(job: Job, report: dict[str, Any], artifacts: list[ArtifactInfo], retention_s: int) -> bool:
    if job.status.is_terminal:
        return False
    _finish(job, JobStatus.SUCCEEDED, retention_s)
    job.report = report
    job.artifacts = list(artifacts)
    job.progress = Progress(
        stage="done", layer=job.progress.layers_total, layers_total=job.progress.layers_total, fraction=1.0
    )
    return True


def fail(job: Job, problem: dict[str, Any], retention_s: int) -> bool:
    if job.status.is_terminal:
        return False
    _finish(job, JobStatus.FAILED, retention_s)
    job.error = problem
    return True


def cancel(job: Job, retention_s: int) -> bool:
    if job.status.is_terminal:
        return False
    _finish(job, JobStatus.CANCELLED, retention_s)
    job.cancel_requested = True
    return True


def request_cancel(job: Job, retention_s: int) -> None:
    """A queued job is cancelled at once; a running one is flagged for the worker."""
    if job.status is JobStatus.QUEUED:
        cancel(job, retention_s)
    elif job.status is JobStatus.RUNNING:
        job.cancel_requested = True
