"""The ``/v1/jobs`` resource: submit, poll, list, cancel, delete, download, report.

Submission (``POST /v1/jobs``) does everything cheap synchronously, in this order, so that a
refused request leaves nothing behind (the job directory is removed, no job is stored):

1. authenticate + rate-limit (``PrincipalDep``); refuse an oversized ``Content-Length`` (413);
2. stream the multipart body to the job's input directory (``service.uploads``: 413/415/400);
3. parse ``spec`` (pydantic, then the core's ``CompressSpec.from_dict``) and ``architecture``;
4. ``Idempotency-Key``: a known key replays the first job, or 422 when the payload differs;
5. load the model and calibration with the core (ONNX checker, shape inference, supported ops);
6. store the job (``enqueued=False``), enqueue its id, record the enqueue (an API crash in
   between is repaired by the reaper, ``workers/reaper.dispatch_stranded``), answer 202
   (``Location``, ``Retry-After``), or 200 when ``Prefer: wait=N`` saw it finish.

Ref: docs/api.md "Resources"; IETF draft-ietf-httpapi-idempotency-key-header; RFC 7240 (Prefer).
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import time
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Header, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from netshrink.service.deps import (
    AppState,
    ArtifactsDep,
    PrincipalDep,
    SettingsDep,
    StateDep,
    StoreDep,
    authorize,
)
from netshrink.service.errors import PROBLEM_MEDIA_TYPE, ApiError, not_found
from netshrink.service.schemas import JobList, JobPublic, Problem, job_url, to_public
from netshrink.service.submission import (
    SUBMIT_BODY,
    find_replay,
    fingerprint,
    idempotency_conflict,
    parse_json_field,
    parse_spec,
    prefer_wait_s,
    validate_inputs,
)
from netshrink.service.uploads import ParsedUpload, UploadLimits, receive_upload
from netshrink.workers import problems
from netshrink.workers.jobs import (
    CURSOR_PATTERN,
    Callback,
    CreateResult,
    IdempotencyConflictError,
    InputInfo,
    Job,
    JobNotFoundError,
    JobStatus,
    JobStore,
    new_job_id,
)
from netshrink.workers.transitions import lease_live

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
log = logging.getLogger("netshrink.service")

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
_POLL_S = 0.2
_WATCH_POLL_S = 0.05  # GET with Prefer: wait re-reads the job this often (layers can be ms apart)


def owned_job(store: JobStore, job_id: str, owner: str, *, report: bool = False) -> Job:
    """The caller's job; another key's job is indistinguishable from a missing one (404). Its report
    is read only with ``report`` (``GET .../report``): no other route shows it."""
    try:
        job = store.get(job_id, report=report)
    except (JobNotFoundError, ValueError):
        raise not_found() from None
    if job.owner != owner:
        raise not_found()
    return job


def _job_response(
    job: Job, status_code: int, retry_after_s: int, extra: dict[str, str] | None = None
) -> Response:
    body = to_public(job).model_dump_json()  # straight to JSON: no dict + json.dumps round
    headers = {"Location": job_url(job.id), "ETag": _etag(body), **(extra or {})}
    if not job.status.is_terminal:
        headers["Retry-After"] = str(retry_after_s)
    return Response(body, status_code=status_code, headers=headers, media_type="application/json")


def _etag(body: str) -> str:
    """A strong validator of the job's JSON: any change (status, progress, artifacts) changes it."""
    return f'"{hashlib.sha256(body.encode()).hexdigest()[:32]}"'


