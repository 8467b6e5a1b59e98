"""Worker-side settings: one pydantic-settings class, read through a cached ``get_settings()``.

Every field is read from the environment with the ``NETSHRINK_`` prefix (``NETSHRINK_REDIS_URL``,
``NETSHRINK_DATA_DIR``, ...). Units are in the names (``_s`` seconds, ``_bytes`` bytes).

``redis_url=None`` selects the embedded single-machine mode: SQLite job store under ``data_dir``,
an in-process broker and a solo worker thread (``workers/celery_app.py``).
Ref: docs/development.md "Settings and errors"; docs/api.md "Auth and limits".
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DAY_S = 24 * 3600
MIB = 1024 * 1024

if TYPE_CHECKING:
    from netshrink.compression.graph.loading import LoadLimits


class WorkerSettings(BaseSettings):
    """Settings shared by the worker processes, the job store and the artifact store."""

    model_config = SettingsConfigDict(env_prefix="NETSHRINK_", extra="ignore", frozen=True)

    redis_url: str | None = None  # None: embedded mode (SQLite + in-process broker)
    data_dir: Path = Path("./var/netshrink")  # uploads, artifacts, SQLite database
    redis_key_prefix: str = "netshrink:"  # every Redis key the job store writes starts with this

    job_time_limit_s: int = Field(default=1800, gt=0)  # hard kill of a task (Celery task_time_limit)
    job_soft_time_limit_s: int = Field(default=1700, gt=0)  # SoftTimeLimitExceeded inside the task
    visibility_timeout_s: int = Field(default=3600, gt=0)  # broker redelivery; must exceed time limit
    max_attempts: int = Field(default=3, ge=1)  # a job that keeps killing its worker fails after this
    artifact_retention_s: int = Field(default=7 * DAY_S, gt=0)  # terminal jobs + files expire after this
    idempotency_ttl_s: int = Field(default=DAY_S, ge=DAY_S)  # IETF Idempotency-Key: kept ≥ 24 h
    retention_interval_s: int = Field(default=3600, gt=0)  # how often the worker runs cleanup
    heartbeat_ttl_s: int = Field(default=60, gt=0)  # a worker record older than this counts as dead
    # Crash recovery (README "Crash recovery"): a running job's lease is renewed every
    # lease_heartbeat_s and lasts 2 × that; every reaper_interval_s the reaper takes back jobs whose
    # lease expired. A crashed job is queued again within 2 × lease_heartbeat_s + reaper_interval_s.
    lease_heartbeat_s: float = Field(default=10.0, gt=0)
    reaper_interval_s: float = Field(default=15.0, gt=0)
    # A queued job whose message the API never recorded as sent (it died between its store write and
    # the enqueue) is enqueued by the reaper once it is this old: within dispatch_grace_s +
    # reaper_interval_s of its creation. Longer than a healthy API takes to enqueue (milliseconds);
    # a duplicate message, should it ever be shorter, is harmless.
    dispatch_grace_s: float = Field(default=10.0, gt=0)
    store_retry_s: float = Field(default=30.0, ge=0)  # a worker rides out a store outage this long

    # Input limits, read by BOTH the API (at submit) and the worker (when it loads the job's files),
    # so a job the API accepted is never refused by the worker for size.
    max_upload_bytes: int = Field(default=512 * MIB, gt=0)  # the model file
    max_unzipped_bytes: int = Field(default=2048 * MIB, gt=0)  # declared array data of a .pt/.npz/.npy
    max_params: int = Field(default=200_000_000, gt=0)  # weights in one uploaded model

    device: Literal["auto", "cpu", "cuda"] = "auto"  # what a worker process offers
    torch_threads: int = Field(default=1, ge=1)  # torch.set_num_threads in the worker

    # Hosts exempt from the SSRF guard; the env var is comma-separated ("127.0.0.1,hooks.internal").
    webhook_allow_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    webhook_max_retries: int = Field(default=5, ge=0)
    webhook_backoff_base_s: float = Field(default=2.0, gt=0)  # delay = base * 2**retry (capped)
    webhook_dev_secret: str | None = None  # signs webhooks of "dev" (no API key) jobs; None: not sent
    webhook_progress_interval_s: float = Field(default=5.0, ge=0)  # throttle for job.progress events

    @field_validator("webhook_allow_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [h.strip() for h in value.split(",") if h.strip()]
        return value

    @model_validator(mode="after")
    def _check_limits(self) -> WorkerSettings:
        if self.job_soft_time_limit_s > self.job_time_limit_s:
            raise ValueError("job_soft_time_limit_s must not exceed job_time_limit_s")
        if self.visibility_timeout_s <= self.job_time_limit_s:
            # Otherwise Redis redelivers a still-running job to a second worker.
            raise ValueError("visibility_timeout_s must be longer than job_time_limit_s")
        return self

    def load_limits(self) -> LoadLimits:
        """The core's ``LoadLimits`` from these settings (the core is imported late: it pulls in torch)."""
        from netshrink.compression.graph.loading import LoadLimits

        return LoadLimits(
            max_file_bytes=self.max_upload_bytes,
            max_decompressed_bytes=self.max_unzipped_bytes,
            max_params=self.max_params,
        )

    @property
    def lease_s(self) -> float:
        """How long a lease lasts without renewal: two heartbeats, so one late renewal is harmless."""
        return 2 * self.lease_heartbeat_s

    @property
    def recovery_bound_s(self) -> float:
        """The documented bound: a crashed job is queued again at most this long after the crash."""
        return self.lease_s + self.reaper_interval_s

    @property
    def dispatch_bound_s(self) -> float:
        """The documented bound: a job whose API died before enqueueing it is enqueued this soon."""
        return self.dispatch_grace_s + self.reaper_interval_s

    @property
    def embedded(self) -> bool:
        """True when no Redis is configured: single-machine mode."""
        return self.redis_url is None

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "jobs.sqlite3"

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "jobs"


@lru_cache(maxsize=1)
def get_settings() -> WorkerSettings:
    """The process-wide settings, read once from the environment (tests call ``cache_clear()``)."""
    return WorkerSettings()


__all__ = ["WorkerSettings", "get_settings"]
