"""THE one error map, and the handlers that make every non-2xx response RFC 9457 problem+json.

- ``compression.errors`` classes map to statuses through ``STATUS_BY_ERROR`` (most specific class
  wins, by MRO), so a new core subclass inherits its parent's status. The map and the problem body
  live in ``workers/problems.py`` (the service imports the workers, never the reverse), so a job
  that fails in the worker records exactly what the API would have answered.
- ``ApiError`` is the service's own failure (404 unknown job, 409 wrong state, 415, 429, ...).
- FastAPI's ``RequestValidationError`` becomes 422 with ``errors[]`` as JSON Pointers.
- Starlette's ``HTTPException`` (unknown route 404, 405 with ``Allow``) keeps its status and headers.
- The job store or Redis unreachable (``StoreUnavailableError``, ``redis.ConnectionError``/
  ``TimeoutError``) is a 503 with ``Retry-After``: an outage, not a bug; clients retry.
- The server's disk full (``OSError`` ENOSPC/EDQUOT while an upload is written) is a 507 with
  ``Retry-After``: the server's fault, not the request's, and nothing stored before is touched.
- Anything else is a 500 with a fixed detail: a stack trace never reaches the client.

Ref: docs/api.md "Errors"; RFC 9457 §3; docs/development.md "Settings and errors".
"""

from __future__ import annotations

import errno
import logging
import re
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any, Literal

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from netshrink.compression import errors as core
from netshrink.service.schemas import Problem, ProblemFieldError
from netshrink.workers import problems
from netshrink.workers.jobs import StoreUnavailableError
from netshrink.workers.problems import PROBLEM_BASE, STATUS_BY_ERROR, status_for

log = logging.getLogger("netshrink.service")

Location = Literal["body", "query", "header", "path"]
_UNION_TAG = re.compile(r"^(constrained-|function-|literal\[|dict\[|list\[|tagged-union\[|nullable\[)")
PROBLEM_MEDIA_TYPE = "application/problem+json"
UNAVAILABLE_RETRY_AFTER_S = 5  # Retry-After of a 503 while the job store / Redis is down
OUTAGE_ERRORS: tuple[type[Exception], ...] = (
    StoreUnavailableError,
    redis.ConnectionError,
    redis.TimeoutError,
)


class ApiError(Exception):
    """A failure the service itself raises; rendered as a problem with ``PROBLEM_BASE + slug``."""

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        errors: Sequence[ProblemFieldError] = (),
    ) -> None:
        super().__init__(detail or title)
        self.status, self.slug, self.title, self.detail = status, slug, title, detail
        self.headers = dict(headers or {})
        self.errors = list(errors)


def not_found(what: str = "job") -> ApiError:
    """Unknown id *and* another key's job: the same answer, so ids can't be probed."""
    return ApiError(404, "not-found", "Not found", f"No such {what}.")


def problem_from_error(exc: core.CompressionError, *, instance: str | None = None) -> Problem:
    """A core error as a problem (``workers.problems.from_error``, the worker's body too)."""
    return Problem.model_validate({**problems.from_error(exc), "instance": instance})


def problem_response(problem: Problem, headers: Mapping[str, str] | None = None) -> JSONResponse:
    body = problem.model_dump(mode="json", exclude_none=True)
    return JSONResponse(
        body, status_code=problem.status, headers=dict(headers or {}), media_type=PROBLEM_MEDIA_TYPE
    )


def _is_union_tag(part: Any) -> bool:
    """pydantic puts the union member's tag (``constrained-float``, ``dict[str,...]``) into ``loc``."""
    return isinstance(part, str) and bool(_UNION_TAG.match(part))


def _pointer(loc: Sequence[Any]) -> tuple[Location, str]:
    """FastAPI's ``loc`` tuple -> (location, JSON Pointer); ``("body", "spec", "seed")`` -> ``/spec/seed``."""
    parts = [str(p).replace("~", "~0").replace("/", "~1") for p in loc if not _is_union_tag(p)]
    where, *rest = parts or ["body"]
    location: Location = where if where in ("body", "query", "header", "path") else "body"  # type: ignore[assignment]
    if location != where:
        rest = [where, *rest]
    return location, "/" + "/".join(rest)


