"""A hostile calendar server for tests: endless, huge and slow answers (stdlib only).

It forwards every request to an upstream CalDAV server (Radicale) like a plain
reverse proxy, until a test arms a misbehaviour for some methods::

    with HostileServer(radicale.url) as hostile:
        hostile.misbehave("endless", methods={"REPORT"})

Misbehaviours (answers generated on the fly, never held in memory):

* ``endless``: a 207 with a chunked body that never ends;
* ``huge``: a 207 declaring and sending ``huge_bytes`` (100 MB by default);
* ``huge_chunked``: the same without a Content-Length;
* ``slow_body``: a 207 whose body comes one byte every ``drip_seconds``;
* ``slow_headers``: headers one byte every ``drip_seconds``;
* ``endless_headers``: header lines as fast as the client takes them.

Without an upstream every request gets the misbehaviour (or a 404 when none is
armed). Each connection has its own thread; :meth:`close` drops them all.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
from collections.abc import Iterable
from urllib.parse import urlsplit

from tests.support.ports import ClosedOnExit

MODES = ("endless", "huge", "huge_chunked", "slow_body", "slow_headers", "endless_headers")

_XML_HEAD = (
    b'<?xml version="1.0" encoding="utf-8"?>\n<d:multistatus xmlns:d="DAV:" '
    b'xmlns:c="urn:ietf:params:xml:ns:caldav">\n'
)
_FILLER = (
    b"<d:response><d:href>/x/"
    + b"a" * 60
    + b'.ics</d:href><d:propstat><d:prop><d:getetag>"1"</d:getetag></d:prop>'
    b"<d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>\n"
) * 256
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}


class HostileServer(ClosedOnExit):
    """Serve (or forward) CalDAV on a loopback port and misbehave on demand."""

    def __init__(
        self,
        upstream: str | None = None,
        *,
        huge_bytes: int = 100 * 1000 * 1000,
        drip_seconds: float = 5.0,
    ) -> None:
        self.upstream = upstream.rstrip("/") if upstream else None
        self.huge_bytes = huge_bytes
        self.drip_seconds = drip_seconds
        self._mode: str | None = None
        self._methods: frozenset[str] | None = None
        self._body_contains: bytes | None = None
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._closing = threading.Event()
        self.sent_bytes = 0
        self.hostile_requests: list[str] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self._thread = threading.Thread(target=self._accept, name="hostile", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        """Return the listening port."""
        return int(self._listener.getsockname()[1])

    @property
    def url(self) -> str:
        """Return the base URL (with the upstream's path, when forwarding)."""
        path = urlsplit(self.upstream).path if self.upstream else ""
        return f"http://127.0.0.1:{self.port}{path}"

    def misbehave(
        self,
        mode: str | None,
        methods: Iterable[str] | None = None,
        body_contains: bytes | None = None,
    ) -> None:
        """Answer ``methods`` (all when None) with ``mode``; None forwards again.

        ``body_contains`` narrows it to requests whose body has those bytes
        (e.g. ``b"calendar-multiget"``).
        """
        if mode is not None and mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {MODES}")
        with self._lock:
            self._mode = mode
            self._methods = frozenset(m.upper() for m in methods) if methods else None
            self._body_contains = body_contains

    def _hostile_mode(self, method: str, body: bytes) -> str | None:
        with self._lock:
            if (
                self._mode
                and (self._methods is None or method in self._methods)
                and (self._body_contains is None or self._body_contains in body)
            ):
                self.hostile_requests.append(method)
                return self._mode
            return None

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._sockets.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn, conn.makefile("rb") as reader:
                while not self._closing.is_set():
                    head = _read_head(reader)
                    if head is None:
                        return
                    method, target, headers = head
                    length = int(headers.get("content-length", "0") or 0)
                    body = reader.read(length) if length else b""
                    mode = self._hostile_mode(method, body)
                    if mode is not None:
                        self._misbehave(conn, mode)
                        return
                    if self.upstream is None:
                        conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                        continue
                    self._forward(conn, method, target, headers, body)
        except OSError:
            return
        finally:
            with self._lock:
                self._sockets.discard(conn)

    def _forward(
        self,
        conn: socket.socket,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes,
    ) -> None:
        assert self.upstream is not None
        parts = urlsplit(self.upstream)
        upstream = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=60)
        try:
            sent = {k: v for k, v in headers.items() if k not in _HOP_BY_HOP | {"host"}}
            upstream.request(method, target, body=body, headers=sent)
            answer = upstream.getresponse()
            data = answer.read()
        finally:
            upstream.close()
        lines = [f"HTTP/1.1 {answer.status} {answer.reason}"]
        for name, value in answer.getheaders():
            if name.lower() not in _HOP_BY_HOP | {"content-length"}:
                lines.append(f"{name}: {value}")
        lines.append(f"Content-Length: {len(data)}")
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + data)

    def _send(self, conn: socket.socket, data: bytes) -> None:
        conn.sendall(data)
        self.sent_bytes += len(data)

    def _misbehave(self, conn: socket.socket, mode: str) -> None:
        xml_207 = "HTTP/1.1 207 Multi-Status\r\nContent-Type: application/xml; charset=utf-8\r\n"
        if mode == "endless":
            self._send(conn, (xml_207 + "Transfer-Encoding: chunked\r\n\r\n").encode())
            self._send(conn, b"%x\r\n%s\r\n" % (len(_XML_HEAD), _XML_HEAD))
            chunk = b"%x\r\n%s\r\n" % (len(_FILLER), _FILLER)
            while not self._closing.is_set():
                self._send(conn, chunk)
        elif mode in ("huge", "huge_chunked"):
            chunked = mode == "huge_chunked"
            framing = (
                "Transfer-Encoding: chunked"
                if chunked
                else f"Content-Length: {len(_XML_HEAD) + self.huge_bytes}"
            )
            self._send(conn, (xml_207 + framing + "\r\n\r\n").encode())
            left = self.huge_bytes
            pieces = [_XML_HEAD]
            while left > 0 and not self._closing.is_set():
                piece = _FILLER[:left]
                left -= len(piece)
                pieces.append(piece)
                for data in pieces:
                    self._send(conn, b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
                pieces = []
            if chunked:
                self._send(conn, b"0\r\n\r\n")
        elif mode == "slow_body":
            self._send(conn, (xml_207 + "Content-Length: 1000000\r\n\r\n").encode())
            self._drip(conn, _XML_HEAD + _FILLER)
        elif mode == "slow_headers":
            self._drip(conn, (xml_207 + "X-Filler: " + "a" * 10_000 + "\r\n\r\n").encode())
        elif mode == "endless_headers":
            self._send(conn, xml_207.encode())
            line = b"X-Filler: " + b"a" * 1000 + b"\r\n"
            while not self._closing.is_set():
                self._send(conn, line * 64)

    def _drip(self, conn: socket.socket, data: bytes) -> None:
        for i in range(len(data)):
            if self._closing.wait(self.drip_seconds if i else 0):
                return
            self._send(conn, data[i : i + 1])

    def close(self) -> None:
        """Stop serving and drop every connection."""
        self._closing.set()
        self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)


def _read_head(reader: object) -> tuple[str, str, dict[str, str]] | None:
    readline = reader.readline  # type: ignore[attr-defined]
    line = readline(65537)
    if not line:
        return None
    parts = line.decode("latin-1").split()
    if len(parts) < 2:
        return None
    headers: dict[str, str] = {}
    while True:
        raw = readline(65537)
        if raw in (b"\r\n", b"\n", b""):
            break
        name, _, value = raw.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return parts[0].upper(), parts[1], headers


__all__ = ["MODES", "HostileServer"]
