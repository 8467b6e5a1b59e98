"""RFC 9457 problem bodies stored in ``job.error`` when a job fails.

The HTTP status map for synchronous errors lives in ``service/errors.py``; a *failed job* only
needs the body: 422 for a ``CompressionError`` (the input was processable but not compressible as
asked), 500 for anything else (a bug; the detail never contains a stack trace).
Ref: RFC 9457 §3 (members ``type``, ``title``, ``status``, ``detail``); docs/api.md "Errors".
"""

from __future__ import annotations

from typing import Any

from netshrink.compression.errors import CompressionError

PROBLEM_BASE = "https://netshrink.dev/problems/"


def problem(slug: str, title: str, status: int, detail: str, **extra: Any) -> dict[str, Any]:
    """A problem dict with ``type`` = PROBLEM_BASE + slug, plus any extension members."""
    body: dict[str, Any] = {"type": PROBLEM_BASE + slug, "title": title, "status": status, "detail": detail}
    body.update({k: v for k, v in extra.items() if v is not None})
    return body


def from_error(exc: CompressionError, *, status: int = 422) -> dict[str, Any]:
    """The problem for a core error; ``field`` becomes an ``errors[]`` entry, ``nodes`` is kept."""
    errors = [{"field": exc.field, "detail": exc.detail}] if exc.field else None
    return problem(exc.slug, exc.title, status, exc.detail, errors=errors, nodes=exc.nodes or None)


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


__all__ = ["PROBLEM_BASE", "from_error", "internal", "problem", "time_limit", "too_many_attempts"]
