"""The transport's pure parts: the checking resolver, limits, and the session's set-up."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from caljournal.adapters.transport import (
    LISTING,
    OBJECT,
    CheckedResolver,
    GuardedSession,
    RefusedAddressError,
    TransferLimits,
)


class Lookup:
    """A fake getaddrinfo answering every name with fixed addresses, counting calls."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses
        self.calls = 0

    def __call__(self, host: str, port: Any, *args: Any) -> list[Any]:
        self.calls += 1
        return [
            (
                socket.AF_INET6 if ":" in a else socket.AF_INET,
                socket.SOCK_STREAM,
                6,
                "",
                (a, int(port or 443)),
            )
            for a in self.addresses
        ]


def test_the_resolver_returns_the_checked_answer_of_one_lookup() -> None:
    lookup = Lookup("93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c")
    records = CheckedResolver(lookup=lookup).getaddrinfo(
        "cal.example", 443, socket.AF_UNSPEC, socket.SOCK_STREAM
    )
    assert [r[4][0] for r in records] == list(lookup.addresses)
    assert lookup.calls == 1


@pytest.mark.parametrize(
    ("addresses", "allow_private"),
    [
        (("93.184.215.14", "127.0.0.1"), False),
        (("10.1.2.3",), False),
        (("169.254.169.254",), True),
        (("::ffff:127.0.0.1",), False),
    ],
)
def test_the_resolver_refuses_a_name_with_any_forbidden_address(
    addresses: tuple[str, ...], allow_private: bool
) -> None:
    resolver = CheckedResolver(allow_private, lookup=Lookup(*addresses))
    with pytest.raises(RefusedAddressError) as raised:
        resolver.getaddrinfo("cal.example", 443, socket.AF_UNSPEC, socket.SOCK_STREAM)
    assert raised.value.host == "cal.example"
    for address in addresses:
        assert address not in str(raised.value)


def test_private_addresses_pass_when_allowed() -> None:
    resolver = CheckedResolver(True, lookup=Lookup("127.0.0.1", "192.168.1.5"))
    records = resolver.getaddrinfo("cal.example", 80, socket.AF_UNSPEC, socket.SOCK_STREAM)
    assert len(records) == 2


def test_limits_pick_cap_and_deadline_by_kind() -> None:
    limits = TransferLimits(listing_bytes=10, object_bytes=5, request_seconds=2, listing_seconds=9)
    assert (limits.max_bytes(LISTING), limits.seconds(LISTING)) == (10, 9)
    assert (limits.max_bytes(OBJECT), limits.seconds(OBJECT)) == (5, 2)


def test_the_session_speaks_only_http_and_https_without_the_environment() -> None:
    session = GuardedSession(TransferLimits())
    assert sorted(session.adapters) == ["http://", "https://"]
    assert session.trust_env is False
    with pytest.raises(ValueError, match="unknown kind"), session.kind("everything"):
        pass
    with session.kind(LISTING, 3):
        assert session.current_kind() == LISTING
    assert session.current_kind() == OBJECT


def test_the_sessions_connection_pools_run_no_idle_watcher_thread() -> None:
    # urllib3-future gives every pool a thread of its own unless told not to:
    # one per account's client, a thousand in a worker serving a thousand.
    session = GuardedSession(TransferLimits())
    for scheme in ("http", "https"):
        manager = session.adapters[f"{scheme}://"].poolmanager  # type: ignore[attr-defined]
        pool = manager.connection_from_url(f"{scheme}://calendar.example/")
        assert pool._background_monitoring is None
