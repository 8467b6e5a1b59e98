"""API keys: generation, hashing, startup policy and per-request authentication.

Keys are ``ns_`` + 43 url-safe characters (256 random bits). Only ``sha256(key)`` is stored (in
the job store's API-key records). A fast unsalted hash is the right tool here, unlike for
passwords: a slow KDF (bcrypt/argon2) defends *low-entropy* secrets against offline guessing,
whereas guessing a 256-bit key is infeasible at any hash speed, and a KDF would cost tens of
milliseconds on every request. The lookup is by hash, so no stored secret is compared in Python.

Modes (docs/api.md "Auth and limits"), decided at startup by ``auth_mode``:
- ``keys``: at least one key exists; every request needs ``Authorization: Bearer <key>``.
- ``dev``: no key and a loopback bind; requests run as owner ``dev`` and a warning is logged. As
  soon as a key is created (``netshrink keys create``) the next request requires it.
- ``disabled``: ``auth_disabled=True``; everyone is owner ``dev``.
- no key, a non-loopback bind, auth not disabled: ``AuthConfigError``, the server refuses to start.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from typing import Literal

from netshrink.service.errors import ApiError
from netshrink.service.settings import ServiceSettings
from netshrink.workers.jobs import ApiKeyRecord, JobStore
from netshrink.workers.webhooks import new_webhook_secret

log = logging.getLogger("netshrink.service.auth")

AuthMode = Literal["keys", "dev", "disabled"]
KEY_PREFIX = "ns_"
DEV_OWNER = "dev"


class AuthConfigError(RuntimeError):
    """The server would expose an unauthenticated API on a non-loopback address."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: ``owner`` scopes jobs and rate limits (the key id, or ``dev``)."""

    owner: str
    name: str = ""
    authenticated: bool = False


def hash_key(token: str) -> str:
    """sha256 hex of a bearer token (see the module docstring for why sha256 suffices)."""
    return hashlib.sha256(token.encode()).hexdigest()


def generate_key(name: str = "") -> tuple[str, ApiKeyRecord]:
    """A new key: (the token, shown once; the record to store, holding only its hash)."""
    token = KEY_PREFIX + secrets.token_urlsafe(32)
    record = ApiKeyRecord(
        id="key_" + secrets.token_hex(8),
        name=name,
        key_hash=hash_key(token),
        webhook_secret=new_webhook_secret(),
    )
    return token, record


def auth_mode(settings: ServiceSettings, store: JobStore) -> AuthMode:
    """The startup decision; raises ``AuthConfigError`` for an open non-loopback bind."""
    if settings.auth_disabled:
        log.warning("auth is DISABLED (auth_disabled=True): every caller is owner %r", DEV_OWNER)
        return "disabled"
    if any(not k.revoked for k in store.list_api_keys()):
        return "keys"
    if not settings.loopback:
        raise AuthConfigError(
            f"no API key exists and the server binds {settings.host!r} (not loopback): create one with "
            "`netshrink keys create`, bind 127.0.0.1, or set NETSHRINK_AUTH_DISABLED=true"
        )
    log.warning("no API key exists: dev mode on %s (unauthenticated, loopback only)", settings.host)
    return "dev"


def _unauthorized(detail: str) -> ApiError:
    return ApiError(
        401,
        "unauthorized",
        "Authentication required",
        detail,
        headers={"WWW-Authenticate": 'Bearer realm="netshrink"'},
    )


def authenticate(authorization: str | None, mode: AuthMode, store: JobStore) -> Principal:
    """Resolve the ``Authorization`` header to a principal, or raise 401 (problem+json).

    A presented token is always checked, whatever the mode, so a wrong key never silently runs as dev.
    """
    if authorization:
        return principal_of(store.get_api_key_by_hash(bearer_hash(authorization)))
    if mode == "disabled":
        return Principal(owner=DEV_OWNER)
    if mode == "dev" and not any(not k.revoked for k in store.list_api_keys()):
        return Principal(owner=DEV_OWNER)
    raise _unauthorized("this server requires an API key")


def bearer_hash(authorization: str) -> str:
    """The hash of the key in a present ``Authorization`` header, or 401 for another scheme."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("use 'Authorization: Bearer <api key>'")
    return hash_key(token.strip())


def principal_of(record: ApiKeyRecord | None) -> Principal:
    """The caller behind a looked-up key record, or 401 when there is none or it is revoked."""
    if record is None or record.revoked:
        raise _unauthorized("unknown or revoked API key")
    return Principal(owner=record.id, name=record.name, authenticated=True)


def authorize_metrics(
    authorization: str | None, metrics_token: str | None, mode: AuthMode, store: JobStore
) -> None:
    """``/metrics`` shows job counts across every tenant, so no tenant's API key opens it.

    With ``metrics_token`` set, a scrape must send ``Authorization: Bearer <metrics_token>``
    (Prometheus ``authorization: {credentials: ...}``). Without one, ``/metrics`` is open only where
    the API itself is (dev mode without keys, or auth disabled); in keys mode it answers 401.
    """
    if metrics_token is not None:
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(
            presented.strip().encode(), metrics_token.encode()
        ):
            raise _unauthorized("/metrics needs 'Authorization: Bearer <NETSHRINK_METRICS_TOKEN>'")
        return
    if mode == "disabled" or (mode == "dev" and not any(not k.revoked for k in store.list_api_keys())):
        return
    raise _unauthorized(
        "/metrics is closed in keys mode: set NETSHRINK_METRICS_TOKEN and scrape with it as a bearer token"
    )


__all__ = [
    "AuthConfigError",
    "AuthMode",
    "DEV_OWNER",
    "Principal",
    "auth_mode",
    "authenticate",
    "authorize_metrics",
    "bearer_hash",
    "generate_key",
    "hash_key",
    "principal_of",
]
