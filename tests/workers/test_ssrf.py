"""The SSRF guard (issue 13 §5): public unicast only, embedded IPv4 forms, and a pinned address so a
resolver that changes its answer between the check and the connection (DNS rebinding) is harmless."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from webhook_receiver import webhook_receiver  # tests/workers is on sys.path

from netshrink.workers.jobs import Job
from netshrink.workers.ssrf import WebhookTargetError, check_target, resolve_target
from netshrink.workers.webhooks import WebhookDeliveryError, build_event, deliver, new_webhook_secret


@pytest.mark.parametrize(
    "host",
    [
        "100.64.0.1",  # carrier-grade NAT (is_private is False here)
        "100.100.100.200",  # a cloud metadata address inside 100.64/10
        "[2002:7f00:1::]",  # 6to4 of 127.0.0.1
        "[2002:a9fe:a9fe::]",  # 6to4 of 169.254.169.254
        "[64:ff9b::7f00:1]",  # NAT64 of 127.0.0.1
        "[64:ff9b::a9fe:a9fe]",  # NAT64 of 169.254.169.254
        "[64:ff9b:1::808:808]",  # local-use NAT64 prefix (RFC 8215)
        "[::ffff:10.0.0.1]",  # IPv4-mapped
        "[::127.0.0.1]",  # IPv4-compatible (is_global is True for it)
        "[::ffff:0:7f00:1]",  # SIIT
        "[2001:0:4136:e378:8000:63bf:3fff:fdd2]",  # Teredo
        "224.0.0.1",  # multicast (is_global is True for it)
        "[ff0e::1]",
        "240.0.0.1",
        "255.255.255.255",
        "192.0.2.1",  # TEST-NET-1
        "198.18.0.1",  # benchmarking
        "[fc00::1]",
        "[fe80::1]",
        "127.0.0.1",
        "0.0.0.0",
        "[::]",
    ],
)
def test_non_public_addresses_are_refused(host: str) -> None:
    with pytest.raises(WebhookTargetError):
        check_target(f"http://{host}/hook")


@pytest.mark.parametrize(
    "host",
    [
        "93.184.216.34",
        "[2606:4700:4700::1111]",
        "[2002:5db8:d822::]",  # 6to4 of a public IPv4
        "[64:ff9b::5db8:d822]",  # NAT64 of a public IPv4
    ],
)
def test_public_addresses_are_allowed(host: str) -> None:
    target = resolve_target(f"https://{host}:8443/hook")
    assert str(target.address) == host.strip("[]") and target.port == 8443


@pytest.mark.parametrize("url", ["http://[::1/h", "http://h:99999/h", "http://h:x/h"])
def test_malformed_urls_are_refused_not_raised(url: str) -> None:
    with pytest.raises(WebhookTargetError):
        check_target(url)


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str, list[str]], list[str]]]:
    """A resolver stub for chosen names: each lookup of a name returns its next answer (the last one
    repeats); every other name goes to the real resolver. Returns the log of names looked up."""
    real = socket.getaddrinfo
    answers: dict[str, list[str]] = {}
    looked_up: list[str] = []

    def stub(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host in answers:
            looked_up.append(host)
            queue = answers[host]
            ip = queue.pop(0) if len(queue) > 1 else queue[0]
            family = socket.AF_INET6 if ":" in ip else socket.AF_INET
            return [(family, socket.SOCK_STREAM, 6, "", (ip, int(port)))]
        return real(host, port, *args, **kwargs)

    def program(name: str, ips: list[str]) -> list[str]:
        answers[name] = list(ips)
        return looked_up

    monkeypatch.setattr(socket, "getaddrinfo", stub)
    yield program


def test_dns_rebinding_cannot_redirect_a_delivery(
    resolver: Callable[[str, list[str]], list[str]], make_job: Callable[..., Job]
) -> None:
    """The name answers a public address first (the check passes), then 127.0.0.1, where a receiver
    listens. Unpinned, the HTTP client would resolve again and post to the receiver; pinned, it
    connects to the address it checked, and the receiver never hears anything."""
    with webhook_receiver() as rx:
        port = urlsplit(rx.url).port
        looked_up = resolver("rebind.test", ["93.184.216.34", "127.0.0.1"])
        with pytest.raises(WebhookDeliveryError):
            deliver(
                f"http://rebind.test:{port}/hooks",
                new_webhook_secret(),
                build_event("job.failed", make_job()),
                msg_id="m",
                timeout_s=1.0,
            )
        assert rx.requests == []
    assert looked_up == ["rebind.test"]  # resolved once: by the check, never again by the client


def test_a_pinned_delivery_keeps_the_name_in_the_host_header(
    resolver: Callable[[str, list[str]], list[str]], make_job: Callable[..., Job]
) -> None:
    with webhook_receiver() as rx:
        port = urlsplit(rx.url).port
        looked_up = resolver("hooks.test", ["127.0.0.1", "10.9.9.9"])
        status = deliver(
            f"http://hooks.test:{port}/hooks",
            new_webhook_secret(),
            build_event("job.succeeded", make_job()),
            msg_id="m",
            allow_hosts=["hooks.test"],  # policy exempt, still pinned
        )
        assert status == 204
        (req,) = rx.wait_for(1)
    assert req.headers["host"] == f"hooks.test:{port}"
    assert looked_up == ["hooks.test"]


def test_one_private_answer_among_public_ones_is_refused(
    resolver: Callable[[str, list[str]], list[str]],
) -> None:
    resolver("mixed.test", ["93.184.216.34"])
    check_target("http://mixed.test/h")
    real = socket.getaddrinfo

    def two(host: Any, port: Any, *a: Any, **k: Any) -> Any:
        if host == "two.test":
            return [
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", port)),
            ]
        return real(host, port, *a, **k)

    socket.getaddrinfo = two  # restored by the resolver fixture's monkeypatch
    with pytest.raises(WebhookTargetError, match="10.0.0.7"):
        check_target("http://two.test/h")


def test_https_pins_the_address_and_keeps_sni_on_the_name(
    resolver: Callable[[str, list[str]], list[str]],
) -> None:
    from netshrink.workers.webhooks import pin

    resolver("hooks.example", ["93.184.216.34"])
    url = "https://hooks.example:8443/a?b=1"
    pinned, ext = pin(url, resolve_target(url))
    assert str(pinned) == "https://93.184.216.34:8443/a?b=1"
    assert ext == {"sni_hostname": "hooks.example"}  # TLS: SNI and certificate check on the name
