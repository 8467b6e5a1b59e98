"""Job event webhooks: Standard Webhooks signing, SSRF guard, one HTTP delivery attempt.

- Signing: ``webhook-id``, ``webhook-timestamp``, ``webhook-signature: v1,<b64 HMAC-SHA256 of
  id.timestamp.body>`` with the API key's ``whsec_`` secret (``standardwebhooks.Webhook.sign``).
  The id is fixed when the event is created, so every retry carries the same id (receivers dedupe).
- SSRF: the callback host is resolved and refused if *any* address is loopback, link-local,
  private, reserved, multicast or unspecified, unless the host is in ``webhook_allow_hosts``.
  The check runs at submit time (API) and again before each delivery (DNS may have changed).
- Retries (exponential backoff) are the delivery task's job (``workers/tasks.py``).
Ref: https://www.standardwebhooks.com/ (spec §"Signature scheme"); docs/api.md "Webhooks";
OWASP SSRF Prevention Cheat Sheet.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import secrets
import socket
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from standardwebhooks.webhooks import Webhook

from netshrink.workers.jobs import LEASE_FIELDS, Job, utcnow

USER_AGENT = "netshrink-webhooks/1"


class WebhookTargetError(ValueError):
    """The callback URL is malformed or points at a refused address (SSRF guard)."""


class WebhookDeliveryError(Exception):
    """One delivery attempt failed (network error or non-2xx); the task retries it."""


def new_webhook_secret() -> str:
    """A fresh Standard Webhooks secret: ``whsec_`` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def _is_refused(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return bool(
        addr.is_loopback
        or addr.is_link_local
        or addr.is_private
        or addr.is_reserved
        or addr.is_multicast
        or addr.is_unspecified
    )


def check_target(url: str, allow_hosts: Iterable[str] = ()) -> None:
    """Raise ``WebhookTargetError`` unless ``url`` is an http(s) URL to a public address.

    Hosts in ``allow_hosts`` (exact, case-insensitive) skip the address check.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookTargetError("callback url must be an absolute http(s) URL")
    if parts.username or parts.password:
        raise WebhookTargetError("callback url must not contain credentials")
    host = parts.hostname.lower()
    if host in {h.lower() for h in allow_hosts}:
        return
    try:
        infos = socket.getaddrinfo(host, parts.port or (443 if parts.scheme == "https" else 80))
    except (socket.gaierror, UnicodeError) as exc:
        raise WebhookTargetError(f"callback host {host!r} does not resolve") from exc
    for info in infos:
        addr = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if _is_refused(addr):
            raise WebhookTargetError(
                f"callback host {host!r} resolves to a non-public address ({addr}); "
                "add it to NETSHRINK_WEBHOOK_ALLOW_HOSTS to allow it"
            )


def build_event(event_type: str, job: Job) -> dict[str, Any]:
    """The event body: ``{type, timestamp, data}`` (Standard Webhooks payload structure)."""
    data = job.model_dump(
        mode="json", exclude={"report", "idempotency_key", "spec", "callback", *LEASE_FIELDS}
    )
    return {"type": event_type, "timestamp": utcnow().isoformat(), "data": data}


def new_message_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def sign_headers(secret: str, msg_id: str, timestamp: datetime, body: str) -> dict[str, str]:
    """The three Standard Webhooks headers for ``body``."""
    signature = Webhook(secret).sign(msg_id=msg_id, timestamp=timestamp, data=body)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": signature,
    }


def deliver(
    url: str,
    secret: str,
    payload: dict[str, Any],
    *,
    msg_id: str,
    timeout_s: float = 10.0,
    allow_hosts: Iterable[str] = (),
) -> int:
    """POST one signed event; return the HTTP status. Raises ``WebhookTargetError`` (permanent:
    do not retry) or ``WebhookDeliveryError`` (transient: retry). Redirects are not followed."""
    check_target(url, allow_hosts)
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True)
    headers = sign_headers(secret, msg_id, utcnow(), body)
    headers |= {"content-type": "application/json", "user-agent": USER_AGENT}
    try:
        with httpx.Client(timeout=timeout_s, follow_redirects=False) as client:
            response = client.post(url, content=body.encode(), headers=headers)
    except httpx.HTTPError as exc:
        raise WebhookDeliveryError(f"delivery to {url} failed: {type(exc).__name__}") from exc
    if not 200 <= response.status_code < 300:
        raise WebhookDeliveryError(f"delivery to {url} answered {response.status_code}")
    return response.status_code


def backoff_s(retry: int, base_s: float, cap_s: float = 3600.0) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base·2^retry)].
    Ref: AWS Architecture Blog, "Exponential Backoff And Jitter" (2015)."""
    return secrets.SystemRandom().uniform(0.0, min(cap_s, base_s * 2**retry))


__all__ = [
    "WebhookDeliveryError",
    "WebhookTargetError",
    "backoff_s",
    "build_event",
    "check_target",
    "deliver",
    "new_message_id",
    "new_webhook_secret",
    "sign_headers",
]
