"""API-process settings: the worker settings plus what only the HTTP API needs.

One pydantic-settings class per process, typed fields with units in the names, read through a
cached ``get_settings()`` (``NETSHRINK_`` environment prefix). Ref: docs/development.md "Settings and errors";
docs/api.md "Auth and limits".
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from netshrink.workers.settings import WorkerSettings

MIB = 1024 * 1024


class ServiceSettings(WorkerSettings):
    """Everything the API process reads; inherits the job-store/storage settings of the workers."""

    model_config = SettingsConfigDict(env_prefix="NETSHRINK_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"  # bind address; decides dev mode vs refuse-to-start without keys
    port: int = Field(default=8000, ge=1, le=65535)
    embedded_worker: bool = True  # embedded mode: run the Celery worker thread inside the API process
    auth_disabled: bool = False  # explicit opt-out: serve a non-loopback bind without API keys

    # max_upload_bytes, max_unzipped_bytes and max_params are WorkerSettings fields: the API and
    # the worker load the same files with the same limits (``load_limits()``).
    max_calibration_bytes: int = Field(default=256 * MIB, gt=0)  # the calibration .npz
    max_json_field_bytes: int = Field(default=1 * MIB, gt=0)  # spec / architecture form fields

    # Bearer token for /metrics (cross-tenant counts): required in keys mode, where no API key opens it.
    metrics_token: SecretStr | None = None

    rate_limit_requests: int = Field(default=120, gt=0)  # per API key ...
    rate_limit_window_s: int = Field(default=60, gt=0)  # ... per fixed window

    prefer_wait_max_s: float = Field(default=30.0, ge=0)  # cap on ``Prefer: wait=N``
    retry_after_s: int = Field(default=2, ge=1)  # polling hint for jobs that are not terminal
    page_size_max: int = Field(default=100, ge=1)

    # Fault injection for tests/faults/test_api_crash.py ONLY: the API process SIGKILLs itself right
    # after storing a new job, before enqueueing it (the crash gap the reaper closes).
    fault_kill_after_store_write: bool = False

    @property
    def loopback(self) -> bool:
        """True when ``host`` only accepts local connections (dev mode is allowed there)."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


@lru_cache(maxsize=1)
def get_settings() -> ServiceSettings:
    """The process-wide API settings, read once from the environment (tests call ``cache_clear()``)."""
    return ServiceSettings()


__all__ = ["ServiceSettings", "get_settings"]
