"""Job event webhooks: Standard Webhooks signing, SSRF guard, one HTTP delivery attempt.

- Signing: ``webhook-id``, ``webhook-timestamp``, ``webhook-signature: v1,<b64 HMAC-SHA256 of
  id.timestamp.body>`` with the API key's ``whsec_`` secret (``standardwebhooks.Webhook.sign``).
  The id is fixed when the event is created, so every retry carries the same id (receivers dedupe).
- SSRF (``workers/ssrf.py``): the callback host is resolved and refused unless every address is
  public unicast (``is_global``, embedded IPv4 forms included), unless the host is in
  ``webhook_allow_hosts``. The check runs at submit time (API) and again before each delivery,
  and the delivery connects to the address it checked (pinned), so DNS rebinding cannot redirect it.
- Retries (exponential backoff) are the delivery task's job (``workers/tasks.py``).
Ref: https://www.standardwebhooks.com/ (spec §"Signature scheme"); docs/api.md "Webhooks";
OWASP SSRF Prevention Cheat Sheet.
"""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook

from netshrink.workers.jobs import INTERNAL_FIELDS, Job, JobStatus, utcnow
from netshrink.workers.ssrf import Target, WebhookTargetError, check_target, resolve_target

USER_AGENT = "netshrink-webhooks/1"


class WebhookDeliveryError(Exception):
    """One delivery attempt failed (network error or non-2xx); the task retries it."""


def new_webhook_secret() -> str:
    """A fresh Standard Webhooks secret: ``whsec_`` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


PUBLIC_FIELDS = frozenset(
    {"id", "kind", "status", "created_at", "started_at", "finished_at", "attempts", "progress", "spec"}
    | {"input", "error", "artifacts", "expires_at"}
)  # JobPublic's, less its URLs (added below); tests/service/test_webhook_payload.py holds them equal


def build_event(event_type: str, job: Job) -> dict[str, Any]:
    """The event body: ``{type, timestamp, data}`` (Standard Webhooks payload structure); ``data`` is
    the job as ``GET /v1/jobs/{id}`` shows it (JobPublic, URLs included), never the owner's key id
    or other internal fields (until 2026-12-05 it lacked ``spec`` and the URLs and carried ``owner``,
    ``cancel_requested``, ``has_calibration``, ``has_architecture``: found by probing)."""
    data = job.model_dump(mode="json", include=set(PUBLIC_FIELDS - INTERNAL_FIELDS))
    base = f"/v1/jobs/{job.id}"
    for artifact in data["artifacts"]:
        artifact["url"] = f"{base}/artifacts/{artifact['name']}"
    data["report_url"] = f"{base}/report" if job.status is JobStatus.SUCCEEDED else None
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
    target = resolve_target(url, allow_hosts)
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True)
    headers = sign_headers(secret, msg_id, utcnow(), body)
    headers |= {"content-type": "application/json", "user-agent": USER_AGENT}
    pinned, extensions = pin(url, target)
    headers["host"] = httpx.URL(url).netloc.decode("ascii")
    try:
        with httpx.Client(timeout=timeout_s, follow_redirects=False, trust_env=False) as client:
            response = client.post(pinned, content=body.encode(), headers=headers, extensions=extensions)
    except httpx.HTTPError as exc:
        raise WebhookDeliveryError(f"delivery to {url} failed: {type(exc).__name__}") from exc
    if not 200 <= response.status_code < 300:
        raise WebhookDeliveryError(f"delivery to {url} answered {response.status_code}")
    return response.status_code


def pin(url: str, target: Target) -> tuple[httpx.URL, dict[str, str]]:
    """``url`` with its host replaced by the checked address, and the request extensions that keep
    TLS on the name (SNI and certificate check against ``target.host``, not the IP)."""
    pinned = httpx.URL(url).copy_with(host=str(target.address))
    return pinned, ({"sni_hostname": target.host} if target.scheme == "https" else {})


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
    "pin",
    "resolve_target",
    "sign_headers",
]
