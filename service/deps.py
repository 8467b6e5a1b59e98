"""FastAPI dependencies. Everything a route needs comes from ``AppState`` built in ``lifespan``.

Aliases end in ``Dep`` (docs/development.md "Names"). ``PrincipalDep`` authenticates *and* charges the
caller's rate-limit window, so every authenticated route is limited the same way.

Cost (issue 13 §8, profiled with py-spy): FastAPI runs every plain ``def`` dependency in the thread
pool, one hand-off per dependency, and those hand-offs were the largest cost of a status read. So the
dependencies that only read ``app.state`` are ``async def`` (no hop), and the blocking part of
``PrincipalDep`` (a store and a rate-limit round trip) is one plain function, ``authorize``, that a
route may call inside the one worker-thread hop it makes anyway (``GET /v1/jobs/{id}`` does). In
embedded mode (``AppState.local_reads``) even that hop is skipped: a SQLite WAL read and the
in-memory limiter never wait on anything, and the hop cost ~0.5 ms of CPU per request, about half
of the route's own cost. Redis calls always leave the event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

import redis
from fastapi import Depends, Request
from prometheus_client import CollectorRegistry
from starlette.concurrency import run_in_threadpool

from netshrink.service.auth import AuthMode, Principal, authenticate
from netshrink.service.errors import ApiError
from netshrink.service.ratelimit import RateLimiter, RateLimitState
from netshrink.service.settings import ServiceSettings
from netshrink.service.status_read import RedisStatusRead
from netshrink.workers.artifacts import ArtifactStore
from netshrink.workers.jobs import Job, JobStore

Enqueue = Callable[[Job], None]
Notify = Callable[[str, Job], None]  # ``workers/tasks.webhook_notifier``


@dataclass
class AppState:
    """The clients of one app instance (``app.state.netshrink``), created in ``lifespan``."""

    settings: ServiceSettings
    store: JobStore
    artifacts: ArtifactStore
    limiter: RateLimiter
    auth_mode: AuthMode
    registry: CollectorRegistry
    enqueue: Enqueue
    notify: Notify | None = None  # webhook events the API itself causes (a queued job cancelled)
    redis: redis.Redis | None = None
    # Redis mode: GET /v1/jobs/{id} with a key in one round trip on the event loop (status_read.py).
    status_read: RedisStatusRead | None = None
    # Embedded mode: the store is SQLite in WAL mode (a read never waits for a writer) and the limiter
    # is a dict, so reads run on the event loop; a worker-thread hop costs more CPU than they do.
    local_reads: bool = False
    # Embedded mode: the broker is this process's memory:// transport. A message cannot outlive the
    # process, and the next start on the data directory enqueues every queued job again
    # (``workers/reaper.recover_embedded``), so a job is stored already marked enqueued: the outbox
    # flag's second write protects nothing here (Redis mode keeps it).
    in_process_broker: bool = False


async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.netshrink
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def get_app_settings(state: StateDep) -> ServiceSettings:
    return state.settings


async def get_store(state: StateDep) -> JobStore:
    return state.store


async def get_artifacts(state: StateDep) -> ArtifactStore:
    return state.artifacts


SettingsDep = Annotated[ServiceSettings, Depends(get_app_settings)]
StoreDep = Annotated[JobStore, Depends(get_store)]
ArtifactsDep = Annotated[ArtifactStore, Depends(get_artifacts)]


def authorize(authorization: str | None, state: AppState) -> tuple[Principal, dict[str, str]]:
    """Authenticate (401) and rate-limit (429): (the caller, its ``RateLimit-*`` headers).

    Blocking (a store lookup and, with Redis, a round trip): call it from a worker thread.
    """
    principal = authenticate(authorization, state.auth_mode, state.store)
    return principal, admitted(state.limiter.hit(principal.owner), state.settings.rate_limit_window_s)


def admitted(limit: RateLimitState, window_s: int) -> dict[str, str]:
    """The ``RateLimit-*`` headers of an allowed hit, or 429 with them."""
    if not limit.allowed:
        raise ApiError(
            429,
            "rate-limited",
            "Too many requests",
            f"at most {limit.limit} requests per {window_s} s; retry later",
            headers=limit.headers(),
        )
    return limit.headers()


async def get_principal(request: Request, state: StateDep) -> Principal:
    """``authorize`` (in a worker thread unless ``local_reads``; in Redis mode with a key, one script
    on the event loop: ``status_read.py``); adds ``RateLimit-*`` headers."""
    authorization = request.headers.get("authorization")
    if state.status_read is not None and authorization:  # Redis mode: one round trip, no thread
        principal, limit, _ = await state.status_read.read(authorization)
        headers = admitted(limit, state.settings.rate_limit_window_s)
    elif state.local_reads:
        principal, headers = authorize(authorization, state)
    else:
        principal, headers = await run_in_threadpool(authorize, authorization, state)
    request.state.ratelimit_headers = headers  # on every response, its own or not (ratelimit_headers.py)
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]

__all__ = [
    "AppState",
    "ArtifactsDep",
    "Enqueue",
    "PrincipalDep",
    "SettingsDep",
    "StateDep",
    "StoreDep",
    "admitted",
    "authorize",
    "get_state",
]
