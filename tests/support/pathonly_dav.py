"""A small CalDAV server that answers the way DAViCal does, for linking tests (stdlib only).

What it copies from DAViCal (observed on its Debian package):

* every href is path-only (``/davical/caldav.php/admin/``), also in
  ``current-user-principal`` and ``calendar-home-set``;
* a calendar collection answers ``current-user-principal`` *and*
  ``calendar-home-set`` itself;
* ``/.well-known/caldav`` redirects with an absolute ``Location`` naming the
  server's own port, which a reverse proxy in front of it may fail to rewrite.

It keeps PUT objects in memory (with ETags and ``If-None-Match``/``If-Match``),
so the connection test's probe works. Basic authentication is checked when a
password is given. It is only what linking needs, not a calendar server.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.support.ports import ClosedOnExit

__all__ = ["PathOnlyDAV"]

ROOT = "/davical/caldav.php/"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    dav: PathOnlyDAV


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Keep test output quiet."""

    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _authorised(self) -> bool:
        dav = self.server.dav
        if dav.password is None:
            return True
        expected = base64.b64encode(f"{dav.user}:{dav.password}".encode()).decode()
        if self.headers.get("Authorization") == f"Basic {expected}":
            return True
        self._reply(401, b"", {"WWW-Authenticate": 'Basic realm="DAViCal CalDAV Server"'})
        return False

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _well_known(self) -> bool:
        if self.path.rstrip("/") != "/.well-known/caldav":
            return False
        origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._reply(301, b"", {"Location": f"{origin}{ROOT}"})
        return True

    def do_GET(self) -> None:  # noqa: N802
        self._body()
        if self._well_known():
            return
        if not self._authorised():
            return
        stored = self.server.dav.objects.get(self.path)
        if stored is None:
            self._reply(404)
            return
        self._reply(200, stored[0], {"ETag": stored[1], "Content-Type": "text/calendar"})

    def do_PROPFIND(self) -> None:  # noqa: N802
        self._body()
        if self._well_known():
            return
        if not self._authorised():
            return
        dav = self.server.dav
        depth = self.headers.get("Depth", "0")
        responses = dav.describe(self.path, depth)
        if responses is None:
            self._reply(404)
            return
        body = (
            '<?xml version="1.0" encoding="utf-8"?>\n'
            '<multistatus xmlns="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
            + "".join(responses)
            + "</multistatus>"
        ).encode()
        self._reply(207, body, {"Content-Type": "text/xml; charset=utf-8"})

    def do_PUT(self) -> None:  # noqa: N802
        data = self._body()
        if not self._authorised():
            return
        dav = self.server.dav
        if not self.path.startswith(dav.calendar_path):
            self._reply(403)
            return
        with dav.lock:
            existing = dav.objects.get(self.path)
            if self.headers.get("If-None-Match") == "*" and existing is not None:
                self._reply(412)
                return
            match = self.headers.get("If-Match")
            if match and (existing is None or existing[1] != match):
                self._reply(412)
                return
            etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
            dav.objects[self.path] = (data, etag)
        self._reply(201 if existing is None else 204, b"", {"ETag": etag})

    def do_DELETE(self) -> None:  # noqa: N802
        self._body()
        if not self._authorised():
            return
        dav = self.server.dav
        with dav.lock:
            existing = dav.objects.get(self.path)
            if existing is None:
                self._reply(404)
                return
            match = self.headers.get("If-Match")
            if match and existing[1] != match:
                self._reply(412)
                return
            del dav.objects[self.path]
        self._reply(204)


class PathOnlyDAV(ClosedOnExit):
    """The server, on a free loopback port; use as a context manager."""

    def __init__(self, user: str = "admin", password: str | None = "pw") -> None:
        self.user = user
        self.password = password
        self.principal_path = f"{ROOT}{user}/"
        self.calendar_path = f"{self.principal_path}home/"
        self.objects: dict[str, tuple[bytes, str]] = {}
        self.lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.dav = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """Return the server's origin with a trailing slash."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/"

    def describe(self, path: str, depth: str) -> list[str] | None:
        """Return the ``<response>`` elements for a PROPFIND of ``path``, or None (404)."""
        pointers = (
            f"<current-user-principal><href>{self.principal_path}</href></current-user-principal>"
            f"<C:calendar-home-set><href>{self.principal_path}</href></C:calendar-home-set>"
        )
        calendar = self._response(
            self.calendar_path,
            "<resourcetype><collection/><C:calendar/></resourcetype>"
            "<displayname>Home</displayname>"
            '<C:supported-calendar-component-set><C:comp name="VEVENT"/>'
            "</C:supported-calendar-component-set>"
            "<supported-report-set><supported-report><report><sync-collection/></report>"
            "</supported-report></supported-report-set>"
            "<current-user-privilege-set><privilege><all/></privilege>"
            "</current-user-privilege-set>" + pointers,
        )
        if path == self.calendar_path:
            return [calendar]
        if path == self.principal_path:
            here = self._response(
                path, "<resourcetype><collection/><principal/></resourcetype>" + pointers
            )
            return [here, calendar] if depth == "1" else [here]
        if path in (ROOT, "/"):
            return [self._response(path, "<resourcetype><collection/></resourcetype>" + pointers)]
        return None

    @staticmethod
    def _response(href: str, props: str) -> str:
        return (
            f"<response><href>{href}</href><propstat><prop>{props}</prop>"
            "<status>HTTP/1.1 200 OK</status></propstat></response>"
        )

    def close(self) -> None:
        """Stop the server."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
