"""The FastAPI application factory. Clients are built in ``lifespan``, never at import.

``create_app(settings)`` wires routers, the one error map and the OpenAPI customizations. The
lifespan opens the job store, the artifact store, Redis (when configured) and the Celery app,
decides the auth mode (refusing to start on an open non-loopback bind), and, in embedded mode,
runs the in-process Celery worker thread so one command serves everything. Before that worker
starts, the embedded process takes the data directory's lock and recovers from a previous crash
(``workers/reaper.recover_embedded``: running jobs taken back, queued jobs enqueued again), then
holds the lock shared, so the other processes of ``serve --workers N`` can start; its housekeeper
then runs the reaper periodically. When it stops, its queued jobs are handed back to the reaper
(``reaper.hand_back_queued``): its memory:// broker's messages die with it.
Ref: docs/development.md "Settings and errors", "Layout"; docs/api.md "Auth and limits";
issue 4 "Embedded default".
"""

from __future__ import annotations

import functools
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING

import anyio
import redis
import redis.asyncio
from fastapi import FastAPI

from netshrink.compression import __version__
from netshrink.service.auth import auth_mode
from netshrink.service.deps import AppState
from netshrink.service.errors import install_error_handlers
from netshrink.service.metrics import build_registry
from netshrink.service.openapi import build_openapi
from netshrink.service.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter
from netshrink.service.ratelimit_headers import RateLimitHeaders
from netshrink.service.routes import artifacts as artifact_routes
from netshrink.service.routes import jobs, ops, submit
from netshrink.service.settings import ServiceSettings, get_settings
from netshrink.service.status_read import RedisStatusRead
from netshrink.workers.artifacts import ArtifactStore
from netshrink.workers.celery_app import (
    EmbeddedWorker,
    create_celery_app,
    default_queues,
    enqueue_job,
    warm_producers,
)
from netshrink.workers.reaper import DataDirLock, hand_back_queued, recover_embedded
from netshrink.workers.retention import Housekeeper
from netshrink.workers.store import get_store
from netshrink.workers.store_redis import RedisJobStore
from netshrink.workers.tasks import webhook_notifier

if TYPE_CHECKING:
    from celery import Celery

    from netshrink.workers.jobs import JobStore

log = logging.getLogger("netshrink.service")

DESCRIPTION = (
    "Upload a model (ONNX or a PyTorch state dict) and a spec; get back a compressed model whose "
    "measured error is reported next to its theoretical bound. Every error is "
    "`application/problem+json` (RFC 9457)."
)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: ServiceSettings = app.state.settings
    async with AsyncExitStack() as stack:
        artifacts = ArtifactStore(settings.artifacts_dir)  # creates data_dir/jobs
        store = get_store(settings, retry_s=0.0)  # an outage is a 503 at once; clients retry
        stack.callback(store.close)
        mode = auth_mode(settings, store)  # AuthConfigError aborts startup
        client: redis.Redis | None = None
        limiter: RateLimiter
        status_read: RedisStatusRead | None = None
        if settings.redis_url:
            client = redis.Redis.from_url(settings.redis_url, socket_timeout=5)
            stack.callback(client.close)
            limiter = RedisRateLimiter(
                client, settings.rate_limit_requests, settings.rate_limit_window_s, settings.redis_key_prefix
            )
            reader = redis.asyncio.Redis.from_url(
                settings.redis_url, decode_responses=True, socket_timeout=5, socket_connect_timeout=5
            )
            stack.push_async_callback(reader.aclose)
            status_read = RedisStatusRead(reader, settings.redis_key_prefix, limiter)
        else:
            limiter = MemoryRateLimiter(settings.rate_limit_requests, settings.rate_limit_window_s)
        celery = create_celery_app(settings)
        stack.callback(celery.close)
        if settings.redis_url:
            await open_connections(store, status_read, celery)
        if settings.embedded and settings.embedded_worker:
            enqueue = partial(enqueue_job, celery)
            lock = DataDirLock(settings.data_dir)
            exclusive = await anyio.to_thread.run_sync(lock.acquire)
            stack.callback(lock.release)
            if not exclusive:  # a sibling of `serve --workers N`, or another server on this directory
                log.info("another process serves %s; start-up recovery waits for leases", settings.data_dir)
            notify = webhook_notifier(celery)
            recover_embedded(
                store, enqueue, max_attempts=settings.max_attempts, exclusive=exclusive, notify=notify
            )
            lock.share()
            # Runs after the worker stopped (exit order): its memory:// messages die with this process.
            stack.callback(hand_back_queued, store)
            worker = EmbeddedWorker(celery).start()
            stack.callback(worker.stop)
            # The embedded worker's heartbeat (GET /v1/workers), reaper and retention cleanup.
            housekeeper = Housekeeper(
                store,
                artifacts,
                settings,
                queues=default_queues(settings.device),
                enqueue=enqueue,
                notify=notify,
            )
            housekeeper.start()
            stack.callback(housekeeper.stop)
        app.state.netshrink = AppState(
            settings=settings,
            store=store,
            artifacts=artifacts,
            limiter=limiter,
            auth_mode=mode,
            registry=build_registry(store, heartbeat_ttl_s=settings.heartbeat_ttl_s),
            enqueue=partial(enqueue_job, celery),
            notify=webhook_notifier(celery),
            redis=client,
            status_read=status_read,
            local_reads=settings.redis_url is None,
            in_process_broker=settings.redis_url is None,
        )
        settle_heap()
        log.info("netshrink API ready (auth=%s, embedded=%s)", mode, settings.embedded)
        yield


