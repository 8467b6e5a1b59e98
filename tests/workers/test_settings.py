"""WorkerSettings: environment parsing, cross-field limits, the cached accessor."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from netshrink.workers.settings import WorkerSettings, get_settings


def test_environment_is_read_with_prefix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NETSHRINK_REDIS_URL", "redis://example:6379/2")
    monkeypatch.setenv("NETSHRINK_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("NETSHRINK_WEBHOOK_ALLOW_HOSTS", "127.0.0.1, hooks.internal")
    monkeypatch.setenv("NETSHRINK_MAX_ATTEMPTS", "5")
    s = WorkerSettings()
    assert s.redis_url == "redis://example:6379/2" and not s.embedded
    assert s.webhook_allow_hosts == ["127.0.0.1", "hooks.internal"]
    assert s.max_attempts == 5 and s.sqlite_path == tmp_path / "jobs.sqlite3"


def test_defaults_are_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NETSHRINK_REDIS_URL", raising=False)
    s = WorkerSettings()
    assert s.embedded and s.max_attempts == 3 and s.idempotency_ttl_s >= 24 * 3600
    assert s.visibility_timeout_s > s.job_time_limit_s >= s.job_soft_time_limit_s


@pytest.mark.parametrize(
    "fields",
    [
        {"job_time_limit_s": 100, "job_soft_time_limit_s": 200, "visibility_timeout_s": 300},
        {"job_time_limit_s": 100, "job_soft_time_limit_s": 50, "visibility_timeout_s": 100},
        {"idempotency_ttl_s": 3600},
        {"max_attempts": 0},
        {"device": "tpu"},
    ],
)
def test_invalid_combinations_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        WorkerSettings(**fields)  # type: ignore[arg-type]


def test_get_settings_is_cached() -> None:
    get_settings.cache_clear()
    try:
        assert get_settings() is get_settings()
    finally:
        get_settings.cache_clear()