def validation_errors(
    raw: Sequence[Mapping[str, Any]], prefix: Sequence[Any] = ()
) -> list[ProblemFieldError]:
    """pydantic/FastAPI error dicts -> ``errors[]`` items."""
    out: list[ProblemFieldError] = []
    seen: set[tuple[str, str]] = set()
    for err in raw:
        location, pointer = _pointer([*prefix, *err.get("loc", ())])
        dotted = pointer.strip("/").replace("/", ".")
        detail = str(err.get("msg", "invalid"))
        if (pointer, detail) in seen:
            continue
        seen.add((pointer, detail))
        out.append(ProblemFieldError(detail=detail, pointer=pointer, field=dotted, location=location))
    return out


# ---- handlers ------------------------------------------------------------------------------------
async def _on_api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    problem = Problem(
        type=PROBLEM_BASE + exc.slug,
        title=exc.title,
        status=exc.status,
        detail=exc.detail,
        instance=request.url.path,
        errors=exc.errors,
    )
    return problem_response(problem, exc.headers)


async def _on_core_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, core.CompressionError)
    return problem_response(problem_from_error(exc, instance=request.url.path))


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problem = Problem(
        type=PROBLEM_BASE + "validation",
        title="The request is invalid",
        status=422,
        detail="One or more fields failed validation; see errors.",
        instance=request.url.path,
        errors=validation_errors(exc.errors()),
    )
    return problem_response(problem)


async def _on_http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    phrase = (
        HTTPStatus(exc.status_code).phrase if exc.status_code in HTTPStatus._value2member_map_ else "Error"
    )
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail != phrase else None
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(_allowed_methods(request))
    if detail is None:  # docs/api.md "Errors": every problem says what went wrong in `detail`
        detail = {
            404: f"nothing is at {request.url.path}",
            405: f"{request.method} is not allowed here; allowed: {headers.get('Allow', '')}",
        }.get(exc.status_code, phrase)
    problem = Problem(title=phrase, status=exc.status_code, detail=detail, instance=request.url.path)
    return problem_response(problem, headers)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route accepts for this path (Starlette's 405 lists only the first route's).

    Each candidate method is matched against the router, so included routers need no introspection.
    """
    allowed = []
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed


def _server_problem(
    request: Request, slug: str, title: str, status: int, detail: str, *, retry: bool
) -> JSONResponse:
    """A 5xx problem with a fixed detail (never the exception's text); ``retry``: ``Retry-After``."""
    problem = Problem(
        type=PROBLEM_BASE + slug, title=title, status=status, detail=detail, instance=request.url.path
    )
    return problem_response(problem, {"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)} if retry else None)


async def _on_outage(request: Request, exc: Exception) -> JSONResponse:
    log.warning("%s %s: backend unavailable: %s", request.method, request.url.path, exc)
    detail = "The job store is temporarily unreachable; retry later."
    return _server_problem(request, "service-unavailable", "Service unavailable", 503, detail, retry=True)


DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


async def _on_os_error(request: Request, exc: Exception) -> JSONResponse:
    """A full disk or quota is 507; any other ``OSError`` is a bug or a misconfiguration (500)."""
    if not (isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS):
        return await _on_unexpected(request, exc)
    log.error("%s %s: no space left for the upload: %s", request.method, request.url.path, exc)
    detail = "The server has no room to store this upload; retry later."
    return _server_problem(request, "insufficient-storage", "Insufficient storage", 507, detail, retry=True)


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    detail = "An unexpected error occurred; it has been logged."
    return _server_problem(request, "internal", "Internal server error", 500, detail, retry=False)


def install_error_handlers(app: FastAPI) -> None:
    """Register every handler above; called once by ``create_app``."""
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(core.CompressionError, _on_core_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    for outage in OUTAGE_ERRORS:
        app.add_exception_handler(outage, _on_outage)
    app.add_exception_handler(OSError, _on_os_error)
    app.add_exception_handler(Exception, _on_unexpected)


__all__ = [
    "PROBLEM_BASE",
    "PROBLEM_MEDIA_TYPE",
    "OUTAGE_ERRORS",
    "STATUS_BY_ERROR",
    "UNAVAILABLE_RETRY_AFTER_S",
    "ApiError",
    "install_error_handlers",
    "not_found",
    "problem_from_error",
    "problem_response",
    "status_for",
    "validation_errors",
]