async def open_connections(store: JobStore, status_read: RedisStatusRead | None, celery: Celery) -> None:
    """Redis mode: open before the first request the connections that concurrent requests use, one
    per worker thread for the store, as many for the status reads, and every broker producer.

    The redis-py and kombu pools otherwise open one (a TCP connect and a handshake; a kombu
    channel) whenever more callers than ever before use them at once, inside the request that found
    them short, and these opens went on all through a run: issue 13 §8, 20-client submits on
    ``serve --workers 2``, measured per call on the loaded 2-core machine: 50 store connections
    (40-165 ms each), 25 status-read connections (130 ms) and 19 kombu channels (52-157 ms).
    Best effort: with Redis down at start-up the app still starts (and answers 503), and the pools
    open lazily as before.
    """
    threads = int(anyio.to_thread.current_default_thread_limiter().total_tokens)
    try:
        if isinstance(store, RedisJobStore):
            await anyio.to_thread.run_sync(store.open_connections, threads)
        if status_read is not None:
            await status_read.open_connections(threads)
        await anyio.to_thread.run_sync(warm_producers, celery)
    except Exception as exc:  # redis-py's and kombu's connection errors
        log.warning("could not open the Redis connections at start-up (%s); they open on demand", exc)


@functools.cache  # once per process: a test process starts many apps, one collection is enough
def settle_heap() -> None:
    """Import what the first upload would (the core's loaders pull in torch and onnx), then move
    every object alive now out of the garbage collector's reach (``gc.freeze``).

    Issue 13 §8: with torch in the heap (~255k objects), full collections took 94–427 ms each (gc
    callbacks in the API process under 20-client submits, load average ≈ 10), a stall for every
    request in flight; they ran while the heap grew (start-up, the first upload's imports). These
    objects live as long as the process; frozen, no collection traverses them again.
    Ref: https://docs.python.org/3/library/gc.html#gc.freeze.
    """
    from netshrink.service.submission import warm_up

    warm_up()
    gc.collect()
    gc.freeze()


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    """A new app for ``settings`` (the environment's, via ``get_settings()``, when None)."""
    app = FastAPI(
        title="netshrink",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_url="/openapi.json",
    )
    app.state.settings = settings or get_settings()
    install_error_handlers(app)
    app.add_middleware(RateLimitHeaders)  # outside the exception handlers: problems get them too
    app.include_router(submit.router)  # first: POST /v1/jobs keeps its place in the document
    app.include_router(jobs.router)
    app.include_router(artifact_routes.router)
    app.include_router(ops.router)
    app.openapi = partial(build_openapi, app)  # type: ignore[method-assign]
    return app


__all__ = ["create_app", "lifespan"]
