"""A server that truncates every sync answer (507) cannot make a sync unbounded."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from caljournal.adapters import calendar_reader
from caljournal.adapters.caldav_client import CalDAVError, ServerAccess
from caljournal.adapters.calendar_reader import CalendarReader
from caljournal.adapters.secrets import Credentials
from caljournal.adapters.transport import TransferLimits

PATH = "/cal/"


class EndlessTruncation(BaseHTTPRequestHandler):
    """Answer every REPORT with one new object, its data, and "507: there is more"."""

    counter = itertools.count()
    reports: list[bytes] = []

    def do_REPORT(self) -> None:  # noqa: N802 - the HTTP method's name
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).reports.append(body)
        n = next(self.counter)
        data = "X" * 10_000 if b"calendar-data" in body else None
        prop = f"<C:calendar-data>{data}</C:calendar-data>" if data else ""
        answer = (
            '<?xml version="1.0" encoding="utf-8"?>'
            '<D:multistatus xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
            f"<D:response><D:href>{PATH}object-{n}.ics</D:href><D:propstat><D:prop>"
            f'<D:getetag>"{n}"</D:getetag>{prop}</D:prop>'
            "<D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>"
            f"<D:response><D:href>{PATH}</D:href>"
            "<D:status>HTTP/1.1 507 Insufficient Storage</D:status></D:response>"
            f"<D:sync-token>token-{n}</D:sync-token></D:multistatus>"
        ).encode()
        self.send_response(207)
        self.send_header("Content-Type", "application/xml; charset=utf-8")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def endless() -> Iterator[str]:
    EndlessTruncation.reports = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), EndlessTruncation)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{PATH}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_server_that_truncates_every_sync_answer_is_given_up_on(
    endless: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(calendar_reader, "MAX_SYNC_ANSWERS", 20)
    access = ServerAccess(
        endless,
        Credentials("alice", "secret"),
        allow_private=True,
        limits=TransferLimits(listing_bytes=64_000),
    )
    reader = CalendarReader(access, endless)
    try:
        with pytest.raises(CalDAVError, match="kept truncating"):
            reader.changes_since(None)
    finally:
        reader.close()
    reports = EndlessTruncation.reports
    with_data = [r for r in reports if b"calendar-data" in r]
    # The data held stopped at the 64 kB cap (7 answers of 10 kB), then ETags only: 20 answers.
    assert len(with_data) == 7
    assert len(reports) - len(with_data) == 20
