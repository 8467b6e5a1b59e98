"""The SSRF guard for callback URLs: resolve once, allow only public unicast addresses, pin the answer.

- **Policy** (``refusal``): an address is allowed only if ``ipaddress``'s ``is_global`` holds and it
  is not multicast, and, for IPv6 forms that carry an IPv4 address, the embedded IPv4 is allowed
  too: IPv4-mapped ``::ffff:0:0/96``, 6to4 ``2002::/16`` (RFC 3056), NAT64 ``64:ff9b::/96``
  (RFC 6052) and Teredo ``2001::/32`` (RFC 4380). The deprecated IPv4-compatible ``::/96``, the
  local-use NAT64 prefix ``64:ff9b:1::/48`` (RFC 8215) and SIIT ``::ffff:0:0:0/96`` are refused
  outright: what they reach depends on the local network. ``is_global`` already excludes
  carrier-grade NAT ``100.64.0.0/10`` (where a cloud metadata endpoint lives), which
  ``is_private`` does not.
- **Pinning** (``resolve_target``): the host is resolved once, every answer is checked, and the
  caller connects to the checked address (``deliver`` sends ``Host`` and TLS SNI/certificate
  checks for the name), so a DNS answer that changes between check and use (rebinding) is never
  contacted.
- Hosts in ``allow_hosts`` skip the policy (not the pinning): a deployment's own receivers.

Ref: OWASP "Server-Side Request Forgery Prevention Cheat Sheet" (allow-list of public addresses,
DNS pinning); IANA IPv4/IPv6 Special-Purpose Address Registries (RFC 6890).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_REFUSED_V6 = tuple(
    ipaddress.ip_network(n)
    for n in ("::/96", "64:ff9b:1::/48", "::ffff:0:0:0/96")  # IPv4-compatible, local NAT64, SIIT
)


class WebhookTargetError(ValueError):
    """The callback URL is malformed or points at a refused address (SSRF guard)."""


@dataclass(frozen=True)
class Target:
    """A checked callback: connect to ``address``, present ``host`` (Host header, SNI)."""

    scheme: str
    host: str  # the name from the URL, lower-case (IPv6 literals without brackets)
    port: int
    address: IPAddress  # the resolved, checked address to connect to


def refusal(addr: IPAddress) -> str | None:
    """Why ``addr`` is not a public unicast address, or None when it is."""
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.scope_id:
            return "a scoped IPv6 address"
        if any(addr in net for net in _REFUSED_V6):
            return "an IPv4-compatible, local-use NAT64 or SIIT IPv6 address"
        embedded: ipaddress.IPv4Address | None = None
        if addr.ipv4_mapped is not None:
            embedded = addr.ipv4_mapped
        elif addr.sixtofour is not None:
            embedded = addr.sixtofour
        elif addr.teredo is not None:
            embedded = addr.teredo[1]
        elif addr in _NAT64:
            embedded = ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
        if embedded is not None:
            inner = refusal(embedded)
            if inner is not None:
                return f"an IPv6 address embedding {embedded} ({inner})"
    if addr.is_multicast:
        return "a multicast address"
    if not addr.is_global:
        return "not a public address"
    return None


def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError) as exc:
        raise WebhookTargetError(f"callback host {host!r} does not resolve") from exc
    out: list[IPAddress] = []
    for info in infos:
        addr = ipaddress.ip_address(str(info[4][0]))  # "fe80::1%eth0" keeps its scope (refused)
        if addr not in out:
            out.append(addr)
    if not out:
        raise WebhookTargetError(f"callback host {host!r} does not resolve")
    return out


def resolve_target(url: str, allow_hosts: Iterable[str] = ()) -> Target:
    """Check ``url`` and pin its address; raise ``WebhookTargetError`` when it is refused.

    Every address the name resolves to must pass (a name with one private answer among public ones
    is refused); the first is the one to connect to.
    """
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise WebhookTargetError(f"callback url is malformed: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookTargetError("callback url must be an absolute http(s) URL")
    if parts.username or parts.password:
        raise WebhookTargetError("callback url must not contain credentials")
    host = parts.hostname.lower()
    addresses = _resolve(host, port)
    if host not in {h.lower() for h in allow_hosts}:
        for addr in addresses:
            why = refusal(addr)
            if why is not None:
                raise WebhookTargetError(
                    f"callback host {host!r} resolves to {addr}, {why}; "
                    "add it to NETSHRINK_WEBHOOK_ALLOW_HOSTS to allow it"
                )
    return Target(scheme=parts.scheme, host=host, port=port, address=addresses[0])


def check_target(url: str, allow_hosts: Iterable[str] = ()) -> None:
    """``resolve_target`` for callers that only need the verdict (the API at submit time)."""
    resolve_target(url, allow_hosts)


__all__ = ["Target", "WebhookTargetError", "check_target", "refusal", "resolve_target"]
