"""Operations endpoints: liveness, readiness, worker liveness, metrics, capabilities.

``/readyz`` checks only what *this API process* needs to serve (job store, broker, writable
storage). Worker liveness is reported separately at ``/v1/workers``, so an empty worker pool
queues jobs instead of pulling every API replica out of the load balancer.
Ref: docs/api.md "Operations"; Kubernetes liveness vs readiness probes.
"""

from __future__ import annotations

import platform
import tempfile
from importlib.metadata import PackageNotFoundError, version

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from netshrink.compression import ALGORITHM_VERSION
from netshrink.compression.graph.graph import FULL_OPS
from netshrink.compression.spec import MAX_BITS, MIN_BITS
from netshrink.service.auth import authorize_metrics
from netshrink.service.deps import PrincipalDep, StateDep
from netshrink.service.errors import PROBLEM_MEDIA_TYPE
from netshrink.service.schemas import EVENTS, Capabilities, Health, Limits, WorkerList, WorkerPublic
from netshrink.workers.jobs import utcnow

router = APIRouter(tags=["operations"])

UNAUTHORIZED = {"content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
_VERSIONED = ("netshrink", "torch", "onnx", "onnxruntime", "numpy", "fastapi", "celery")


@router.get("/healthz", response_model=Health, summary="The process is alive")
def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    summary="The API can serve: job store, broker and storage answer",
    responses={503: {"description": "A dependency is down", "model": Health}},
)
def readyz(state: StateDep) -> Response:
    checks: dict[str, str] = {}
    try:
        checks["store"] = "ok" if state.store.ping() else "unreachable"
    except Exception as exc:  # any driver error means "not ready", never a 500
        checks["store"] = f"error: {type(exc).__name__}"
    if state.redis is not None:
        try:
            checks["broker"] = "ok" if state.redis.ping() else "unreachable"
        except Exception as exc:
            checks["broker"] = f"error: {type(exc).__name__}"
    else:
        checks["broker"] = "ok (embedded)"
    try:
        root = state.artifacts.root
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".readyz-"):
            pass
        checks["storage"] = "ok"
    except OSError as exc:
        checks["storage"] = f"error: {type(exc).__name__}"
    ready = all(v.startswith("ok") for v in checks.values())
    body = Health(status="ok" if ready else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get("/v1/workers", response_model=WorkerList, summary="Worker liveness (heartbeats)")
def list_workers(state: StateDep, _: PrincipalDep) -> WorkerList:
    ttl = state.settings.heartbeat_ttl_s
    now = utcnow()
    beats = state.store.list_workers(max_age_s=float(ttl) * 10)
    workers = [
        WorkerPublic(
            name=b.worker_id,
            device=b.device,
            last_seen=b.last_seen,
            alive=(now - b.last_seen).total_seconds() <= ttl,
        )
        for b in beats
    ]
    return WorkerList(alive=sum(w.alive for w in workers), workers=workers)


@router.get(
    "/metrics",
    summary="Prometheus metrics, computed from the job store",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}},
        401: {"description": "Keys mode: a bearer NETSHRINK_METRICS_TOKEN is required", **UNAUTHORIZED},
    },
)
def metrics(request: Request, state: StateDep) -> Response:
    token = state.settings.metrics_token
    authorize_metrics(
        request.headers.get("authorization"),
        token.get_secret_value() if token else None,
        state.auth_mode,
        state.store,
    )
    return Response(generate_latest(state.registry), media_type=CONTENT_TYPE_LATEST)


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"


@router.get(
    "/v1/capabilities",
    response_model=Capabilities,
    summary="Supported formats, ops, methods, limits and versions",
    responses={401: {"description": "Missing or unknown API key", **UNAUTHORIZED}},
)
def capabilities(state: StateDep, _: PrincipalDep) -> Capabilities:
    s = state.settings
    return Capabilities(
        formats=["onnx", "pt", "safetensors"],
        ops=sorted(FULL_OPS),
        kinds=["compress", "analyze", "finetune"],
        granularities=["weight", "neuron", "channel"],
        prune_methods=["randomized_greedy", "magnitude", "obd"],
        quantize_methods=["randomized_greedy", "rtn"],
        bits={"min": MIN_BITS, "max": MAX_BITS},
        devices=["auto", "cpu", "cuda"],
        artifacts=[
            "model.onnx",
            "model.pt",
            "model.safetensors",
            "architecture.json",
            "report.json",
            "report.html",
        ],
        webhook_events=list(EVENTS),
        limits=Limits(
            max_upload_bytes=s.max_upload_bytes,
            max_calibration_bytes=s.max_calibration_bytes,
            max_params=s.max_params,
            job_time_limit_s=s.job_time_limit_s,
            rate_limit_requests=s.rate_limit_requests,
            rate_limit_window_s=s.rate_limit_window_s,
            prefer_wait_max_s=s.prefer_wait_max_s,
        ),
        versions={**{d: _version(d) for d in _VERSIONED}, "python": platform.python_version()},
        algorithm_version=ALGORITHM_VERSION,
    )