@router.post(
    "",
    status_code=202,
    response_model=JobPublic,
    summary="Submit a model for compression or analysis",
    openapi_extra={"requestBody": SUBMIT_BODY},
    responses={
        200: {"description": "Finished within `Prefer: wait`", "model": JobPublic},
        202: {
            "description": "Accepted; poll `Location`",
            "headers": {"Location": {"schema": {"type": "string"}}},
        },
        400: {"description": "Malformed upload or model bytes", **PROBLEM_RESPONSE},
        413: {"description": "An upload or parameter limit was exceeded", **PROBLEM_RESPONSE},
        415: {"description": "Not multipart, or an unknown model/calibration format", **PROBLEM_RESPONSE},
        422: {"description": "Invalid spec, unsupported model, or Idempotency-Key reuse", **PROBLEM_RESPONSE},
        **{k: v for k, v in ERROR_RESPONSES.items() if k != 404},
        503: {
            "description": "The job store or the queue is unavailable; retry later",
            "headers": {"Retry-After": {"schema": {"type": "integer"}}},
            **PROBLEM_RESPONSE,
        },
    },
)
async def submit_job(
    request: Request,
    principal: PrincipalDep,
    state: StateDep,
    idempotency_key: Annotated[
        str | None, Header(max_length=255, description="Retry-safe submission key.")
    ] = None,
    prefer: Annotated[str | None, Header(description="`wait=N`: hold the response up to N s.")] = None,
) -> Response:
    settings, store, artifacts = state.settings, state.store, state.artifacts
    limits = UploadLimits(
        settings.max_upload_bytes,
        settings.max_calibration_bytes,
        settings.max_json_field_bytes,
        settings.max_unzipped_bytes,
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limits.request_bytes:
        raise ApiError(
            413, "limit-exceeded", "A configured limit was exceeded", "the request body is too large"
        )
    job_id = new_job_id()
    input_dir = artifacts.input_dir(job_id)
    input_dir.mkdir(parents=True, exist_ok=True)
    upload: ParsedUpload | None = None
    try:
        upload = await receive_upload(
            request.stream(), request.headers.get("content-type", ""), input_dir, limits
        )
        spec_in = parse_spec(upload.fields.get("spec"))
        architecture = parse_json_field(upload.fields.get("architecture"), "architecture")
        fp = fingerprint(upload, spec_in, architecture)
        if idempotency_key:
            replay = await run_in_threadpool(find_replay, store, idempotency_key, principal.owner, fp)
            if replay is not None:
                artifacts.delete(job_id)
                return _job_response(replay, 202, settings.retry_after_s, {"Idempotent-Replayed": "true"})
        core_spec = spec_in.to_core()

        def create() -> CreateResult:
            params = validate_inputs(upload, architecture, spec_in, settings)
            new = Job(
                id=job_id,
                owner=principal.owner,
                kind=core_spec.kind,
                spec=core_spec.to_dict(),
                input=InputInfo(
                    filename=upload.files["model"].filename,
                    format=upload.files["model"].format,
                    sha256=upload.files["model"].sha256,
                    size_bytes=upload.files["model"].size_bytes,
                    params=params,
                ),
                has_architecture=architecture is not None,
                has_calibration="calibration" in upload.files,
                callback=Callback(**spec_in.callback.model_dump(mode="json")) if spec_in.callback else None,
                idempotency_key=idempotency_key,
                enqueued=False,  # the outbox flag: set once the message is sent (workers/reaper.py)
            )
            result = store.create(new, idempotency_key=idempotency_key, fingerprint=fp)
            if settings.fault_kill_after_store_write and result.created:
                os.kill(os.getpid(), signal.SIGKILL)  # fault tests only: the API dies before the enqueue
            return result

        def admit() -> tuple[CreateResult, Exception | None]:
            """Validate, store, enqueue, record the enqueue: ONE worker-thread hop for the blocking
            part of a submit, not four (issue 13 §8). A queue error comes back as a value: the job
            is stored by then, so its files stay."""
            result = create()
            if not result.created:
                return result, None
            try:
                _dispatch(state, result.job)
            except Exception as exc:
                return result, exc
            return result, None

        result, queue_error = await run_in_threadpool(admit)
    except IdempotencyConflictError as exc:
        artifacts.delete(job_id)
        raise idempotency_conflict(exc.key) from None
    except BaseException:
        artifacts.delete(job_id)
        raise
    if not result.created:  # lost a race with a concurrent retry carrying the same key
        artifacts.delete(job_id)
        return _job_response(result.job, 202, settings.retry_after_s, {"Idempotent-Replayed": "true"})
    if queue_error is not None:
        raise queue_error
    return await _respond_after_wait(
        result.job, store, prefer, settings.prefer_wait_max_s, settings.retry_after_s
    )


def _dispatch(state: AppState, job: Job) -> None:
    """Send the job's broker message, then record it (the outbox flag). Blocking."""
    try:
        state.enqueue(job)
    except Exception as exc:  # the job is failed at once (503), so no reaper sends it later
        failed = problems.problem(
            "queue-unavailable", "Queue unavailable", 503, "the job could not be queued"
        )
        state.store.mark_failed(job.id, failed)
        raise ApiError(
            503,
            "queue-unavailable",
            "Queue unavailable",
            "the job could not be queued; retry later",
            headers={"Retry-After": "5"},
        ) from exc
    try:
        state.store.mark_enqueued(job.id)
    except Exception:  # the job is queued and has its message: the reaper's extra one is harmless
        log.warning("job %s: could not record its enqueue; the reaper will send a duplicate", job.id)


async def _respond_after_wait(
    job: Job, store: JobStore, prefer: str | None, cap_s: float, retry_s: int
) -> Response:
    wait_s = prefer_wait_s(prefer, cap_s)
    if wait_s is None:
        return _job_response(job, 202, retry_s)
    deadline = time.monotonic() + wait_s
    while not job.status.is_terminal and time.monotonic() < deadline:
        await anyio.sleep(min(_POLL_S, max(0.0, deadline - time.monotonic())))
        job = await run_in_threadpool(store.get, job.id)
    applied = {"Preference-Applied": f"wait={int(wait_s)}"}
    return _job_response(job, 200 if job.status.is_terminal else 202, retry_s, applied)


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
        return owned_job(state.store, job_id, principal.owner), limit_headers

    job, limit_headers = read() if state.local_reads else await run_in_threadpool(read)
    wait_s = prefer_wait_s(request.headers.get("prefer"), state.settings.prefer_wait_max_s)
    if wait_s is None:
        return _job_response(job, 200, state.settings.retry_after_s, limit_headers)
    seen = request.headers.get("if-none-match")
    return await _watch(job, state.store, wait_s, seen, state.settings.retry_after_s, limit_headers)


async def _watch(
    job: Job, store: JobStore, wait_s: float, seen: str | None, retry_s: int, extra: dict[str, str]
) -> Response:
    """Hold ``GET /v1/jobs/{id}`` while the job's ``ETag`` equals ``seen`` (``If-None-Match``; without
    it, the job as it was when the request arrived), at most ``wait_s``; re-read every
    ``_WATCH_POLL_S``. Always 200 with the current job (docs/api.md "Long poll")."""
    seen = seen or _etag(to_public(job).model_dump_json())
    deadline = time.monotonic() + wait_s
    while not job.status.is_terminal and time.monotonic() < deadline:
        if _etag(to_public(job).model_dump_json()) != seen:
            break
        await anyio.sleep(min(_WATCH_POLL_S, max(0.0, deadline - time.monotonic())))
        job = await run_in_threadpool(owned_job, store, job.id, job.owner)
    return _job_response(job, 200, retry_s, {**extra, "Preference-Applied": f"wait={int(wait_s)}"})


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
    return JobList(items=[to_public(j) for j in page.items], next_cursor=page.next_cursor)


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
def cancel_job(job_id: str, principal: PrincipalDep, store: StoreDep, settings: SettingsDep) -> Response:
    job = owned_job(store, job_id, principal.owner)
    if job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED):
        raise ApiError(409, "job-finished", "The job already finished", f"the job is {job.status.value}")
    job = store.request_cancel(job_id)
    return _job_response(job, 200 if job.status.is_terminal else 202, settings.retry_after_s)


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
def delete_job(job_id: str, principal: PrincipalDep, store: StoreDep, artifacts: ArtifactsDep) -> Response:
    job = owned_job(store, job_id, principal.owner)
    if job.status is JobStatus.RUNNING and not lease_live(job):
        job = store.request_cancel(job_id)  # its worker is gone (lease expired): cancelled at once
    if not job.status.is_terminal:
        raise ApiError(
            409, "job-active", "The job is still active", f"the job is {job.status.value}; cancel it first"
        )
    store.delete(job_id)
    artifacts.delete(job_id)
    return Response(status_code=204)
