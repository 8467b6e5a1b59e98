"""FastAPI dependencies. Everything a route needs comes from ``AppState`` built in ``lifespan``.

Aliases end in ``Dep`` (docs/development.md "Names"). ``PrincipalDep`` authenticates *and* charges the
caller's rate-limit window, so every authenticated route is limited the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

import redis
from fastapi import Depends, Request, Response
from prometheus_client import CollectorRegistry

from netshrink.service.auth import AuthMode, Principal, authenticate
from netshrink.service.errors import ApiError
from netshrink.service.ratelimit import RateLimiter
from netshrink.service.settings import ServiceSettings
from netshrink.workers.artifacts import ArtifactStore
from netshrink.workers.jobs import Job, JobStore

Enqueue = Callable[[Job], None]


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
    redis: redis.Redis | None = None


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.netshrink
    return state


StateDep = Annotated[AppState, Depends(get_state)]


def get_app_settings(state: StateDep) -> ServiceSettings:
    return state.settings


def get_store(state: StateDep) -> JobStore:
    return state.store


def get_artifacts(state: StateDep) -> ArtifactStore:
    return state.artifacts


SettingsDep = Annotated[ServiceSettings, Depends(get_app_settings)]
StoreDep = Annotated[JobStore, Depends(get_store)]
ArtifactsDep = Annotated[ArtifactStore, Depends(get_artifacts)]


def get_principal(request: Request, response: Response, state: StateDep) -> Principal:
    """Authenticate (401) and rate-limit (429); adds ``RateLimit-*`` headers to the response."""
    principal = authenticate(request.headers.get("authorization"), state.auth_mode, state.store)
    limit = state.limiter.hit(principal.owner)
    if not limit.allowed:
        raise ApiError(
            429,
            "rate-limited",
            "Too many requests",
            f"at most {limit.limit} requests per {state.settings.rate_limit_window_s} s; retry later",
            headers=limit.headers(),
        )
    response.headers.update(limit.headers())
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
    "get_state",
]
