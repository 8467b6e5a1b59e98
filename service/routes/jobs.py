"""The ``/v1/jobs`` read and state routes: poll (with a long poll), list, cancel, delete.

Submission (``POST /v1/jobs``) is ``routes/submit.py``; artifacts and the report are
``routes/artifacts.py``; what they share (the caller's job, the job as a response) is
``routes/responses.py``.

Ref: docs/api.md "Resources", "Long poll".
"""

from __future__ import annotations

import logging
import time
from typing import Annotated

import anyio
from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from netshrink.service.deps import (
    AppState,
    PrincipalDep,
    SettingsDep,
    StateDep,
    StoreDep,
    admitted,
    authorize,
)
from netshrink.service.errors import ApiError
from netshrink.service.routes.responses import (
    ERROR_RESPONSES,
    PROBLEM_RESPONSE,
    checked_owner,
    etag,
    expired,
    job_response,
    owned_job,
)
from netshrink.service.schemas import JobList, JobPublic, to_public
from netshrink.service.submission import prefer_wait_s
from netshrink.workers.jobs import CURSOR_PATTERN, Job, JobStatus, JobStore
from netshrink.workers.transitions import lease_live

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
_WATCH_POLL_S = 0.05  # GET with Prefer: wait re-reads the job this often (layers can be ms apart)


WATCH_PARAMETERS = [
    {
        "name": "Prefer",
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": "`wait=N`: hold the response up to N s until the job changes (long poll).",
    },
    {
        "name": "If-None-Match",
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": "With `Prefer: wait`: the `ETag` already seen; the answer waits for another.",
    },
]


@router.get(
    "/{job_id}",
    response_model=JobPublic,
    summary="Job status, progress, error and artifacts",
    responses={
        200: {
            "headers": {
                "Retry-After": {"schema": {"type": "integer"}},
                "ETag": {"schema": {"type": "string"}, "description": "Changes whenever the job does."},
            }
        },
        **ERROR_RESPONSES,
    },
    openapi_extra={"parameters": WATCH_PARAMETERS},
)
async def get_job(job_id: str, request: Request, state: StateDep) -> Response:
    """The job. With `Prefer: wait=N`, a long poll: answered as soon as the job differs from the
    `ETag` in `If-None-Match` (or from the job when the request arrived), when it ends, or after N s
    (capped by `prefer_wait_max_s`); always 200 with the current job."""
    # The hottest route (clients poll it): authenticate, rate-limit and read in ONE worker-thread
    # hop, not one per dependency, and none in embedded mode (issue 13 §8: the hops were the largest
    # cost of a status read; see service/deps.py).
    authorization = request.headers.get("authorization")

    def read() -> tuple[Job, dict[str, str]]:
        principal, limit_headers = authorize(authorization, state)
        request.state.ratelimit_headers = limit_headers  # a 404 below carries them too
        return owned_job(state.store, job_id, principal.owner), limit_headers

    if state.status_read is not None and authorization:  # Redis mode: one round trip, no thread
        principal, limit, found = await state.status_read.read(authorization, job_id)
        limit_headers = admitted(limit, state.settings.rate_limit_window_s)
        request.state.ratelimit_headers = limit_headers
        job = checked_owner(found, principal.owner)
    else:
        job, limit_headers = read() if state.local_reads else await run_in_threadpool(read)
    wait_s = prefer_wait_s(request.headers.get("prefer"), state.settings.prefer_wait_max_s)
    if wait_s is None:
        return job_response(job, 200, state.settings.retry_after_s, limit_headers)
    seen = request.headers.get("if-none-match")
    return await _watch(job, state.store, wait_s, seen, state.settings.retry_after_s, limit_headers)


