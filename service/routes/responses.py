"""What the ``/v1/jobs`` routes share: the caller's job (``owned_job``), the job as an HTTP response
(JSON body, ``Location``, ``ETag``, ``Retry-After``), and the error responses they document.

Ref: docs/api.md "Resources", "Long poll" (the ``ETag``).
"""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi import Response

from netshrink.service.errors import PROBLEM_MEDIA_TYPE, not_found
from netshrink.service.schemas import Problem, job_url, to_public
from netshrink.workers.jobs import Job, JobNotFoundError, JobStore, utcnow

PROBLEM_RESPONSE = {
    "model": Problem,
    "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    s: {"description": d, **PROBLEM_RESPONSE}
    for s, d in {
        401: "Missing or unknown API key",
        404: "No such job",
        429: "Rate limited",
        503: "The job store is unreachable; retry after `Retry-After` seconds",
    }.items()
}
ERROR_RESPONSES[503]["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}


def owned_job(store: JobStore, job_id: str, owner: str, *, report: bool = False) -> Job:
    """The caller's job; another key's job is indistinguishable from a missing one (404). Its report
    is read only with ``report`` (``GET .../report``): no other route shows it."""
    try:
        job = store.get(job_id, report=report)
    except (JobNotFoundError, ValueError):
        raise not_found() from None
    return checked_owner(job, owner)


def checked_owner(job: Job | None, owner: str) -> Job:
    """``job`` when it exists, ``owner`` owns it and it has not expired, else 404 (the same answer
    for each). An expired job is gone at its ``expires_at``, whenever the retention cleanup next runs
    (``RETENTION_INTERVAL_S``) to delete its record and files; until 2026-12-05 it was served
    until then (found by probing)."""
    if job is None or job.owner != owner or expired(job):
        raise not_found()
    return job


def expired(job: Job) -> bool:
    return job.expires_at is not None and job.expires_at <= utcnow()


def job_response(
    job: Job, status_code: int, retry_after_s: int, extra: dict[str, str] | None = None
) -> Response:
    body = to_public(job).model_dump_json()  # straight to JSON: no dict + json.dumps round
    headers = {"Location": job_url(job.id), "ETag": etag(body), **(extra or {})}
    if not job.status.is_terminal:
        headers["Retry-After"] = str(retry_after_s)
    return Response(body, status_code=status_code, headers=headers, media_type="application/json")


def etag(body: str) -> str:
    """A strong validator of the job's JSON: any change (status, progress, artifacts) changes it."""
    return f'"{hashlib.sha256(body.encode()).hexdigest()[:32]}"'


__all__ = [
    "ERROR_RESPONSES",
    "PROBLEM_RESPONSE",
    "checked_owner",
    "etag",
    "expired",
    "job_response",
    "owned_job",
]
