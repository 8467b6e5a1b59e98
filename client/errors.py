"""Exceptions the SDK raises.

NetshrinkError                 (base)
├── ApiError                   the server answered non-2xx; ``problem`` is the RFC 9457 body
├── ServerUnreachableError     no HTTP answer at all (connect error, timeout) after the retries
├── DigestMismatchError        a downloaded artifact's sha256 differs from what the server stated
└── WaitTimeoutError           ``wait`` gave up before the job reached a terminal state
"""

from __future__ import annotations

from typing import Any


class NetshrinkError(Exception):
    """Base class of every SDK error."""


class ApiError(NetshrinkError):
    """A non-2xx answer. ``problem`` holds ``{type, title, status, detail, instance, errors?}``.

    Ref: RFC 9457; docs/api.md "Errors". A body that is not problem+json is wrapped into one, so the
    fields are always there.
    """

    def __init__(self, problem: dict[str, Any]) -> None:
        self.problem = problem
        self.status = int(problem.get("status") or 0)
        self.type = str(problem.get("type") or "about:blank")
        self.title = str(problem.get("title") or "")
        self.detail = str(problem.get("detail") or "")
        self.errors: list[dict[str, Any]] = list(problem.get("errors") or [])
        super().__init__(f"{self.status} {self.title}: {self.detail}".rstrip(": "))


class ServerUnreachableError(NetshrinkError):
    """The server could not be reached (refused, DNS, timeout)."""


class DigestMismatchError(NetshrinkError):
    """A download's sha256 does not match its ``Content-Digest`` or the job's artifact list."""


class WaitTimeoutError(NetshrinkError):
    """The job was still running when ``wait``'s timeout expired; ``job`` is the last state seen."""

    def __init__(self, message: str, job: Any) -> None:
        super().__init__(message)
        self.job = job
