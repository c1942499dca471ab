"""The HTTP transport under the caldav library: size caps, deadlines, pinned addresses.

A calendar server is chosen by whoever links an account, so it may be hostile.
:class:`GuardedSession` replaces the caldav client's niquests session and adds
what niquests does not offer as a whole:

* every response body is streamed and cut off at a cap that depends on the
  kind of request (:class:`TransferLimits`), so no answer can fill memory;
* every request has an overall deadline: a watchdog shuts the connection down
  when it passes, so a server dribbling bytes (body *or* headers) cannot hold
  a request past it;
* every connection goes to an address :class:`CheckedResolver` has checked in
  the same step (the resolver niquests connects through), so no second DNS
  answer can slip a refused address in between check and connect.

The errors raised here are plain exceptions; ``adapters.caldav_client``
turns them into ``CalDAVError`` subclasses with one sentence for the user.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import niquests
from niquests.packages.urllib3 import HTTPConnectionPool, HTTPSConnectionPool
from niquests.packages.urllib3.connection import HTTPConnection, HTTPSConnection
from niquests.packages.urllib3.contrib.resolver.system import SystemResolver

from caljournal.adapters.metrics import REQUEST_SECONDS, REQUESTS, method_label, status_label
from caljournal.adapters.netguard import forbidden_reason

log = logging.getLogger("caljournal.caldav.http")

DISCOVERY = "discovery"
LISTING = "listing"
MULTIGET = "multiget"
OBJECT = "object"
KINDS = (DISCOVERY, LISTING, MULTIGET, OBJECT)

_CHUNK = 64 * 1024
MiB = 1024 * 1024


@dataclass(frozen=True)
class TransferLimits:
    """How much one calendar server may send, and for how long.

    ``*_bytes`` cap one response body by kind of request; ``request_seconds``
    bounds every request from its start to its last body byte
    (``listing_seconds`` for full listings of large calendars);
    ``operation_seconds`` bounds one link operation (discovery, connection
    test) with all its requests together.
    """

    discovery_bytes: int = 4 * MiB
    listing_bytes: int = 32 * MiB
    multiget_bytes: int = 32 * MiB
    object_bytes: int = 8 * MiB
    request_seconds: float = 60.0
    listing_seconds: float = 300.0
    operation_seconds: float = 90.0

    def max_bytes(self, kind: str) -> int:
        """Return the body cap for ``kind`` (one of :data:`KINDS`)."""
        return int(getattr(self, f"{kind}_bytes"))

    def seconds(self, kind: str) -> float:
        """Return the deadline of one request of ``kind``."""
        return self.listing_seconds if kind == LISTING else self.request_seconds


class BodyTooLargeError(Exception):
    """A response body exceeded its cap (the connection was dropped)."""

    def __init__(self, kind: str, limit: int) -> None:
        super().__init__(f"the {kind} answer exceeded {limit} bytes")
        self.kind = kind
        self.limit = limit


class DeadlinePassedError(Exception):
    """A request was still running at its deadline (the connection was shut down)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the request did not finish within {seconds:g} s")
        self.seconds = seconds


class RefusedAddressError(Exception):
    """A host resolved to an address caljournal may not connect to.

    Deliberately not an ``OSError``: urllib3 would turn it into a generic
    connection failure and the reason would be lost.
    """

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"{host} is refused: {reason}")
        self.host = host
        self.reason = reason


class CheckedResolver(SystemResolver):
    """Resolve with the system resolver and refuse forbidden addresses.

    niquests connects to exactly the addresses this resolver returns, so the
    check and the connection use one and the same DNS answer.
    """

    def __init__(self, allow_private: bool = False, lookup: Any = None) -> None:
        super().__init__()
        self.allow_private = allow_private
        self._lookup = lookup

    def recycle(self) -> CheckedResolver:
        """Return this resolver (it holds no connection to close)."""
        return self

    def getaddrinfo(
        self,
        host: bytes | str | None,
        port: str | int | None,
        family: socket.AddressFamily,
        type: socket.SocketKind,
        proto: int = 0,
        flags: int = 0,
        *,
        quic_upgrade_via_dns_rr: bool = False,
    ) -> list[Any]:
        """Return the addresses of ``host`` (as ``socket.getaddrinfo``) when all are allowed.

        :raises RefusedAddressError: when any address is forbidden.
        :raises socket.gaierror: when the name does not resolve.
        """
        name = host.decode("ascii") if isinstance(host, bytes) else str(host or "")
        lookup = self._lookup or socket.getaddrinfo
        records = list(lookup(name, port, family, type, proto, flags))
        if not records:
            raise socket.gaierror(socket.EAI_NONAME, "no address returned")
        for record in records:
            reason = forbidden_reason(str(record[4][0]), self.allow_private)
            if reason is not None:
                raise RefusedAddressError(name, reason)
        return records


