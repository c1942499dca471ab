"""Refusing loopback, private and other non-public addresses before connecting."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest

from caljournal.adapters import netguard
from caljournal.adapters.netguard import (
    LINK_LOCAL,
    LOOPBACK,
    MULTICAST,
    NOT_GLOBAL,
    PRIVATE,
    RESERVED,
    SHARED,
    UNIQUE_LOCAL,
    UNSPECIFIED,
    ForbiddenAddressError,
    HostLookupError,
    check_host,
    classify_ip,
    forbidden_reason,
    is_forbidden_address,
    resolve,
)


@pytest.mark.parametrize(
    ("ip", "reason"),
    [
        ("8.8.8.8", None),
        ("17.253.144.10", None),
        ("0.0.0.0", UNSPECIFIED),
        ("127.0.0.1", LOOPBACK),
        ("127.255.0.9", LOOPBACK),
        ("169.254.169.254", LINK_LOCAL),
        ("224.0.0.251", MULTICAST),
        ("10.0.0.1", PRIVATE),
        ("172.16.5.4", PRIVATE),
        ("172.31.255.255", PRIVATE),
        ("172.32.0.1", None),
        ("192.168.178.1", PRIVATE),
        ("100.64.0.1", SHARED),
        ("240.0.0.1", RESERVED),
        ("255.255.255.255", RESERVED),
        ("192.0.2.10", NOT_GLOBAL),
        ("198.18.0.1", NOT_GLOBAL),
        ("2001:4860:4860::8888", None),
        ("::", UNSPECIFIED),
        ("::1", LOOPBACK),
        ("fe80::1", LINK_LOCAL),
        ("fe80::1%eth0", LINK_LOCAL),
        ("ff02::1", MULTICAST),
        ("fd12:3456:789a::1", UNIQUE_LOCAL),
        ("fec0::1", RESERVED),
        ("2001:db8::1", NOT_GLOBAL),
        ("::ffff:127.0.0.1", LOOPBACK),
        ("::ffff:8.8.8.8", None),
        ("2002:7f00:1::", LOOPBACK),
        ("2002:a00:1::", PRIVATE),
        ("64:ff9b::a9fe:a9fe", LINK_LOCAL),
        ("64:ff9b::808:808", None),
    ],
)
def test_classify_ip(ip: str, reason: str | None) -> None:
    assert classify_ip(ip) == reason
    assert classify_ip(ipaddress.ip_address(ip.split("%")[0])) == reason


@pytest.mark.parametrize("bad", ["", "localhost", "999.1.1.1", "1.2.3", "::g"])
def test_classify_ip_rejects_non_addresses(bad: str) -> None:
    with pytest.raises(ValueError):
        classify_ip(bad)


@pytest.mark.parametrize(
    ("ip", "strict", "relaxed"),
    [
        ("8.8.8.8", None, None),
        ("127.0.0.1", LOOPBACK, None),
        ("10.0.0.1", PRIVATE, None),
        ("100.64.0.1", SHARED, None),
        ("fd00::1", UNIQUE_LOCAL, None),
        ("169.254.169.254", LINK_LOCAL, LINK_LOCAL),
        ("0.0.0.0", UNSPECIFIED, UNSPECIFIED),
        ("224.0.0.1", MULTICAST, MULTICAST),
        ("240.0.0.1", RESERVED, RESERVED),
        ("192.0.2.1", NOT_GLOBAL, NOT_GLOBAL),
    ],
)
def test_allow_private_admits_only_the_private_ranges(
    ip: str, strict: str | None, relaxed: str | None
) -> None:
    assert forbidden_reason(ip, allow_private=False) == strict
    assert forbidden_reason(ip, allow_private=True) == relaxed


def _fake_dns(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> None:
    """Answer getaddrinfo from ``answers``; a missing name fails like DNS does."""

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        result = []
        for ip in answers[host]:
            family = socket.AF_INET6 if ":" in ip else socket.AF_INET
            sockaddr = (ip, port or 0, 0, 0) if ":" in ip else (ip, port or 0)
            result.append((family, socket.SOCK_STREAM, 6, "", sockaddr))
            result.append((family, socket.SOCK_STREAM, 6, "", sockaddr))  # duplicates happen
        return result

    monkeypatch.setattr(netguard.socket, "getaddrinfo", getaddrinfo)


def test_check_host_returns_the_vetted_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_dns(monkeypatch, {"cal.example.org": ["93.184.216.34", "2606:2800:220:1::1"]})
    assert check_host("cal.example.org") == ("93.184.216.34", "2606:2800:220:1::1")
    assert not is_forbidden_address("cal.example.org", allow_private=False)


def test_one_bad_address_refuses_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_dns(monkeypatch, {"rebind.example.org": ["93.184.216.34", "127.0.0.1"]})
    with pytest.raises(ForbiddenAddressError) as caught:
        check_host("rebind.example.org")
    error = caught.value
    assert (error.host, error.address, error.reason) == (
        "rebind.example.org",
        "127.0.0.1",
        LOOPBACK,
    )
    # The message says "refused" and never what an internal name resolves to.
    assert str(error) == "refused to connect to rebind.example.org: it is not a public address"
    assert "127.0.0.1" not in str(error) and "loopback" not in str(error)
    assert is_forbidden_address("rebind.example.org", allow_private=False)
    assert not is_forbidden_address("rebind.example.org", allow_private=True)


def test_metadata_service_is_refused_even_when_private_is_allowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _fake_dns(monkeypatch, {"metadata.example.org": ["169.254.169.254"]})
    with pytest.raises(ForbiddenAddressError) as caught:
        check_host("metadata.example.org", allow_private=True)
    assert caught.value.reason == LINK_LOCAL
    assert "169.254" not in str(caught.value)


def test_private_lan_is_admitted_when_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_dns(monkeypatch, {"nas.local": ["192.168.178.20"]})
    with pytest.raises(ForbiddenAddressError) as caught:
        check_host("nas.local")
    assert caught.value.reason == PRIVATE
    assert check_host("nas.local", allow_private=True) == ("192.168.178.20",)


def test_unresolvable_host_raises_lookup_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_dns(monkeypatch, {})
    with pytest.raises(HostLookupError, match="cannot resolve 'nowhere.invalid'"):
        check_host("nowhere.invalid")
    with pytest.raises(HostLookupError):
        is_forbidden_address("nowhere.invalid", allow_private=True)
    with pytest.raises(HostLookupError, match="empty"):
        resolve("  ")


def test_ip_literals_need_no_dns() -> None:
    assert check_host("127.0.0.1", allow_private=True) == ("127.0.0.1",)
    assert check_host("[::1]", allow_private=True) == ("::1",)
    # An IP literal was typed by the user: describing it reveals nothing.
    with pytest.raises(ForbiddenAddressError, match="to 127.0.0.1: it is a loopback"):
        check_host("127.0.0.1")
    with pytest.raises(ForbiddenAddressError, match="refused to connect to ::1: it is a loopback"):
        check_host("[::1]")
    assert is_forbidden_address("0.0.0.0", allow_private=True)


def test_forbidden_address_error_is_a_value_error() -> None:
    assert issubclass(ForbiddenAddressError, ValueError)
    assert issubclass(HostLookupError, OSError)
