"""The non-job records of the job store: API keys and worker heartbeats (split from
``workers/jobs.py``, which re-exports them). Ref: docs/api.md "Auth and limits", "Operations".
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, Field


def utcnow() -> datetime:
    """Timezone-aware UTC now (``workers.jobs.utcnow`` is the same function)."""
    return datetime.now(UTC)


class ApiKeyRecord(BaseModel):
    """A stored API key: only the hash of the bearer token is kept. Ref: docs/api.md "Auth and limits"."""

    id: str
    name: str = ""
    key_hash: str  # sha256 hex of the bearer token
    webhook_secret: str  # "whsec_<base64>", signs this key's webhooks (Standard Webhooks)
    created_at: datetime = Field(default_factory=utcnow)
    revoked: bool = False


class WorkerHeartbeat(BaseModel):
    """A worker's liveness record, refreshed every few seconds; served by ``GET /v1/workers``."""

    worker_id: str
    hostname: str
    pid: int
    queues: list[str]
    device: str
    started_at: datetime
    last_seen: datetime = Field(default_factory=utcnow)
    current_job: str | None = None


__all__ = ["ApiKeyRecord", "WorkerHeartbeat"]
