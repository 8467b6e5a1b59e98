"""The API's pydantic v2 schemas. ``...Create`` comes in, ``...Public`` goes out
(docs/development.md "Names").

``JobSpecCreate`` mirrors ``compression.spec.CompressSpec`` field for field, with the same ranges
as ``Field`` constraints so OpenAPI documents them; the core's ``CompressSpec.from_dict`` stays the
one authority (it runs on every submission). ``callback`` is the one API-only field: the worker,
not the core, delivers webhooks. Ref: docs/api.md "JobSpec", "GET /v1/jobs/{id}", "Errors".
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field

from netshrink.compression.errors import InvalidSpecError
from netshrink.compression.finetune.spec import MAX_EPOCHS, MAX_SWEEP, FinetuneSpec
from netshrink.compression.spec import (
    MAX_BITS,
    MAX_DRAWS,
    MIN_BITS,
    SEED_MAX,
    CompressSpec,
)
from netshrink.service.spec_rules import ANALYZE_REFUSES, SPEC_DEPENDENT_SCHEMAS
from netshrink.workers.jobs import Job, JobStatus

JobStatusName = Literal["queued", "running", "succeeded", "failed", "cancelled"]
EventName = Literal["job.started", "job.progress", "job.succeeded", "job.failed", "job.cancelled"]
EVENTS: tuple[EventName, ...] = (
    "job.started",
    "job.progress",
    "job.succeeded",
    "job.failed",
    "job.cancelled",
)

Fraction = Annotated[float, Field(gt=0.0, le=1.0)]
Sigma = Annotated[float, Field(ge=0.0, le=100.0)]


class _In(BaseModel):
    """Request bodies: unknown members refused, and strict types as the document states them (a
    string is no number: ``"4"`` for ``bits`` was coerced until 2026-12-05); integral JSON numbers
    such as ``4.0`` are integers, as in JSON Schema (``submission.parse_spec``)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class PruneCreate(_In):
    keep: Fraction | dict[str, Fraction] = Field(
        0.5, description="Target kept fraction κ, global or per layer."
    )
    granularity: Literal["weight", "neuron", "channel"] = "weight"
    fraction: Fraction | Literal["auto"] = Field(default="auto", description="P1's randomized fraction f.")
    score: Literal["layer", "output"] = "layer"
    method: Literal["randomized_greedy", "magnitude", "obd"] = "randomized_greedy"


class QuantizeCreate(_In):
    bits: (
        Annotated[int, Field(ge=MIN_BITS, le=MAX_BITS)]
        | dict[str, Annotated[int, Field(ge=MIN_BITS, le=MAX_BITS)]]
    ) = Field(default=8, description="Bits, global or per layer (layers left out stay float).")
    scale: Literal["per_row", "per_layer"] = "per_row"
    method: Literal["randomized_greedy", "rtn"] = "randomized_greedy"
    fraction: Fraction = 1.0


class TargetCreate(_In):
    metric: Literal["relative_l2", "top1_agreement"] = "relative_l2"
    max: float | None = Field(default=None, gt=0.0, le=10.0, description="Required for relative_l2.")
    min: float | None = Field(default=None, ge=0.0, le=1.0, description="Required for top1_agreement.")


class EvaluationCreate(_In):
    inputs: Literal["calibration", "gaussian", "uniform"] = "calibration"
    scale: float = Field(default=1.0, gt=0.0, le=1e6)
    samples: int = Field(default=256, ge=2, le=100_000)
    holdout_fraction: float = Field(default=0.2, ge=0.0, le=0.9)
    delta: float = Field(default=0.1, gt=0.0, lt=1.0)


class CallbackCreate(_In):
    url: AnyHttpUrl
    events: list[EventName] = Field(default_factory=lambda: list(EVENTS), min_length=1)


class FinetuneCreate(_In):
    """Heavy-tailed-noise fine-tuning (P3; ``kind: finetune``). Mirrors ``compression.finetune.spec``."""

    alpha: float = Field(default=1.75, gt=0.0, le=2.0, description="Stability index α of the SαS noise.")
    sigma: Sigma | Annotated[list[Sigma], Field(min_length=1, max_length=MAX_SWEEP)] = Field(
        default=0.003, description="Noise scale σ in [0, 100]; a list is a σ sweep."
    )
    eta: float = Field(default=0.01, gt=0.0, le=10.0, description="Learning rate η.")
    epochs: int = Field(default=20, ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(default=64, ge=1, le=1_000_000)
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0, description="SGD only.")
    validation_fraction: float = Field(default=0.2, gt=0.0, le=0.9, description="Carved when no validation.")
    tolerance: float = Field(
        default=1.0, ge=0.0, le=100.0, description="Accuracy points (prune curve, sweep)."
    )