async def _watch(
    job: Job, store: JobStore, wait_s: float, seen: str | None, retry_s: int, extra: dict[str, str]
) -> Response:
    """Hold ``GET /v1/jobs/{id}`` while the job's ``ETag`` equals ``seen`` (``If-None-Match``; without
    it, the job as it was when the request arrived), at most ``wait_s``; re-read every
    ``_WATCH_POLL_S``. Always 200 with the current job (docs/api.md "Long poll")."""
    seen = seen or etag(to_public(job).model_dump_json())
    deadline = time.monotonic() + wait_s
    while not job.status.is_terminal and time.monotonic() < deadline:
        if etag(to_public(job).model_dump_json()) != seen:
            break
        await anyio.sleep(min(_WATCH_POLL_S, max(0.0, deadline - time.monotonic())))
        job = await run_in_threadpool(owned_job, store, job.id, job.owner)
    return job_response(job, 200, retry_s, {**extra, "Preference-Applied": f"wait={int(wait_s)}"})


@router.get(
    "",
    response_model=JobList,
    summary="The caller's jobs, newest first",
    responses={
        400: {"description": "`cursor` does not have the documented form", **PROBLEM_RESPONSE},
        **ERROR_RESPONSES,
    },
)
def list_jobs(
    principal: PrincipalDep,
    store: StoreDep,
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[
        str | None,
        Query(
            description="`next_cursor` of the previous page: a position `<created µs>.<job id>`; any "
            "value of that form is accepted (the page starts after it), any other is 400.",
            json_schema_extra={"pattern": CURSOR_PATTERN},  # checked by the store: 400, not 422
        ),
    ] = None,
    status: Annotated[JobStatus | None, Query(description="Only jobs in this status.")] = None,
) -> JobList:
    try:
        page = store.list(
            principal.owner, status=status, limit=min(limit, settings.page_size_max), cursor=cursor
        )
    except ValueError:
        raise ApiError(
            400, "invalid-cursor", "Invalid cursor", "pass next_cursor from a previous page"
        ) from None
    items = [to_public(j) for j in page.items if not expired(j)]  # gone at expires_at (responses.py)
    return JobList(items=items, next_cursor=page.next_cursor)


@router.post(
    "/{job_id}/cancel",
    response_model=JobPublic,
    summary="Cancel a queued or running job",
    responses={
        202: {"description": "Cancellation requested; the worker stops between layers", "model": JobPublic},
        409: {"description": "The job already succeeded or failed", **PROBLEM_RESPONSE},
        **ERROR_RESPONSES,
    },
)
def cancel_job(job_id: str, principal: PrincipalDep, state: StateDep) -> Response:
    store = state.store
    job = owned_job(store, job_id, principal.owner)
    if job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED):
        raise ApiError(409, "job-finished", "The job already finished", f"the job is {job.status.value}")
    was = job.status
    job = store.request_cancel(job_id)
    _cancelled_here(state, was, job)
    return job_response(job, 200 if job.status.is_terminal else 202, state.settings.retry_after_s)


def _cancelled_here(state: AppState, was: JobStatus, job: Job) -> None:
    """A job this request cancelled at once (queued, or running with its worker gone) gets its
    ``job.cancelled`` webhook from here: no worker will run it to send one (until 2026-12-05 none
    was sent, found by probing). A running job with a live worker is cancelled by that worker,
    which sends the event itself."""
    if was is not JobStatus.CANCELLED and job.status is JobStatus.CANCELLED and state.notify is not None:
        try:
            state.notify("job.cancelled", job)
        except Exception:  # the cancel stands; a lost event is logged, not a failed request
            log.warning("job %s: could not queue its job.cancelled webhook", job.id, exc_info=True)


@router.delete(
    "/{job_id}",
    status_code=204,
    summary="Delete a finished job and its files",
    responses={
        409: {
            "description": "The job is still queued or running (its worker is alive); cancel it first",
            **PROBLEM_RESPONSE,
        },
        **ERROR_RESPONSES,
    },
)
def delete_job(job_id: str, principal: PrincipalDep, state: StateDep) -> Response:
    store, artifacts = state.store, state.artifacts
    job = owned_job(store, job_id, principal.owner)
    if job.status is JobStatus.RUNNING and not lease_live(job):
        job = store.request_cancel(job_id)  # its worker is gone (lease expired): cancelled at once
        _cancelled_here(state, JobStatus.RUNNING, job)
    if not job.status.is_terminal:
        raise ApiError(
            409, "job-active", "The job is still active", f"the job is {job.status.value}; cancel it first"
        )
    store.delete(job_id)
    artifacts.delete(job_id)
    return Response(status_code=204)
