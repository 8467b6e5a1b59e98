"""Pick the ``JobStore`` for the current settings: Redis when ``redis_url`` is set, else SQLite.

Ref: ``workers/settings.py`` (embedded mode), ``workers/jobs.py`` (protocol).
"""

from __future__ import annotations

from netshrink.workers.jobs import JobStore
from netshrink.workers.settings import WorkerSettings


def get_store(settings: WorkerSettings) -> JobStore:
    """A new store for ``settings`` (callers own it and ``close()`` it)."""
    if settings.redis_url is not None:
        from netshrink.workers.store_redis import RedisJobStore

        return RedisJobStore(
            settings.redis_url,
            retention_s=settings.artifact_retention_s,
            prefix=settings.redis_key_prefix,
            idempotency_ttl_s=settings.idempotency_ttl_s,
        )
    from netshrink.workers.store_sqlite import SQLiteJobStore

    return SQLiteJobStore(
        settings.sqlite_path,
        retention_s=settings.artifact_retention_s,
        idempotency_ttl_s=settings.idempotency_ttl_s,
    )


__all__ = ["get_store"]