class JobSpecCreate(_In):
    """What to do to the uploaded model (the ``spec`` form field, as JSON)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"prune": {"keep": 0.5, "granularity": "neuron"}, "quantize": {"bits": 4}, "seed": 7},
                {"kind": "analyze"},
                {"kind": "finetune", "finetune": {"sigma": 0.003, "epochs": 20}, "seed": 0},
            ],
            # The core's cross-field rules, in JSON Schema (service/spec_rules.py).
            "dependentSchemas": SPEC_DEPENDENT_SCHEMAS,
        },
    )

    kind: Literal["compress", "analyze", "finetune"] = "compress"
    finetune: FinetuneCreate | None = Field(
        default=None,
        description="kind finetune only; the compress fields, when given, compress the fine-tuned model.",
    )
    prune: PruneCreate | None = None
    quantize: QuantizeCreate | None = None
    exclude: list[str] = Field(default_factory=list, description="Layer names left dense.")
    draws: Annotated[int, Field(ge=1, le=MAX_DRAWS)] | Literal["auto"] = Field(
        default="auto",
        description="Best of R whole-network draws; 'auto' draws until the fit-split error stops "
        "improving (no gain in 3 draws; at most min(16, max(4, 2^34 / (parameters x fit samples)))).",
    )
    compensate: bool | None = Field(
        default=None,
        description="Error compensation: bias mean replacement, least-squares refit, GPTQ-style rounding "
        "(only tier W then bounds the compensated layers; the report keeps the uncompensated draw's "
        "bounds). null (default): on wherever it applies (not with a deterministic method, nor with "
        "channel pruning of a residual/concat graph, nor when the refit would cost over 2^38 multiply-adds: "
        "a warning in the report says so), each layer refit on 3/4 of the fit split and its refit kept "
        "only where it lowers the layer's error on the held-back 1/4 (layers[].refit_check); true: every "
        "refit kept; false: the unbiased randomized draws (tiers E/T/P).",
    )
    target: TargetCreate | None = None
    evaluation: EvaluationCreate | None = None
    compare_baselines: bool = False
    target_opset: int | None = Field(default=None, ge=13, le=25)
    seed: int | None = Field(default=None, ge=0, le=SEED_MAX, description="Random when unset; always echoed.")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    full_diagnostics: bool = Field(
        default=False,
        description="Exact heavy-tail diagnostics on large layers (cubic); seeded samples and sketches "
        "otherwise.",
    )
    callback: CallbackCreate | None = None

    def analyze_refusals(self) -> list[str]:
        """With kind analyze, the compression options given away from their neutral values (what
        ``ANALYZE_REFUSES`` says in the document): an ``evaluation`` object at all, even ``{}``."""
        if self.kind != "analyze":
            return []
        neutral: dict[str, Any] = {"exclude": [], "draws": "auto", "compare_baselines": False}
        return [name for name in ANALYZE_REFUSES if getattr(self, name) != neutral.get(name)]

    def to_core(self) -> CompressSpec | FinetuneSpec:
        """The core's spec with a concrete seed; raises ``InvalidSpecError`` on what pydantic can't see."""
        data = self.model_dump(mode="json", exclude_none=True, exclude={"callback"})
        if self.kind != "finetune":
            if "finetune" in data:
                raise InvalidSpecError("finetune is only accepted with kind finetune", field="finetune")
            return CompressSpec.from_dict(data).with_seed()
        ft = {**data.pop("finetune", {}), "seed": data.pop("seed", None), "device": data.pop("device")}
        data.pop("kind")
        explicit = self.model_dump(
            exclude_unset=True, exclude={"callback", "kind", "finetune", "seed", "device"}
        )
        if explicit:  # any compress field given: compress the fine-tuned model with it
            ft["compress"] = {k: v for k, v in data.items() if k in explicit}
        return FinetuneSpec.from_dict({k: v for k, v in ft.items() if v is not None}).with_seed()


# ---- responses ---------------------------------------------------------------------------------
class ProblemFieldError(BaseModel):
    """One field-level failure inside a problem (RFC 9457 §3 extension member ``errors``)."""

    model_config = ConfigDict(extra="allow")

    detail: str
    pointer: str | None = Field(
        default=None, description="JSON Pointer into the request, e.g. /spec/prune/keep."
    )
    field: str | None = Field(default=None, description="The same place, dotted (spec.prune.keep).")
    location: Literal["body", "query", "header", "path"] | None = None


class Problem(BaseModel):
    """RFC 9457 problem details; every non-2xx response and a failed job's ``error``."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int = Field(ge=100, le=599)
    detail: str | None = None
    instance: str | None = None
    errors: list[ProblemFieldError] = Field(default_factory=list)


