"""A small, real HTTP server implementing the pieces of docs/api.md the SDK and ``netshrink submit`` use.

It is a legitimate local server (Starlette on uvicorn, real sockets), not a mock of ``service/``:
it exists so the client can be tested against the *contract* while the service is built beside it.
Jobs advance one stage per ``GET`` (queued → running layer 1..3 → succeeded), so polling, progress
and ``Retry-After`` are exercised deterministically. Knobs on ``ContractState``:
- ``throttle``/``unavailable``: the next N requests answer 429/503 with ``Retry-After``;
- ``corrupt``: artifact names served with bytes that do not match their stated sha256;
- ``api_key``: require ``Authorization: Bearer <key>``;
- a model file whose name contains ``boom`` makes a job that fails.
Measured error is fixed at ``REL_L2``; a ``target.max`` below it gives ``budget_met: false``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from netshrink.compression.errors import InvalidSpecError
from netshrink.compression.spec import CompressSpec
from tests.threaded_server import serve_app

REL_L2 = 0.031
LAYERS = 3
MODEL_BYTES = b"\x08\x07netshrink-compressed-model" * 40
PROBLEM = "application/problem+json"


@dataclass
class ContractState:
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    idempotency: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (payload sha, job id)
    throttle: int = 0
    unavailable: int = 0
    retry_after: str = "0"
    poll_retry_after: str = "0"
    corrupt: set[str] = field(default_factory=set)
    api_key: str | None = None
    requests: list[str] = field(default_factory=list)  # "METHOD path" of every request seen
    headers: list[dict[str, str]] = field(default_factory=list)


def problem(status: int, title: str, detail: str, **extra: Any) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    headers = {"Retry-After": extra.pop("retry_after")} if "retry_after" in extra else None
    body.pop("retry_after", None)
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def _artifact_bytes(job: dict[str, Any]) -> dict[str, bytes]:
    return {"model.onnx": MODEL_BYTES, "report.json": json.dumps(job["report"]).encode()}


def _report(spec: dict[str, Any]) -> dict[str, Any]:
    target = spec.get("target") or None
    budget_met = None if target is None else REL_L2 <= float(target.get("max", 10.0))
    return {
        "schema": "netshrink.report/1",
        "kind": spec.get("kind", "compress"),
        "summary": {
            "params": {"before": 21642, "after": 10821},
            "bytes": {"before": {"total": 87000}, "after": {"total": 12000}, "ratio": 7.25},
            "error": {"relative_l2": REL_L2, "mse": 0.0021, "p95": 0.05, "max": 0.09},
            "bounds": {"E": {"value": 0.05, "relative": 0.15, "probability_bound": 0.5, "holds": True}},
            "bound_holds": {"tier": "E", "holds": True},
            "budget_met": budget_met,
        },
    }


def _advance(job: dict[str, Any]) -> None:
    """One stage per poll: queued → running (layer 1..LAYERS) → succeeded/failed."""
    if job["status"] in ("succeeded", "failed", "cancelled"):
        return
    layer = job["progress"]["layer"] + 1 if job["status"] == "running" else 1
    if layer <= LAYERS:
        job["status"] = "running"
        job["progress"] = {"stage": "compressing", "layer": layer, "layers_total": LAYERS,
                           "fraction": layer / (LAYERS + 1)}  # fmt: skip
        return
    job["progress"] = {"stage": "done", "layer": LAYERS, "layers_total": LAYERS, "fraction": 1.0}
    if "boom" in job["input"]["filename"]:
        job["status"] = "failed"
        job["error"] = {"type": "about:blank", "title": "Job failed", "status": 500, "detail": "worker died"}
        return
    job["status"] = "succeeded"
    job["artifacts"] = [
        {"name": name, "media_type": "application/octet-stream", "size_bytes": len(data),
         "sha256": hashlib.sha256(data).hexdigest(), "url": f"/v1/jobs/{job['id']}/artifacts/{name}"}
        for name, data in _artifact_bytes(job).items()
    ]  # fmt: skip
    job["report_url"] = f"/v1/jobs/{job['id']}/report"


def create_contract_app(state: ContractState) -> Starlette:
    def public(job: dict[str, Any], status: int = 200, **headers: str) -> JSONResponse:
        body = {k: v for k, v in job.items() if k != "report"}
        if job["status"] in ("queued", "running"):
            headers["Retry-After"] = state.poll_retry_after
        return JSONResponse(body, status_code=status, headers=headers)

    def lookup(request: Request) -> dict[str, Any] | None:
        return state.jobs.get(request.path_params["job_id"])

    async def gate(request: Request) -> Response | None:
        state.requests.append(f"{request.method} {request.url.path}")
        state.headers.append(dict(request.headers))
        if state.throttle > 0:
            state.throttle -= 1
            r = problem(429, "Too Many Requests", "rate limit", retry_after=state.retry_after)
            r.headers["RateLimit-Limit"], r.headers["RateLimit-Remaining"] = "10", "0"
            return r
        if state.unavailable > 0:
            state.unavailable -= 1
            return problem(503, "Service Unavailable", "try later", retry_after=state.retry_after)
        if state.api_key and request.headers.get("authorization") != f"Bearer {state.api_key}":
            return problem(401, "Unauthorized", "a valid API key is required")
        return None

    async def submit(request: Request) -> Response:
        if (denied := await gate(request)) is not None:
            return denied
        form = await request.form()
        upload = form.get("model")
        if upload is None or isinstance(upload, str):
            return problem(422, "Invalid request", "model is required", errors=[{"pointer": "/model",
                           "detail": "required", "location": "form"}])  # fmt: skip
        data = await upload.read()
        if not upload.filename or not upload.filename.endswith((".onnx", ".pt", ".pth", ".safetensors")):
            return problem(415, "Unsupported Media Type", f"{upload.filename}: not a model format")
        try:
            spec = CompressSpec.from_dict(json.loads(str(form.get("spec") or "{}"))).with_seed().to_dict()
        except InvalidSpecError as exc:
            pointer = "/spec/" + (exc.field or "").replace(".", "/")
            return problem(422, "Invalid spec", exc.detail, errors=[{"pointer": pointer,
                           "detail": exc.detail, "location": "form"}])  # fmt: skip
        key = request.headers.get("idempotency-key")
        payload_sha = hashlib.sha256(data + str(form.get("spec")).encode()).hexdigest()
        if key and key in state.idempotency:
            sha, job_id = state.idempotency[key]
            if sha != payload_sha:
                return problem(422, "Idempotency-Key reused", "same key, different payload")
            return public(state.jobs[job_id], 202, Location=f"/v1/jobs/{job_id}")
        job_id = f"job{len(state.order) + 1:04d}"
        job = {
            "id": job_id, "kind": spec["kind"], "status": "queued", "attempts": 0,
            "created_at": "2026-11-25T18:00:00Z", "progress": {"stage": "queued", "layer": 0,
            "layers_total": LAYERS, "fraction": 0.0}, "spec": spec, "error": None, "artifacts": [],
            "input": {"filename": upload.filename, "format": "onnx", "size_bytes": len(data),
                      "sha256": hashlib.sha256(data).hexdigest()},
            "extra_parts": sorted(k for k in form if k not in ("model", "spec")),
            "report": _report(spec),
        }  # fmt: skip
        state.jobs[job_id] = job
        state.order.append(job_id)
        if key:
            state.idempotency[key] = (payload_sha, job_id)
        prefer = request.headers.get("prefer", "")
        if prefer.startswith("wait="):
            while job["status"] not in ("succeeded", "failed"):
                _advance(job)
            return public(job, 200)
        return public(job, 202, Location=f"/v1/jobs/{job_id}")

    async def get_job(request: Request) -> Response:
        if (denied := await gate(request)) is not None:
            return denied
        if (job := lookup(request)) is None:
            return problem(404, "Not Found", f"no job {request.path_params['job_id']}")
        _advance(job)
        return public(job)

    async def list_jobs(request: Request) -> Response:
        if (denied := await gate(request)) is not None:
            return denied
        status = request.query_params.get("status")
        ids = [i for i in reversed(state.order) if status is None or state.jobs[i]["status"] == status]
        start = int(request.query_params.get("cursor", "0"))
        limit = int(request.query_params.get("limit", "50"))
        page = ids[start : start + limit]
        nxt = str(start + limit) if start + limit < len(ids) else None
        items = [{k: v for k, v in state.jobs[i].items() if k != "report"} for i in page]
        return JSONResponse({"items": items, "next_cursor": nxt})

    async def cancel(request: Request) -> Response:
        if (denied := await gate(request)) is not None:
            return denied
        if (job := lookup(request)) is None:
            return problem(404, "Not Found", "no such job")
        if job["status"] not in ("queued", "running"):
            return problem(409, "Conflict", f"job is {job['status']}")
        job["status"] = "cancelled"
        return public(job)

    async def delete(request: Request) -> Response:
        if (denied := await gate(request)) is not None:
            return denied
        if (job := lookup(request)) is None:
            return problem(404, "Not Found", "no such job")
        if job["status"] in ("queued", "running"):
            return problem(409, "Conflict", "cancel the job first")
        del state.jobs[job["id"]]
        state.order.remove(job["id"])
        return Response(status_code=204)

    async def artifact(request: Request) -> Response:
        if (denied := await gate(request)) is not None:
            return denied
        job, name = lookup(request), request.path_params["name"]
        files = _artifact_bytes(job) if job and job["status"] == "succeeded" else {}
        if name not in files:
            return problem(404, "Not Found", f"no artifact {name}")
        data = files[name]
        digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
        body = data[:-1] + bytes([data[-1] ^ 1]) if name in state.corrupt else data
        return Response(body, media_type="application/octet-stream", headers={
            "Content-Digest": f"sha-256=:{digest}:", "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
            "Content-Disposition": f'attachment; filename="{name}"'})  # fmt: skip

    async def report(request: Request) -> Response:
        if (denied := await gate(request)) is not None:
            return denied
        job = lookup(request)
        if job is None or job["status"] != "succeeded":
            return problem(404, "Not Found", "no report")
        return JSONResponse(job["report"])

    async def capabilities(request: Request) -> Response:
        if (denied := await gate(request)) is not None:
            return denied
        return JSONResponse({"formats": ["onnx", "pytorch", "safetensors"], "kinds": ["compress", "analyze"]})

    return Starlette(
        routes=[
            Route("/v1/jobs", submit, methods=["POST"]),
            Route("/v1/jobs", list_jobs, methods=["GET"]),
            Route("/v1/jobs/{job_id}", get_job, methods=["GET"]),
            Route("/v1/jobs/{job_id}", delete, methods=["DELETE"]),
            Route("/v1/jobs/{job_id}/cancel", cancel, methods=["POST"]),
            Route("/v1/jobs/{job_id}/artifacts/{name}", artifact, methods=["GET"]),
            Route("/v1/jobs/{job_id}/report", report, methods=["GET"]),
            Route("/v1/capabilities", capabilities, methods=["GET"]),
        ]
    )


@contextmanager
def serve(state: ContractState) -> Iterator[str]:
    """Run the contract app on a real 127.0.0.1 socket in a thread; yield its base URL."""
    with serve_app(create_contract_app(state), lifespan="off", start_timeout_s=10) as url:
        yield url


def free_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (for 'server unreachable')."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"
