"""``POST /v1/jobs``: admit a submission, then hand it to the queue (the outbox).

It does everything cheap synchronously, in this order, so that a refused request leaves nothing
behind (the job directory is removed, no job is stored):

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

import logging
import os
import signal
import time
from typing import Annotated

import anyio
from fastapi import APIRouter, Header, Request, Response
from starlette.concurrency import run_in_threadpool

from netshrink.service.auth import DEV_OWNER
from netshrink.service.deps import AppState, PrincipalDep, StateDep
from netshrink.service.errors import ApiError
from netshrink.service.routes.responses import ERROR_RESPONSES, PROBLEM_RESPONSE, job_response
from netshrink.service.schemas import JobPublic
from netshrink.service.submission import (
    find_replay,
    fingerprint,
    idempotency_conflict,
    parse_json_field,
    parse_spec,
    prefer_wait_s,
    validate_inputs,
)
from netshrink.service.submit_body import SUBMIT_BODY
from netshrink.service.uploads import ParsedUpload, UploadLimits, receive_upload
from netshrink.workers import problems
from netshrink.workers.jobs import (
    Callback,
    CreateResult,
    IdempotencyConflictError,
    InputInfo,
    Job,
    JobStore,
    new_job_id,
)

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
log = logging.getLogger("netshrink.service")
_POLL_S = 0.2
# Embedded mode admits submissions (validate, store, enqueue) at most two at a time, in arrival order: there
# they are CPU-bound under the GIL and serialize on SQLite's write lock anyway, and 20 of them in 20 threads
# also took the GIL from the event loop, which then received and answered late (issue 13 §8). Two, not one:
# a large model's long validation does not hold up the small ones (one instead of two, in one interleaved
# `bench.load --mode embedded --baseline-tree` run, 2026-12-04 20:25 UTC: 345 / 352 submits/s, worst-slice
# p99 83.4 / 79.3 ms, no gain; four instead of two, 21:25 UTC: 317 / 321 submits/s, slice p99s 98-114 /
# 89-99 ms, worse). Redis mode admits two at a time per API process too. Two against four,
# interleaved slice by slice in two `bench.load --mode redis --rounds 5 --baseline-tree` runs (2026-12-04
# 20:28-20:32 UTC, `serve --workers 2`): 497 / 496 and 527 / 515 submits/s; every one of the ten slices'
# p99 lower with two (52-67 ms against 59-80 ms): fewer threads per process take turns at the GIL, so each
# admission's wall time stays nearer its CPU time. One against two (a third run): 461 / 468 submits/s, slice
# p99s 58-78 / 61-80 ms, no gain. Earlier, four per process against the thread pool's 40, interleaved in
# one `bench.load --mode redis --baseline-tree` run each (2026-12-04 16:19-16:51 UTC, `serve --workers 2`):
# 435 / 366, 294 / 253, 433 / 350 and 604 / 555 submits/s, p50 43 / 60, 54 / 101, 51 / 62 and 37 / 34 ms; the
# worst-slice p99 moved little (123 / 125, 141 / 184, 131 / 130, 89 / 90 ms). (Two per process, in an
# earlier run at load average ≈ 16, had cost throughput: 385/s against 498/s unlimited.) Admitting a small
# upload on the event loop instead (06a03e7, reverted) cut the CPU per submit (4.71 -> 3.48 ms) but stalled
# every request behind one blocked admission: submit p99 681.8 vs 149.1 ms in one interleaved quiet
# bench.load run (2026-12-04 01:15 UTC). Where that tail is (06a03e7 re-applied and timed, 20 wrk clients,
# 10 s, load 4-4.5, 04:32 UTC): not in the app. From the app's entry to its answer p99 15 ms, max 67 ms over
# 2,699 submits, while wrk saw p99 951 ms; in a second run uvicorn's parse of a request to the app's entry
# took p50 65, p99 217, max 273 ms, the app p99 22, max 145 ms, and wrk saw p99 1,173 ms. So requests waited
# outside the app, before uvicorn parsed them or after their answer was written, while the loop ran one
# whole submit per step. A retry of inline admission has to measure that wait, not the admission.
_EMBEDDED_ADMISSION = anyio.CapacityLimiter(2)
_REDIS_ADMISSION = anyio.CapacityLimiter(2)  # per API process


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
        507: {
            "description": "The server's disk is full; nothing was stored, retry later",
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
    input_dir = artifacts.job_dir(job_id)  # a new id: the inputs go in the job's directory
    try:  # one mkdir, without mkdir(parents=True)'s failed first try
        input_dir.mkdir()
    except FileNotFoundError:  # the jobs root itself is gone
        input_dir.mkdir(parents=True)
    upload: ParsedUpload | None = None
    try:
        upload = await receive_upload(
            request.stream(), request.headers.get("content-type", ""), input_dir, limits
        )
        spec_in = parse_spec(upload.fields.get("spec"))
        if spec_in.callback is not None and principal.owner == DEV_OWNER and not settings.webhook_dev_secret:
            raise ApiError(  # the worker would drop every event unsigned (until 2026-12-05, silently)
                422,
                "invalid-callback",
                "The callback URL is refused",
                "this server runs without API keys and without NETSHRINK_WEBHOOK_DEV_SECRET, so its "
                "webhooks cannot be signed and would never be sent: set that secret, or use an API key",
            )
        architecture = parse_json_field(upload.fields.get("architecture"), "architecture")
        fp = None  # the payload fingerprint matters only to an Idempotency-Key
        if idempotency_key:
            fp = fingerprint(upload, spec_in, architecture)
            replay = await run_in_threadpool(find_replay, store, idempotency_key, principal.owner, fp)
            if replay is not None:
                artifacts.delete(job_id)
                return job_response(replay, 202, settings.retry_after_s, {"Idempotent-Replayed": "true"})
        core_spec = spec_in.to_core()

        def create() -> CreateResult:
            params = validate_inputs(upload, architecture, spec_in, settings, core_spec)
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
                # The outbox flag: set once the message is sent (workers/reaper.py); embedded, at once.
                enqueued=state.in_process_broker,
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

        limiter = _EMBEDDED_ADMISSION if state.local_reads else _REDIS_ADMISSION
        result, queue_error = await anyio.to_thread.run_sync(admit, limiter=limiter)
    except IdempotencyConflictError as exc:
        artifacts.delete(job_id)
        raise idempotency_conflict(exc.key) from None
    except BaseException:
        artifacts.delete(job_id)
        raise
    if not result.created:  # lost a race with a concurrent retry carrying the same key
        artifacts.delete(job_id)
        return job_response(result.job, 202, settings.retry_after_s, {"Idempotent-Replayed": "true"})
    if queue_error is not None:
        raise queue_error
    return await _respond_after_wait(
        result.job, store, prefer, settings.prefer_wait_max_s, settings.retry_after_s
    )


def _dispatch(state: AppState, job: Job) -> None:
    """Send the job's broker message, then record it (the outbox flag) unless the job was stored
    with it. Blocking."""
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
    if job.enqueued:  # embedded: stored so (AppState.in_process_broker)
        return
    try:
        state.store.mark_enqueued(job.id, stored=job)
    except Exception:  # the job is queued and has its message: the reaper's extra one is harmless
        log.warning("job %s: could not record its enqueue; the reaper will send a duplicate", job.id)


async def _respond_after_wait(
    job: Job, store: JobStore, prefer: str | None, cap_s: float, retry_s: int
) -> Response:
    wait_s = prefer_wait_s(prefer, cap_s)
    if wait_s is None:
        return job_response(job, 202, retry_s)
    deadline = time.monotonic() + wait_s
    while not job.status.is_terminal and time.monotonic() < deadline:
        await anyio.sleep(min(_POLL_S, max(0.0, deadline - time.monotonic())))
        job = await run_in_threadpool(store.get, job.id)
    applied = {"Preference-Applied": f"wait={int(wait_s)}"}
    return job_response(job, 200 if job.status.is_terminal else 202, retry_s, applied)
