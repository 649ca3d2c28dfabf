"""Webhook targets: a subscriber's URL parsed, resolved and refused when it must not be
called (no server-side request forgery). The target is checked at registration and again
before each delivery, and the connection goes to the checked address."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from app.errors import BadRequest

__all__ = ["Target", "TargetRefused", "check_target"]


class TargetRefused(BadRequest):
    """A webhook URL this service will not call (scheme, or where it resolves)."""

    code = "WEBHOOK_TARGET_REFUSED"

    def __init__(self, reason: str) -> None:
        super().__init__(f"webhook url refused: {reason}", details={"errors": {"url": reason}})


# --- targets (no server-side request forgery) -------------------------------------------

def _refused_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why ``ip`` may not be called, or None when it is a public address."""
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped or ip.sixtofour
        if mapped is not None:
            return _refused_address(mapped)
        if ip.teredo is not None:
            return "a Teredo address"
    for name, flag in (("unspecified", ip.is_unspecified), ("loopback", ip.is_loopback),
                       ("link-local", ip.is_link_local), ("private", ip.is_private),
                       ("multicast", ip.is_multicast), ("reserved", ip.is_reserved)):
        if flag:
            return f"{ip} is a {name} address"
    if not ip.is_global:
        return f"{ip} is not a public address"
    return None


@dataclass(frozen=True)
class Target:
    """A checked webhook URL: where to connect, and what to call it."""

    scheme: str
    host: str
    port: int
    path: str
    address: str  # the resolved, checked address the connection goes to


def check_target(url: str, *, https_only: bool, allowed_hosts: Collection[str],
                 resolve: Callable[..., Any] = socket.getaddrinfo) -> Target:
    """Parse ``url``, resolve its host and refuse what must not be called.

    Every address the name resolves to is checked (a name with one private address
    among public ones is refused); numeric hosts in any form the resolver accepts
    (``2130706433``, ``0177.0.0.1``, ``::ffff:127.0.0.1``) are checked as the address
    they mean. Hosts in ``allowed_hosts`` skip the address rules, not the scheme rule.

    Args:
        url: The subscriber's URL.
        https_only: Refuse ``http`` (production).
        allowed_hosts: Host names (lower case) that may resolve anywhere.
        resolve: ``socket.getaddrinfo``.

    Returns:
        The target, with the first checked address to connect to.

    Raises:
        TargetRefused: Bad scheme, no host, credentials in the URL, unresolvable, or an
            address that is not public.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise TargetRefused("not a valid URL") from e
    scheme = parts.scheme.lower()
    if scheme not in {"http", "https"}:
        raise TargetRefused("only http and https URLs")
    if https_only and scheme != "https":
        raise TargetRefused("only https URLs in production")
    host = (parts.hostname or "").lower()
    if not host:
        raise TargetRefused("no host")
    if parts.username or parts.password:
        raise TargetRefused("credentials in the URL")
    port = port or (443 if scheme == "https" else 80)
    try:
        infos = resolve(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as e:
        raise TargetRefused(f"{host} does not resolve") from e
    addresses = [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]
    if not addresses:
        raise TargetRefused(f"{host} does not resolve")
    if host not in allowed_hosts:
        for ip in addresses:
            reason = _refused_address(ip)
            if reason:
                raise TargetRefused(f"{reason} (allow the host in WEBHOOK_ALLOWED_HOSTS)")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(scheme, host, port, path, str(addresses[0]))