class Progress(BaseModel):
    stage: str = "queued"
    layer: int = 0
    layers_total: int = 0
    fraction: float = Field(default=0.0, ge=0.0, le=1.0)


class InputPublic(BaseModel):
    filename: str
    format: str = Field(description="onnx, pt or safetensors (sniffed from the bytes).")
    sha256: str
    size_bytes: int
    params: int | None = None


class ArtifactPublic(BaseModel):
    name: str
    media_type: str
    size_bytes: int
    sha256: str
    url: str


class JobPublic(BaseModel):
    id: str
    kind: Literal["compress", "analyze", "finetune"]
    status: JobStatusName
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int = 0
    progress: Progress = Field(default_factory=lambda: Progress())
    spec: dict[str, Any] = Field(description="The spec as the core validated it, with the seed used.")
    input: InputPublic
    error: Problem | None = None
    artifacts: list[ArtifactPublic] = Field(default_factory=list)
    report_url: str | None = None
    expires_at: datetime | None = None


class JobList(BaseModel):
    items: list[JobPublic]
    next_cursor: str | None = Field(
        default=None, description="Pass as ?cursor= for the next page; null at the end."
    )


class WorkerPublic(BaseModel):
    name: str
    device: str | None = None
    last_seen: datetime
    alive: bool


class WorkerList(BaseModel):
    alive: int
    workers: list[WorkerPublic]


class Limits(BaseModel):
    max_upload_bytes: int
    max_calibration_bytes: int
    max_params: int
    job_time_limit_s: int
    rate_limit_requests: int
    rate_limit_window_s: int
    prefer_wait_max_s: float


class Capabilities(BaseModel):
    formats: list[str]
    ops: list[str]
    kinds: list[str]
    granularities: list[str]
    prune_methods: list[str]
    quantize_methods: list[str]
    bits: dict[str, int]
    devices: list[str]
    artifacts: list[str]
    webhook_events: list[str]
    limits: Limits
    versions: dict[str, str]
    algorithm_version: str


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(default_factory=dict)


# ---- conversion -----------------------------------------------------------------------------------
def job_url(job_id: str) -> str:
    return f"/v1/jobs/{job_id}"


def to_public(job: Job) -> JobPublic:
    """``workers.jobs.Job`` -> ``JobPublic``: adds URLs, drops internal fields (owner, report body, keys)."""
    base = job_url(job.id)
    return JobPublic(
        id=job.id,
        kind=job.kind,
        status=job.status.value,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        attempts=job.attempts,
        progress=Progress.model_validate(job.progress.model_dump()),
        spec=job.spec,
        input=InputPublic.model_validate(job.input.model_dump()),
        error=Problem.model_validate(job.error) if job.error else None,
        artifacts=[ArtifactPublic(**a.model_dump(), url=f"{base}/artifacts/{a.name}") for a in job.artifacts],
        # A job has a report exactly when it succeeded (transitions.succeed), so this holds for a job
        # read without its report body (JobStore.get(report=False)).
        report_url=f"{base}/report" if job.status is JobStatus.SUCCEEDED else None,
        expires_at=job.expires_at,
    )


class WebhookEvent(BaseModel):
    """The body of every webhook POST (Standard Webhooks payload structure: type, timestamp, data)."""

    type: EventName
    timestamp: datetime
    data: JobPublic = Field(description="The job at the time of the event, as GET /v1/jobs/{id} shows it.")
