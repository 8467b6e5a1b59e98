"""Pick the ``JobStore`` for the current settings: Redis when ``redis_url`` is set, else SQLite.

Ref: ``workers/settings.py`` (embedded mode), ``workers/jobs.py`` (protocol).
"""

from __future__ import annotations

from netshrink.workers.jobs import JobStore
from netshrink.workers.settings import WorkerSettings


def get_store(settings: WorkerSettings, *, retry_s: float | None = None) -> JobStore:
    """A new store for ``settings`` (callers own it and ``close()`` it).

    ``retry_s``: how long a Redis store rides out a lost connection before raising
    ``StoreUnavailableError`` (default ``settings.store_retry_s``; the API passes 0 and answers 503).
    """
    if settings.redis_url is not None:
        from netshrink.workers.store_redis import RedisJobStore

        return RedisJobStore(
            settings.redis_url,
            retention_s=settings.artifact_retention_s,
            prefix=settings.redis_key_prefix,
            idempotency_ttl_s=settings.idempotency_ttl_s,
            lease_s=settings.lease_s,
            retry_s=settings.store_retry_s if retry_s is None else retry_s,
        )
    from netshrink.workers.store_sqlite import SQLiteJobStore

    return SQLiteJobStore(
        settings.sqlite_path,
        retention_s=settings.artifact_retention_s,
        idempotency_ttl_s=settings.idempotency_ttl_s,
        lease_s=settings.lease_s,
    )


__all__ = ["get_store"]