class _Ticket:
    """One request in flight: its deadline and the connections it uses."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.expired = False
        self.done = False
        self._connections: list[Any] = []
        self._lock = threading.Lock()

    def watch(self, connection: Any) -> None:
        with self._lock:
            if connection not in self._connections:
                self._connections.append(connection)
            if self.expired:
                _cut(connection)

    def expire(self) -> None:
        with self._lock:
            if self.done:
                return
            self.expired = True
            for connection in self._connections:
                _cut(connection)

    def finish(self) -> None:
        with self._lock:
            self.done = True
            self._connections.clear()


def _cut(connection: Any) -> None:
    sock = getattr(connection, "sock", None)
    if sock is None:
        return
    # shutdown() (not close()) wakes a recv() blocked in the request's thread;
    # the base-class call skips SSLSocket's TLS close-notify exchange.
    with contextlib.suppress(OSError, ValueError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Watchdog:
    """One thread that expires tickets at their deadlines."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Ticket]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, ticket: _Ticket) -> None:
        with self._cond:
            heapq.heappush(self._heap, (ticket.deadline, next(self._order), ticket))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="caldav-deadlines", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._heap and self._heap[0][2].done:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                ticket = heapq.heappop(self._heap)[2]
            ticket.expire()


_WATCHDOG = _Watchdog()
_current = threading.local()


def _enlist(connection: Any) -> None:
    ticket: _Ticket | None = getattr(_current, "ticket", None)
    if ticket is not None:
        ticket.watch(connection)


class _Watched:
    """Hand the connection to the current request's watchdog ticket (mixed into both kinds)."""

    def connect(self) -> None:
        _enlist(self)
        super().connect()  # type: ignore[misc]
        _enlist(self)

    def request(self, *args: Any, **kwargs: Any) -> Any:
        _enlist(self)
        return super().request(*args, **kwargs)  # type: ignore[misc]


