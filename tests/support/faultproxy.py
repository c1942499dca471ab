"""A fault-injecting HTTP reverse proxy for integration tests (stdlib only).

The proxy listens on a loopback port and forwards every request (any method,
including the WebDAV ones) to an upstream base URL.  Faults are queued as rules
from the test thread and consumed by the proxy's handler threads::

    with FaultProxy(radicale.url) as proxy:
        proxy.fail_next(2, status=503, method="PUT")
        proxy.reset_next(1, path_contains="/acct-a/")
        ...
        assert [r.method for r in proxy.requests()] == [...]

Rules are checked in the order they were added; the first one whose filters
match a request applies to it.  Count rules (``*_next``) are used up after
``n`` matching requests; window rules (``fail_for``) apply to every matching
request until their deadline.  The request body is always read completely
before a rule applies, so keep-alive connections stay in sync.

Each client connection gets its own handler thread; each forwarded request
opens a fresh upstream connection (Radicale's built-in server speaks HTTP/1.0
and closes after every response anyway).  Responses are re-framed with
``Content-Length``; hop-by-hop headers are dropped in both directions.
"""

from __future__ import annotations

import contextlib
import http.client
import random
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal, NamedTuple
from urllib.parse import urlsplit

from tests.support.ports import ClosedOnExit

__all__ = ["FaultProxy", "LoggedRequest"]

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "expect",
    }
)

_REPLACED = frozenset({"host", "content-length"})

RuleKind = Literal["fail", "reset", "delay", "flaky"]

#: What a flaky rule does to a request it fails, drawn in equal shares.
_FLAKY_KINDS = ("503+retry-after", "429", "503", "reset", "reset-after")


class LoggedRequest(NamedTuple):
    """One request seen by the proxy.

    ``status`` is the status sent to the client, or None when the connection
    was reset instead of answered.  ``timestamp`` is ``time.time()`` at arrival.
    """

    timestamp: float
    method: str
    path: str
    status: int | None


@dataclass
class _Rule:
    kind: RuleKind
    remaining: int | None  # None: unlimited until ``deadline``
    deadline: float | None  # time.monotonic() value, None: no deadline
    methods: frozenset[str] | None
    path_contains: str | None
    status: int = 503
    retry_after: str | None = None
    body: bytes = b""
    seconds: float = 0.0
    after_forward: bool = False
    ratio: float = 0.0
    chance: random.Random | None = None

    def matches(self, method: str, path: str, now: float) -> bool:
        if self.deadline is not None and now >= self.deadline:
            return False
        if self.methods is not None and method not in self.methods:
            return False
        return self.path_contains is None or self.path_contains in path

    def expired(self, now: float) -> bool:
        if self.remaining is not None and self.remaining <= 0:
            return True
        return self.deadline is not None and now >= self.deadline


