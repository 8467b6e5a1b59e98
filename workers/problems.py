"""RFC 9457 problem bodies stored in ``job.error`` when a job fails.

``STATUS_BY_ERROR`` is THE one map from ``compression.errors`` classes to HTTP statuses (most
specific class wins, by MRO). The API (``service/errors.py``) answers a synchronous core error with
it, and the worker records a failed job's problem with it, through the same ``from_error``: the
same core error gets the same ``status``, ``type`` and ``errors[]`` on both sides (a size limit is
413 whether the API or the worker found it). Anything that is not a core error is 500 (a bug; the
detail never contains a stack trace).
Ref: RFC 9457 §3 (members ``type``, ``title``, ``status``, ``detail``); docs/api.md "Errors".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from netshrink.compression import errors as core

PROBLEM_BASE = "https://netshrink.dev/problems/"

STATUS_BY_ERROR: Mapping[type[core.CompressionError], int] = {
    core.CompressionError: 422,
    core.ModelFormatError: 400,  # recognised container, unreadable bytes (unknown formats are 415)
    core.ExternalDataError: 422,  # a readable ONNX we refuse: the bytes are fine, the content is not
    core.UnsupportedModelError: 422,
    core.InvalidWeightsError: 422,
    core.ArchitectureError: 422,
    core.CalibrationError: 422,
    core.InvalidSpecError: 422,
    core.LimitExceededError: 413,
    core.CancelledError: 409,
}
_FORM_FIELDS = ("train", "validation", "calibration")  # form parts; every other field is in the spec


def problem(slug: str, title: str, status: int, detail: str, **extra: Any) -> dict[str, Any]:
    """A problem dict with ``type`` = PROBLEM_BASE + slug, plus any extension members."""
    body: dict[str, Any] = {"type": PROBLEM_BASE + slug, "title": title, "status": status, "detail": detail}
    body.update({k: v for k, v in extra.items() if v is not None})
    return body


def status_for(exc: core.CompressionError) -> int:
    """The HTTP status of a core error: the first class of its MRO present in ``STATUS_BY_ERROR``."""
    for cls in type(exc).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 422  # pragma: no cover - CompressionError itself is in the map


def from_error(exc: core.CompressionError) -> dict[str, Any]:
    """The problem for a core error, for the API's answer and a failed job's ``error`` alike:
    status from ``STATUS_BY_ERROR``; ``field`` becomes an ``errors[]`` entry with a JSON Pointer into
    the request (``/spec/prune/keep``, or ``/train/labels`` and ``/calibration/inputs`` for a form
    part's arrays: a ``CalibrationError`` names the calibration file's unless told; an ``ArchitectureError``'s
    field is a JSON Pointer inside the architecture, so ``/architecture/layers/3/body/1``); ``nodes``
    is kept."""
    errors = []
    if isinstance(exc, core.ArchitectureError) and exc.field and exc.field.startswith("/"):
        pointer = "/architecture" + exc.field
        field = pointer[1:].replace("/", ".")
        errors = [{"detail": exc.detail, "pointer": pointer, "field": field, "location": "body"}]
    elif exc.field:
        part = "calibration." if isinstance(exc, core.CalibrationError) else "spec."  # its own file's arrays
        name = exc.field if exc.field.split(".")[0] in _FORM_FIELDS else part + exc.field
        pointer = "/" + name.replace(".", "/")
        errors = [{"detail": exc.detail, "pointer": pointer, "field": name, "location": "body"}]
    return problem(exc.slug, exc.title, status_for(exc), exc.detail, errors=errors, nodes=exc.nodes or None)


def internal(job_id: str | None = None) -> dict[str, Any]:
    """An unexpected exception: no message, no traceback, only a pointer for the operator logs."""
    detail = "The worker hit an unexpected error; the operator logs have the details."
    return problem("internal", "Internal error", 500, detail, job_id=job_id)


def too_many_attempts(attempts: int, max_attempts: int) -> dict[str, Any]:
    """The job was delivered more than ``max_attempts`` times (each delivery lost its worker)."""
    detail = (
        f"The job was attempted {attempts} times (limit {max_attempts}); each attempt ended without a "
        "result, typically because the worker ran out of memory or was killed."
    )
    return problem("too-many-attempts", "The job kept crashing its worker", 500, detail)


def time_limit(limit_s: int) -> dict[str, Any]:
    """The job ran past the configured soft time limit."""
    return problem(
        "time-limit", "The job exceeded its time limit", 422, f"The job ran longer than {limit_s} s."
    )


__all__ = [
    "PROBLEM_BASE",
    "STATUS_BY_ERROR",
    "from_error",
    "status_for",
    "internal",
    "problem",
    "time_limit",
    "too_many_attempts",
]