class _WatchedHTTPConnection(_Watched, HTTPConnection):
    """A plain connection the watchdog can cut."""


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    """A TLS connection the watchdog can cut."""


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class GuardedSession(niquests.Session):
    """A niquests session whose every request is capped, timed and pinned.

    One request at a time: a caldav client is used by one thread, and the
    lock makes sure the watchdog of a request only ever cuts its own
    connection.
    """

    def __init__(
        self,
        limits: TransferLimits,
        allow_private: bool = False,
        kind: str = OBJECT,
        deadline: float | None = None,
        resolver: CheckedResolver | None = None,
    ) -> None:
        # HTTP/3 would move to UDP sockets and Alt-Svc endpoints outside these
        # guards; calendar servers speak HTTP/1.1 and HTTP/2.
        super().__init__(resolver=resolver or CheckedResolver(allow_private), disable_http3=True)
        # No proxies, .netrc credentials or CA bundles from the environment:
        # credentials go only where the account said.
        self.trust_env = False
        self.limits = limits
        self.default_kind = kind
        self.deadline = deadline
        self._kind = threading.local()
        self._one_at_a_time = threading.RLock()
        # niquests exposes no hook that hands out a request's connection, and
        # the watchdog needs its socket to cut a request stuck in its headers:
        # connection classes of our own register themselves (urllib3-future's
        # pool manager takes the pool classes per scheme). The hostile-server
        # tests fail if a release stops honouring this.
        for adapter in self.adapters.values():
            manager = getattr(adapter, "poolmanager", None)
            if manager is not None:
                manager.pool_classes_by_scheme = {
                    "http": _WatchedHTTPPool,
                    "https": _WatchedHTTPSPool,
                }
                # Without this every connection pool (one per account's client)
                # runs a thread of its own that pings idle HTTP/2 connections: a
                # worker serving 1,000 accounts ran 1,000 of them. A connection
                # the server closed while idle is noticed when next checked out.
                manager.connection_pool_kw["background_watch_delay"] = None
        # Only http and https: a unix-socket adapter would bypass the address check.
        self.adapters.pop("http+unix://", None)
        self.hooks["response"].insert(0, self._read_redirect_body)

    @contextlib.contextmanager
    def kind(self, kind: str, seconds: float | None = None) -> Iterator[None]:
        """Apply ``kind``'s cap and deadline (or ``seconds``) to the requests made inside."""
        if kind not in KINDS:
            raise ValueError(f"unknown kind of request {kind!r}")
        previous = getattr(self._kind, "value", None)
        self._kind.value = (kind, seconds)
        try:
            yield
        finally:
            self._kind.value = previous

    def current_kind(self) -> str:
        """Return the kind of request being made now."""
        chosen = getattr(self._kind, "value", None)
        return chosen[0] if chosen else self.default_kind

    def _seconds(self, kind: str) -> float:
        chosen = getattr(self._kind, "value", None)
        if chosen and chosen[1] is not None:
            return float(chosen[1])
        return self.limits.seconds(kind)

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        """Send one request; return its response with the body read under the cap.

        :raises BodyTooLargeError: when the body exceeds the kind's cap.
        :raises DeadlinePassedError: when the request outlives its deadline.
        :raises RefusedAddressError: when the host resolves to a refused address.
        """
        kind = self.current_kind()
        seconds = self._seconds(kind)
        now = time.monotonic()
        deadline = now + seconds
        if self.deadline is not None:
            deadline = min(deadline, self.deadline)
        if deadline <= now:
            raise DeadlinePassedError(self.limits.operation_seconds)
        kwargs["stream"] = True
        kwargs["timeout"] = _within(kwargs.get("timeout"), deadline - now)
        status: int | None = None
        with self._one_at_a_time:
            ticket = _Ticket(deadline)
            outer = getattr(_current, "ticket", None)
            _current.ticket = ticket
            _WATCHDOG.arm(ticket)
            try:
                response = super().request(method, url, *args, **kwargs)
                status = getattr(response, "status_code", None)
                read_capped(response, self.limits.max_bytes(kind), kind)
                return response
            except (BodyTooLargeError, RefusedAddressError):
                raise
            except Exception:
                if ticket.expired or time.monotonic() >= deadline:
                    raise DeadlinePassedError(deadline - now) from None
                raise
            finally:
                ticket.finish()
                _current.ticket = outer
                _note_request(method, url, status, time.monotonic() - now)

    def _read_redirect_body(self, response: Any, **_: Any) -> Any:
        # niquests reads a redirect's body whole before following it; read it
        # here under the cap instead.
        if getattr(response, "is_redirect", False):
            kind = self.current_kind()
            read_capped(response, self.limits.max_bytes(kind), kind)
        return response


def _note_request(method: str, url: str, status: int | None, seconds: float) -> None:
    """Count one request and log it: method, host and path only (never query or user info)."""
    label = method_label(method)
    REQUESTS.labels(label, status_label(status)).inc()
    REQUEST_SECONDS.labels(label).observe(seconds)
    parts = urlsplit(url)
    ms = round(seconds * 1000, 1)
    log.info(
        "%s %s -> %s in %.1f ms",
        method.upper(),
        parts.path,
        status if status is not None else "no answer",
        ms,
        extra={
            "method": method.upper(),
            "host": parts.hostname,
            "path": parts.path,
            "status": status,
            "ms": ms,
        },
    )


def _within(timeout: Any, remaining: float) -> Any:
    """Return ``timeout`` (seconds or a (connect, read) pair) capped at ``remaining``."""
    remaining = max(remaining, 0.001)
    if timeout is None:
        return remaining
    if isinstance(timeout, tuple):
        return tuple(remaining if t is None else min(float(t), remaining) for t in timeout)
    if isinstance(timeout, int | float):
        return min(float(timeout), remaining)
    return timeout


def read_capped(response: Any, limit: int, kind: str) -> None:
    """Read ``response``'s body (streamed) into it, or drop it past ``limit`` bytes.

    Decompression happens chunk by chunk, so the cap also holds for a
    compressed answer that expands.

    :raises BodyTooLargeError: when the body is longer than ``limit``.
    """
    if response._content_consumed or response._content is not False:  # noqa: SLF001
        return
    declared = response.headers.get("Content-Length", "")
    if declared.strip().isdigit() and int(declared) > limit:
        response.close()
        raise BodyTooLargeError(kind, limit)
    body = bytearray()
    try:
        for chunk in response.iter_content(_CHUNK):
            body += chunk
            if len(body) > limit:
                raise BodyTooLargeError(kind, limit)
    except BaseException:
        response.close()
        raise
    response._content = bytes(body)  # noqa: SLF001
    response._content_consumed = True  # noqa: SLF001
