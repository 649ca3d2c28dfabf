"""Webhook targets: every server-side request forgery form is refused, on the resolved
address, and the connection goes to the address that was checked."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from app.core.webhooks import TargetRefused, check_target

REFUSED = [
    "http://127.0.0.1/hook",                 # loopback
    "http://localhost/hook",                 # loopback by name
    "http://127.8.9.10/hook",                # the rest of 127/8
    "http://2130706433/hook",                # 127.0.0.1 in decimal
    "http://0177.0.0.1/hook",                # octal
    "http://0x7f.0.0.1/hook",                # hexadecimal
    "http://127.1/hook",                     # short form
    "http://[::1]/hook",                     # IPv6 loopback
    "http://[::ffff:127.0.0.1]/hook",        # IPv4-mapped IPv6
    "http://[::ffff:169.254.169.254]/hook",  # mapped metadata
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata (link-local)
    "http://[fe80::1]/hook",                 # IPv6 link-local
    "http://10.0.0.5/hook",                  # private
    "http://172.16.3.4/hook",
    "http://192.168.1.1/hook",
    "http://100.64.0.1/hook",                # carrier-grade NAT (not global)
    "http://[fc00::1]/hook",                 # IPv6 unique local
    "http://0.0.0.0/hook",                   # unspecified
    "http://0/hook",
    "http://[::]/hook",
    "http://224.0.0.1/hook",                 # multicast
    "http://[2002:7f00:1::]/hook",           # 6to4 around 127.0.0.1
]


@pytest.mark.parametrize("url", REFUSED)
def test_non_public_targets_are_refused(url: str) -> None:
    with pytest.raises(TargetRefused) as info:
        check_target(url, https_only=False, allowed_hosts=())
    assert info.value.code == "WEBHOOK_TARGET_REFUSED"
    assert info.value.status == 400


@pytest.mark.parametrize("url", ["ftp://example.com/x", "file:///etc/passwd",
                                 "gopher://example.com/", "http:///nohost",
                                 "https://user:pw@example.com/hook", "http://[::1/hook"])
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(TargetRefused):
        check_target(url, https_only=False, allowed_hosts=())


def public_resolver(*addresses: str) -> Any:
    def resolve(host: str, port: int, **_: Any) -> list[Any]:
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (a, port)) for a in addresses]
    return resolve


def test_production_takes_only_https() -> None:
    resolve = public_resolver("93.184.215.14")
    with pytest.raises(TargetRefused, match="https"):
        check_target("http://example.com/hook", https_only=True, allowed_hosts=(),
                     resolve=resolve)
    target = check_target("https://example.com/hook?x=1", https_only=True, allowed_hosts=(),
                          resolve=resolve)
    assert (target.address, target.port, target.path) == ("93.184.215.14", 443, "/hook?x=1")


def test_a_name_with_one_private_address_among_public_ones_is_refused() -> None:
    with pytest.raises(TargetRefused, match=r"10\.1\.2\.3"):
        check_target("https://mixed.example/hook", https_only=False, allowed_hosts=(),
                     resolve=public_resolver("93.184.215.14", "10.1.2.3"))


def test_dns_rebinding_is_checked_again_and_the_checked_address_is_used() -> None:
    """Registration saw a public address; at delivery the name points at the metadata
    service: refused. The target carries the address it checked, which the POST uses."""
    first = check_target("https://rebind.example/hook", https_only=False, allowed_hosts=(),
                         resolve=public_resolver("93.184.215.14"))
    assert first.address == "93.184.215.14"
    with pytest.raises(TargetRefused, match=r"169\.254\.169\.254"):
        check_target("https://rebind.example/hook", https_only=False, allowed_hosts=(),
                     resolve=public_resolver("169.254.169.254"))


def test_allow_listed_hosts_may_be_private_but_not_another_scheme() -> None:
    target = check_target("http://127.0.0.1:8080/hook", https_only=False,
                          allowed_hosts=("127.0.0.1",))
    assert (target.address, target.port) == ("127.0.0.1", 8080)
    with pytest.raises(TargetRefused, match="https"):
        check_target("http://127.0.0.1:8080/hook", https_only=True,
                     allowed_hosts=("127.0.0.1",))