def _methods(method: str | Iterable[str] | None) -> frozenset[str] | None:
    if method is None:
        return None
    if isinstance(method, str):
        return frozenset({method.upper()})
    return frozenset(m.upper() for m in method)


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    proxy: FaultProxy


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ProxyServer

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; avoid Nagle/delayed-ACK stalls.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.proxy._track(self.connection, add=True)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.server.proxy._track(self.connection, add=False)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Keep test output quiet."""

    def handle_one_request(self) -> None:
        """Like the base class, but hand every method to ``FaultProxy._handle``."""
        try:
            self.raw_requestline = self.rfile.readline(65537)
            if len(self.raw_requestline) > 65536:
                self.requestline = ""
                self.request_version = ""
                self.command = ""
                self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
                return
            if not self.raw_requestline:
                self.close_connection = True
                return
            if not self.parse_request():
                return
            self.server.proxy._handle(self)
            if not self.wfile.closed:
                self.wfile.flush()
        except (TimeoutError, ConnectionError, ValueError):
            self.close_connection = True

    # -- helpers used by FaultProxy ---------------------------------------------

    def read_body(self) -> bytes:
        """Read the request body (Content-Length or chunked)."""
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            chunks: list[bytes] = []
            while True:
                size_line = self.rfile.readline(65537)
                if not size_line:
                    raise ConnectionError("client closed during chunked body")
                size = int(size_line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # skip trailers
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)  # CRLF after each chunk
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def send_simple(
        self, status: int, body: bytes, headers: list[tuple[str, str]] | None = None
    ) -> None:
        """Send a locally generated response with a Content-Length."""
        self.send_response_only(status)
        for name, value in headers or []:
            self.send_header(name, value)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def reset(self) -> None:
        """Abort the client connection with a TCP RST and no response."""
        self.close_connection = True
        sock = self.connection
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        for stream in (self.rfile, self.wfile):
            with contextlib.suppress(OSError):
                stream.close()
        sock.close()


class FaultProxy(ClosedOnExit):
    """Threaded reverse proxy in front of ``upstream_url`` with injectable faults."""

    def __init__(
        self,
        upstream_url: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        upstream_timeout: float = 30.0,
        upstream_error_status: int | None = 502,
    ) -> None:
        """Start listening immediately.

        ``upstream_error_status`` is returned when the upstream cannot be
        reached (e.g. Radicale is stopped); None resets the client connection
        instead.
        """
        parts = urlsplit(upstream_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"only http:// upstreams are supported: {upstream_url!r}")
        self.upstream_url = upstream_url
        self._up_host = parts.hostname
        self._up_port = parts.port or 80
        self._up_prefix = parts.path.rstrip("/")
        self._up_netloc = parts.netloc
        self.upstream_timeout = upstream_timeout
        self.upstream_error_status = upstream_error_status
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0
        self._rules: list[_Rule] = []
        self._log: list[LoggedRequest] = []
        #: Faults drawn by :meth:`flaky` rules, by kind.
        self.injected: Counter[str] = Counter()
        self._connections: set[socket.socket] = set()
        self._accepted = 0
        self._closing = threading.Event()
        self._host = host
        self._server = _ProxyServer((host, port), _ProxyHandler)
        self._server.proxy = self
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"FaultProxy:{self.port}",
            daemon=True,
        )
        self._thread.start()

    # -- addresses -----------------------------------------------------------------

    @property
    def port(self) -> int:
        """Port the proxy listens on."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Base URL of the proxy (same path prefix as the upstream URL)."""
        return f"http://{self._host}:{self.port}{self._up_prefix}/"

    # -- rules -----------------------------------------------------------------------

    def _add(self, rule: _Rule) -> None:
        with self._lock:
            self._rules.append(rule)

    def fail_next(
        self,
        n: int = 1,
        status: int = 503,
        *,
        retry_after: float | str | None = None,
        body: bytes | str | None = None,
        method: str | Iterable[str] | None = None,
        path_contains: str | None = None,
    ) -> None:
        """Answer the next ``n`` matching requests with ``status`` (not forwarded).

        ``retry_after`` sets a ``Retry-After`` header (seconds or an HTTP date).
        """
        self._add(
            _Rule(
                "fail",
                remaining=n,
                deadline=None,
                methods=_methods(method),
                path_contains=path_contains,
                status=status,
                retry_after=_retry_after(retry_after),
                body=_body(body, status),
            )
        )

    def fail_for(
        self,
        seconds: float,
        status: int = 503,
        *,
        retry_after: float | str | None = None,
        body: bytes | str | None = None,
        method: str | Iterable[str] | None = None,
        path_contains: str | None = None,
    ) -> None:
        """Answer every matching request with ``status`` for ``seconds`` from now."""
        self._add(
            _Rule(
                "fail",
                remaining=None,
                deadline=time.monotonic() + seconds,
                methods=_methods(method),
                path_contains=path_contains,
                status=status,
                retry_after=_retry_after(retry_after),
                body=_body(body, status),
            )
        )

    def reset_next(
        self,
        n: int = 1,
        *,
        after_forward: bool = False,
        method: str | Iterable[str] | None = None,
        path_contains: str | None = None,
    ) -> None:
        """Reset the client connection (TCP RST, no response) for ``n`` requests.

        With ``after_forward`` the request is first forwarded upstream (so a
        write takes effect) and only the response is lost.
        """
        self._add(
            _Rule(
                "reset",
                remaining=n,
                deadline=None,
                methods=_methods(method),
                path_contains=path_contains,
                after_forward=after_forward,
            )
        )

    def flaky(
        self,
        ratio: float,
        *,
        seed: int,
        retry_after: float | str = 0,
        method: str | Iterable[str] | None = None,
        path_contains: str | None = None,
    ) -> None:
        """Fail about ``ratio`` of the matching requests, until the rules are cleared.

        A failed request gets, in equal shares, a 503 or a 429 with
        ``Retry-After``, a bare 503, a connection reset before it is forwarded,
        or a reset after it was (the server did the work, its answer is lost).
        The draws come from ``random.Random(seed)``, so a run can be repeated;
        :attr:`injected` counts the faults by kind. Rules added earlier come
        first.
        """
        self._add(
            _Rule(
                "flaky",
                remaining=None,
                deadline=None,
                methods=_methods(method),
                path_contains=path_contains,
                retry_after=_retry_after(retry_after),
                ratio=ratio,
                chance=random.Random(seed),
            )
        )

    def delay_next(
        self,
        n: int,
        seconds: float,
        *,
        method: str | Iterable[str] | None = None,
        path_contains: str | None = None,
    ) -> None:
        """Sleep ``seconds`` before forwarding the next ``n`` matching requests.

        The request is still forwarded after the sleep even if the client gave
        up meanwhile, like a slow server that finishes the work anyway.
        """
        self._add(
            _Rule(
                "delay",
                remaining=n,
                deadline=None,
                methods=_methods(method),
                path_contains=path_contains,
                seconds=seconds,
            )
        )

    def clear_rules(self) -> None:
        """Drop all pending rules (back to pass-through)."""
        with self._lock:
            self._rules.clear()

    def pending_rules(self) -> int:
        """Number of rules not yet used up or expired."""
        now = time.monotonic()
        with self._lock:
            self._rules = [r for r in self._rules if not r.expired(now)]
            return len(self._rules)

    def _take_rule(self, method: str, path: str) -> _Rule | None:
        now = time.monotonic()
        with self._lock:
            self._rules = [r for r in self._rules if not r.expired(now)]
            for rule in self._rules:
                if rule.matches(method, path, now):
                    if rule.remaining is not None:
                        rule.remaining -= 1
                    return rule
        return None

    # -- request log -----------------------------------------------------------------

    def requests(
        self, method: str | None = None, path_contains: str | None = None
    ) -> list[LoggedRequest]:
        """Logged requests in arrival order, optionally filtered.

        A request is logged once its outcome is decided, just before the
        response (or reset) reaches the client; a delayed request shows up
        only after its delay.
        """
        with self._lock:
            entries = sorted(self._log, key=lambda r: r.timestamp)
        return [
            r
            for r in entries
            if (method is None or r.method == method.upper())
            and (path_contains is None or path_contains in r.path)
        ]

    def methods(self) -> list[str]:
        """Methods of all completed requests, in arrival order."""
        return [r.method for r in self.requests()]

    @property
    def connections_accepted(self) -> int:
        """Client connections accepted so far (shows whether keep-alive is used)."""
        with self._lock:
            return self._accepted

    def clear_log(self) -> None:
        """Forget all logged requests."""
        with self._lock:
            self._log.clear()

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until no request is being handled; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._in_flight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
            return True

    # -- request handling --------------------------------------------------------------

    def _track(self, sock: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(sock)
                self._accepted += 1
            else:
                self._connections.discard(sock)

    def _handle(self, h: _ProxyHandler) -> None:
        arrived = time.time()
        method = h.command.upper()
        path = h.path
        recorded = False

        def record(status: int | None) -> None:
            # Logged before the client sees the outcome, so a test that got its
            # response (or its reset) always finds the entry already there.
            nonlocal recorded
            recorded = True
            with self._lock:
                self._log.append(LoggedRequest(arrived, method, path, status))

        with self._lock:
            self._in_flight += 1
        try:
            try:
                body = h.read_body()
            except (OSError, ValueError):
                record(None)
                raise
            rule = self._take_rule(method, path)
            if rule is not None and rule.kind == "flaky":
                rule = self._flaky_outcome(rule)
            if rule is not None and rule.kind == "fail":
                headers = [("Retry-After", rule.retry_after)] if rule.retry_after else []
                record(rule.status)
                h.send_simple(rule.status, rule.body, headers)
                return
            if rule is not None and rule.kind == "reset" and not rule.after_forward:
                record(None)
                h.reset()
                return
            if rule is not None and rule.kind == "delay":
                self._closing.wait(rule.seconds)
            response = self._forward(h, method, path, body)
            if (rule is not None and rule.kind == "reset") or (
                response is None and self.upstream_error_status is None
            ):
                record(None)
                h.reset()
                return
            if response is None:
                status = self.upstream_error_status or 502
                record(status)
                h.send_simple(status, b"upstream unreachable\n")
                return
            record(response[0])
            self._send_upstream_response(h, method, *response)
        finally:
            with self._idle:
                if not recorded:
                    self._log.append(LoggedRequest(arrived, method, path, None))
                self._in_flight -= 1
                self._idle.notify_all()

    def _flaky_outcome(self, rule: _Rule) -> _Rule | None:
        """Return the fault a flaky rule draws for one request, or None to forward it."""
        assert rule.chance is not None
        with self._lock:
            hit = rule.chance.random() < rule.ratio
            kind = rule.chance.choice(_FLAKY_KINDS)
            if hit:
                self.injected[kind] += 1
        if not hit:
            return None
        if kind.startswith("reset"):
            return _Rule(
                "reset",
                remaining=1,
                deadline=None,
                methods=None,
                path_contains=None,
                after_forward=kind == "reset-after",
            )
        status = 429 if kind == "429" else 503
        return _Rule(
            "fail",
            remaining=1,
            deadline=None,
            methods=None,
            path_contains=None,
            status=status,
            retry_after=None if kind == "503" else rule.retry_after,
            body=_body(None, status),
        )

    def _forward(
        self, h: _ProxyHandler, method: str, path: str, body: bytes
    ) -> tuple[int, str, list[tuple[str, str]], bytes] | None:
        conn_tokens = {
            t.strip().lower() for t in h.headers.get("Connection", "").split(",") if t.strip()
        }
        headers: list[tuple[str, str]] = []
        for name, value in h.headers.items():
            lname = name.lower()
            if lname in _HOP_BY_HOP or lname in conn_tokens or lname in _REPLACED:
                continue
            headers.append((name, value))
        headers.append(("Host", self._up_netloc))
        if body or "Content-Length" in h.headers or "Transfer-Encoding" in h.headers:
            headers.append(("Content-Length", str(len(body))))
        conn = http.client.HTTPConnection(
            self._up_host, self._up_port, timeout=self.upstream_timeout
        )
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                conn.putheader(name, value)
            conn.endheaders(body if body else None)
            resp = conn.getresponse()
            payload = resp.read()
            return resp.status, resp.reason, list(resp.getheaders()), payload
        except (OSError, http.client.HTTPException):
            return None
        finally:
            conn.close()

    def _send_upstream_response(
        self,
        h: _ProxyHandler,
        method: str,
        status: int,
        reason: str,
        headers: list[tuple[str, str]],
        payload: bytes,
    ) -> None:
        conn_tokens = {
            t.strip().lower()
            for name, value in headers
            if name.lower() == "connection"
            for t in value.split(",")
            if t.strip()
        }
        no_body = method == "HEAD" or status in (204, 304) or 100 <= status < 200
        h.send_response_only(status, reason)
        has_length = False
        for name, value in headers:
            lname = name.lower()
            if lname in _HOP_BY_HOP or lname in conn_tokens:
                continue
            if lname == "content-length":
                if not no_body:
                    continue  # re-added below from the actual payload
                has_length = True
            if lname in ("location", "content-location"):
                value = self._rewrite_location(value)
            h.send_header(name, value)
        if not no_body:
            h.send_header("Content-Length", str(len(payload)))
        elif not has_length and method != "HEAD" and status not in (204, 304):
            h.send_header("Content-Length", "0")
        if h.close_connection:
            h.send_header("Connection", "close")
        h.end_headers()
        if not no_body:
            h.wfile.write(payload)

    def _rewrite_location(self, value: str) -> str:
        upstream = f"http://{self._up_netloc}"
        if value.startswith(upstream):
            return f"http://{self._host}:{self.port}" + value[len(upstream) :]
        return value

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Stop listening and drop open client connections."""
        if self._closing.is_set():
            return
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            conns = list(self._connections)
        for sock in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5.0)

    def __repr__(self) -> str:
        return f"<FaultProxy {self.url} -> {self.upstream_url}>"


def _retry_after(value: float | str | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() else str(value)


def _body(body: bytes | str | None, status: int) -> bytes:
    if body is None:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Injected failure"
        return f"{status} {phrase} (injected by FaultProxy)\n".encode()
    return body.encode() if isinstance(body, str) else body
