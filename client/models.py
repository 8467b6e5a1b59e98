"""Typed views of the netshrink HTTP contract: ``JobPublic``, its artifacts and progress.

The SDK depends only on the wire format (docs/api.md "GET /v1/jobs/{id}"), never on ``service/``.
Parsing is tolerant: unknown fields are ignored and kept in ``raw``, so a newer server that adds
fields never breaks an older client.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, cast

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
JobKind = Literal["compress", "analyze", "finetune"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


@dataclass(frozen=True)
class Progress:
    """``progress {stage, layer, layers_total, fraction}``; ``fraction`` is in [0, 1]."""

    stage: str = ""
    layer: int = 0
    layers_total: int = 0
    fraction: float = 0.0

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Progress:
        d = data or {}
        return cls(
            stage=str(d.get("stage") or ""),
            layer=int(d.get("layer") or 0),
            layers_total=int(d.get("layers_total") or 0),
            fraction=float(d.get("fraction") or 0.0),
        )


@dataclass(frozen=True)
class Artifact:
    """One downloadable file: ``{name, media_type, size_bytes, sha256, url}`` (sha256 in hex)."""

    name: str
    media_type: str = "application/octet-stream"
    size_bytes: int | None = None
    sha256: str | None = None
    url: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Artifact:
        size = data.get("size_bytes")
        return cls(
            name=str(data["name"]),
            media_type=str(data.get("media_type") or "application/octet-stream"),
            size_bytes=int(size) if size is not None else None,
            sha256=data.get("sha256"),
            url=data.get("url"),
        )


@dataclass(frozen=True)
class Job:
    """A job as the server last described it (``JobPublic``).

    ``retry_after_s`` comes from the response's ``Retry-After`` header, the server's hint for when
    to poll again; it is ``None`` on terminal jobs.
    """

    id: str
    status: JobStatus
    kind: JobKind = "compress"
    created_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    attempts: int = 0
    progress: Progress = field(default_factory=Progress)
    spec: dict[str, Any] = field(default_factory=dict)
    input: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None  # RFC 9457 problem object, only when failed
    artifacts: tuple[Artifact, ...] = ()
    report_url: str | None = None
    expires_at: str | None = None
    retry_after_s: float | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def artifact(self, name: str) -> Artifact:
        """The artifact called ``name``; ``KeyError`` when the job has none by that name."""
        for a in self.artifacts:
            if a.name == name:
                return a
        raise KeyError(name)

    @classmethod
    def from_json(cls, data: dict[str, Any], *, retry_after_s: float | None = None) -> Job:
        return cls(
            id=str(data["id"]),
            status=cast(JobStatus, data["status"]),
            kind=cast(JobKind, data.get("kind") or "compress"),
            created_at=data.get("created_at"),
            started_at=data.get("started_at"),
            finished_at=data.get("finished_at"),
            attempts=int(data.get("attempts") or 0),
            progress=Progress.from_json(data.get("progress")),
            spec=dict(data.get("spec") or {}),
            input=dict(data.get("input") or {}),
            error=data.get("error"),
            artifacts=tuple(Artifact.from_json(a) for a in data.get("artifacts") or ()),
            report_url=data.get("report_url"),
            expires_at=data.get("expires_at"),
            retry_after_s=retry_after_s,
            raw=data,
        )


@dataclass(frozen=True)
class JobPage:
    """One page of ``GET /v1/jobs``; pass ``next_cursor`` back to get the next page."""

    items: tuple[Job, ...]
    next_cursor: str | None = None
