"""Refuse to connect to addresses a customer's calendar server cannot have.

A calendar URL comes from a user, so without a check the sync engine could be
pointed at the loopback interface, the local network or a cloud metadata
service.  :func:`classify_ip` says what is wrong with one address and needs no
DNS; :func:`check_host` resolves a host name and refuses it when any of its
addresses is forbidden.

``allow_private`` (for self-hosted deployments and tests) admits loopback,
private, shared (carrier-grade NAT) and unique-local addresses.  Link-local
addresses, which include the 169.254.169.254 metadata service, and the
unspecified, multicast and reserved ranges are refused either way.

The check is only as good as the address actually connected to: connect to
one of the addresses :func:`check_host` returns, not to the host name, or a
second DNS answer can differ from the first.
"""

from __future__ import annotations

import ipaddress
import socket

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

UNSPECIFIED = "an unspecified address"
LOOPBACK = "a loopback address"
LINK_LOCAL = "a link-local address"
MULTICAST = "a multicast address"
PRIVATE = "a private network address"
SHARED = "a shared (carrier-grade NAT) address"
UNIQUE_LOCAL = "a unique local IPv6 address"
RESERVED = "a reserved address"
NOT_GLOBAL = "an address that is not globally routable"

#: The reasons ``allow_private=True`` lets through.
PRIVATE_REASONS: frozenset[str] = frozenset({LOOPBACK, PRIVATE, SHARED, UNIQUE_LOCAL})

_PRIVATE_NETS = tuple(
    ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
)
_SHARED_NET = ipaddress.IPv4Network("100.64.0.0/10")
_UNIQUE_LOCAL_NET = ipaddress.IPv6Network("fc00::/7")
_NAT64_NET = ipaddress.IPv6Network("64:ff9b::/96")


class ForbiddenAddressError(ValueError):
    """A host resolves to an address the sync engine must not connect to.

    The message says "refused" and names the host as it was given; for a host
    name it never says what the name resolved to (that would let a user map
    the internal network), only an IP literal is described.
    """

    def __init__(self, host: str, address: str, reason: str) -> None:
        shown = host.strip().strip("[]")
        detail = f"it is {reason}" if is_ip_literal(shown) else "it is not a public address"
        super().__init__(f"refused to connect to {shown}: {detail}")
        self.host = host
        self.address = address
        self.reason = reason


class HostLookupError(OSError):
    """A host name could not be resolved."""

    def __init__(self, host: str, detail: str) -> None:
        super().__init__(f"cannot resolve {host!r}: {detail}")
        self.host = host


def is_ip_literal(host: str) -> bool:
    """Tell whether ``host`` (brackets allowed) is an IP address rather than a name."""
    try:
        ipaddress.ip_address(host.strip().strip("[]"))
    except ValueError:
        return False
    return True


def classify_ip(ip: str | IPAddress) -> str | None:
    """Return why ``ip`` must not be connected to, or None for a public address.

    IPv4 addresses embedded in IPv6 (mapped, 6to4, NAT64) are judged by the
    IPv4 address they carry.

    :raises ValueError: when ``ip`` is not an IP address.
    """
    address = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return classify_ip(embedded)
    if address.is_unspecified:
        return UNSPECIFIED
    if address.is_loopback:
        return LOOPBACK
    if address.is_link_local:
        return LINK_LOCAL
    if address.is_multicast:
        return MULTICAST
    if isinstance(address, ipaddress.IPv4Address) and address in _SHARED_NET:
        return SHARED
    if isinstance(address, ipaddress.IPv6Address) and address in _UNIQUE_LOCAL_NET:
        return UNIQUE_LOCAL
    if address.is_reserved or (
        isinstance(address, ipaddress.IPv6Address) and address.is_site_local
    ):
        return RESERVED
    if isinstance(address, ipaddress.IPv4Address) and any(address in n for n in _PRIVATE_NETS):
        return PRIVATE
    if address.is_private or not address.is_global:
        return NOT_GLOBAL
    return None


def forbidden_reason(ip: str | IPAddress, allow_private: bool) -> str | None:
    """Return why ``ip`` is refused under ``allow_private``, or None when allowed.

    :raises ValueError: when ``ip`` is not an IP address.
    """
    reason = classify_ip(ip)
    if reason is None or (allow_private and reason in PRIVATE_REASONS):
        return None
    return reason


def resolve(host: str, port: int | None = None) -> tuple[str, ...]:
    """Return every address ``host`` resolves to, without duplicates.

    An IP literal (with or without brackets) is returned as it is.

    :raises HostLookupError: when the name does not resolve.
    """
    name = host.strip().strip("[]")
    if not name:
        raise HostLookupError(host, "the host name is empty")
    try:
        infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise HostLookupError(host, str(exc)) from None
    addresses: list[str] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        address = str(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise HostLookupError(host, "no address returned")
    return tuple(addresses)


def check_host(host: str, allow_private: bool = False, port: int | None = None) -> tuple[str, ...]:
    """Resolve ``host`` and return its addresses when all of them are allowed.

    :raises ForbiddenAddressError: naming the host, the first forbidden address
        and the reason.
    :raises HostLookupError: when the name does not resolve.
    """
    addresses = resolve(host, port)
    for address in addresses:
        reason = forbidden_reason(address, allow_private)
        if reason is not None:
            raise ForbiddenAddressError(host, address, reason)
    return addresses


def is_forbidden_address(host: str, allow_private: bool = False) -> bool:
    """Tell whether ``host`` resolves to any forbidden address.

    :raises HostLookupError: when the name does not resolve, so that a caller
        using this as a guard never proceeds with an unchecked host.
    """
    try:
        check_host(host, allow_private)
    except ForbiddenAddressError:
        return True
    return False


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """Return the IPv4 address carried inside ``address``, if it carries one."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64_NET:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None
