"""Webhooks: Standard Webhooks signatures verified by the reference verifier, SSRF guard, errors."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from webhook_receiver import webhook_receiver  # tests/workers is on sys.path

from netshrink.workers.jobs import Job
from netshrink.workers.webhooks import (
    WebhookDeliveryError,
    WebhookTargetError,
    backoff_s,
    build_event,
    check_target,
    deliver,
    new_message_id,
    new_webhook_secret,
)

LOCAL = ["127.0.0.1"]


def test_delivery_is_signed_and_verifies(make_job: Callable[..., Job]) -> None:
    secret = new_webhook_secret()
    payload = build_event("job.succeeded", make_job(owner="k1"))
    msg_id = new_message_id()
    with webhook_receiver() as rx:
        assert deliver(rx.url, secret, payload, msg_id=msg_id, allow_hosts=LOCAL) == 204
        (req,) = rx.wait_for(1)
    assert req.headers["webhook-id"] == msg_id
    assert req.headers["webhook-signature"].startswith("v1,")
    assert req.headers["content-type"] == "application/json"
    body = Webhook(secret).verify(req.body, req.headers)
    assert body == json.loads(json.dumps(payload))
    assert body["type"] == "job.succeeded" and body["data"]["id"] == payload["data"]["id"]
    assert not {"report", "idempotency_key", "owner"} & set(body["data"])  # never the key id
    with pytest.raises(WebhookVerificationError):
        Webhook(new_webhook_secret()).verify(req.body, req.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(req.body.replace(b"job.succeeded", b"job.failed"), req.headers)


def test_secret_format() -> None:
    secret = new_webhook_secret()
    assert secret.startswith("whsec_") and secret != new_webhook_secret()
    Webhook(secret)  # the reference implementation accepts it


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/h",
        "http://localhost:8080/h",
        "http://10.1.2.3/h",
        "http://192.168.0.10/h",
        "http://172.16.5.4/h",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/h",
        "http://[::ffff:127.0.0.1]/h",
        "http://0.0.0.0/h",
        "ftp://93.184.216.34/h",
        "http://user:pw@93.184.216.34/h",
        "not a url",
        "http://no-such-host.invalid/h",
    ],
)
def test_ssrf_guard_refuses(url: str) -> None:
    with pytest.raises(WebhookTargetError):
        check_target(url)


def test_ssrf_guard_allows_public_and_allow_listed_hosts() -> None:
    """A public address passes; a loopback one passes only while its host is on the allow-list
    (exact, case-insensitive): the allow-list, not a lax guard, is what lets it through."""
    assert check_target("https://93.184.216.34/hook") is None
    for url, host in (("http://127.0.0.1:9/h", "127.0.0.1"), ("http://LOCALHOST/h", "localhost")):
        with pytest.raises(WebhookTargetError, match="not a public address"):
            check_target(url)
        with pytest.raises(WebhookTargetError):
            check_target(url, allow_hosts=["other.example"])
        assert check_target(url, allow_hosts=[host.upper()]) is None


def test_refused_target_is_not_contacted(make_job: Callable[..., Job]) -> None:
    with webhook_receiver() as rx:
        with pytest.raises(WebhookTargetError):
            deliver(rx.url, new_webhook_secret(), build_event("job.failed", make_job()), msg_id="m")
        assert rx.requests == []


@pytest.mark.parametrize("code", [500, 404, 302])
def test_non_2xx_and_redirects_are_delivery_errors(code: int, make_job: Callable[..., Job]) -> None:
    with webhook_receiver(codes=[code]) as rx:
        with pytest.raises(WebhookDeliveryError):
            deliver(
                rx.url,
                new_webhook_secret(),
                build_event("job.failed", make_job()),
                msg_id="m",
                allow_hosts=LOCAL,
            )
        assert len(rx.wait_for(1)) == 1  # the redirect was not followed


def test_unreachable_is_delivery_error(make_job: Callable[..., Job]) -> None:
    with webhook_receiver() as rx:
        url = rx.url
    with pytest.raises(WebhookDeliveryError):
        deliver(
            url,
            new_webhook_secret(),
            build_event("job.failed", make_job()),
            msg_id="m",
            allow_hosts=LOCAL,
            timeout_s=2,
        )


def test_backoff_is_bounded_and_grows() -> None:
    samples = [backoff_s(r, 1.0, cap_s=10.0) for r in range(8) for _ in range(20)]
    assert all(0.0 <= s <= 10.0 for s in samples)
    assert max(backoff_s(0, 1.0) for _ in range(50)) <= 1.0
    assert max(backoff_s(3, 1.0) for _ in range(200)) > 1.0
