"""Checks for the test-support servers: a real Radicale and the fault proxy."""

from __future__ import annotations

import datetime as dt
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import httpx
import niquests
import pytest
from caldav.calendarobjectresource import Event
from caldav.collection import Calendar
from caldav.davclient import DAVClient
from caldav.lib import error as caldav_error

from tests.support.faultproxy import FaultProxy, LoggedRequest
from tests.support.patience import HTTP_TIMEOUT
from tests.support.ports import free_port, port_accepts
from tests.support.radicale import RadicaleProcess, RadicaleStartError, read_only_share_rights

pytestmark = pytest.mark.caldav

USERS = {"alice": "secret", "bob": "hunter2"}
AUTH = ("alice", "secret")


def _ics(uid: str, summary: str = "Checkup") -> str:
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//caljournal//tests//EN\r\n"
        f"BEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20300101T000000Z\r\n"
        "DTSTART:20300101T100000Z\r\nDTEND:20300101T110000Z\r\n"
        f"SUMMARY:{summary}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )


def _save_event(cal: Calendar, uid: str, summary: str = "Checkup") -> Event:
    saved = cal.save_event(
        dtstart=dt.datetime(2030, 1, 1, 10, tzinfo=dt.UTC),
        dtend=dt.datetime(2030, 1, 1, 11, tzinfo=dt.UTC),
        summary=summary,
        uid=uid,
    )
    return cast(Event, saved)


def _events(cal: Calendar) -> list[Event]:
    return cast("list[Event]", cal.events())


def _uids(cal: Calendar) -> list[str]:
    return [str(e.icalendar_component["uid"]) for e in _events(cal)]


@pytest.fixture(scope="module")
def radicale(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RadicaleProcess]:
    with RadicaleProcess(tmp_path_factory.mktemp("radicale"), users=USERS) as server:
        yield server


@pytest.fixture
def proxy(radicale: RadicaleProcess) -> Iterator[FaultProxy]:
    with FaultProxy(radicale.url) as fault_proxy:
        yield fault_proxy


@pytest.fixture
def calendar(radicale: RadicaleProcess, proxy: FaultProxy) -> Calendar:
    """A fresh calendar of alice's, reached through the proxy."""
    cal = radicale.make_calendar(
        "alice", "secret", "Support", cal_id=f"cal-{uuid.uuid4().hex[:8]}", base_url=proxy.url
    )
    proxy.clear_log()
    return cal


def _path(cal: Calendar) -> str:
    assert cal.url is not None
    return str(cal.url.path)


# -- Radicale process -----------------------------------------------------------------


def test_radicale_config_and_addresses(radicale: RadicaleProcess) -> None:
    assert radicale.running
    assert radicale.url == f"http://127.0.0.1:{radicale.port}/"
    assert port_accepts(radicale.port)
    config = radicale.config_path.read_text()
    assert f"hosts = 127.0.0.1:{radicale.port}" in config
    assert "htpasswd_encryption = plain" in config
    assert "max_sync_token_age" not in config  # Radicale's default applies
    assert radicale.htpasswd_path.read_text() == "alice:secret\nbob:hunter2\n"
    other = RadicaleProcess(radicale.base_dir / "unused", max_sync_token_age=5)
    assert other.config_sections()["storage"]["max_sync_token_age"] == "5"
    assert other.config_sections()["rights"]["type"] == "owner_only"


def test_radicale_auth_is_enforced(radicale: RadicaleProcess) -> None:
    assert (
        httpx.request("PROPFIND", radicale.url + "alice/", timeout=HTTP_TIMEOUT).status_code == 401
    )
    wrong = httpx.request(
        "PROPFIND", radicale.url + "alice/", auth=("alice", "nope"), timeout=HTTP_TIMEOUT
    )
    assert wrong.status_code == 401
    foreign = httpx.request("PROPFIND", radicale.url + "bob/", auth=AUTH, timeout=HTTP_TIMEOUT)
    assert foreign.status_code == 403


def test_radicale_log_shows_request_lines(radicale: RadicaleProcess) -> None:
    mark = radicale.log_mark()
    marker = f"/alice/log-probe-{uuid.uuid4().hex[:6]}/"
    httpx.request(
        "PROPFIND",
        radicale.url + marker.lstrip("/"),
        auth=AUTH,
        headers={"Depth": "0"},
        timeout=HTTP_TIMEOUT,
    )
    httpx.get(radicale.url + marker.lstrip("/") + "x.ics", auth=AUTH, timeout=HTTP_TIMEOUT)
    text = radicale.log_text(mark)
    assert f"PROPFIND request for '{marker}'" in text
    assert ("PROPFIND", marker) in radicale.logged_requests(since=mark)
    assert ("GET", marker + "x.ics") in radicale.logged_requests(since=mark)
    assert ("GET", marker + "x.ics") not in radicale.logged_requests(since=radicale.log_mark())


def test_stop_and_start_on_same_port_keeps_data(tmp_path: Path) -> None:
    server = RadicaleProcess(tmp_path)
    with server, FaultProxy(server.url) as proxy:
        port = server.port
        cal = server.make_calendar(cal_id="keep", base_url=proxy.url)
        _save_event(cal, "kept-1")

        server.stop()
        assert not server.running
        assert not port_accepts(port)
        with pytest.raises(httpx.ConnectError):
            httpx.get(server.url, timeout=2)
        # The proxy answers 502 while the upstream is down.
        assert (
            httpx.get(proxy.url + "alice/keep/", auth=AUTH, timeout=HTTP_TIMEOUT).status_code == 502
        )

        server.start()
        assert server.port == port
        assert _uids(cal) == ["kept-1"]

        server.kill()
        assert not server.running
        server.start()
        assert len(_events(cal)) == 1
    assert not server.running
    assert server.log_text().count("Radicale server ready") == 3


def test_startup_failure_reports_log_tail(tmp_path: Path) -> None:
    bad = RadicaleProcess(tmp_path, extra_config={"storage": {"type": "no-such-backend"}})
    with pytest.raises(RadicaleStartError, match="no-such-backend"):
        bad.start()
    assert not bad.running


def test_port_in_use_is_reported(tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        with pytest.raises(RadicaleStartError, match="in use"):
            RadicaleProcess(tmp_path, port=taken).start()


def test_auth_type_none(tmp_path: Path) -> None:
    with RadicaleProcess(tmp_path, auth_type="none") as server:
        cal = server.make_calendar("carol", "anything", "Open", cal_id="open")
        assert _path(cal) == "/carol/open/"
        assert "htpasswd_filename" not in server.config_path.read_text()


def test_read_only_calendar_via_rights_file(tmp_path: Path) -> None:
    rights = read_only_share_rights(owner="bob", calendar="shared", reader="alice")
    with RadicaleProcess(tmp_path, users=USERS, rights_file_content=rights) as server:
        shared = server.make_calendar("bob", "hunter2", "Shared", cal_id="shared")
        _save_event(shared, "bobs-1")
        alice_view = server.client("alice", "secret").calendar(url=shared.url)
        assert len(_events(alice_view)) == 1
        put = httpx.put(
            f"{shared.url}alices.ics",
            content=_ics("alices"),
            auth=AUTH,
            headers={"Content-Type": "text/calendar"},
            timeout=HTTP_TIMEOUT,
        )
        assert put.status_code == 403
        # Alice's own calendars stay writable.
        own = server.make_calendar("alice", "secret", "Mine", cal_id="mine")
        _save_event(own, "mine-1")


# -- fault proxy: pass-through ---------------------------------------------------------


def test_caldav_through_proxy(
    radicale: RadicaleProcess, proxy: FaultProxy, calendar: Calendar
) -> None:
    mark = radicale.log_mark()
    _save_event(calendar, "through-proxy")
    assert _uids(calendar) == ["through-proxy"]
    assert "PUT" in proxy.methods()
    assert "REPORT" in proxy.methods()
    assert all(r.status is not None and r.status < 400 for r in proxy.requests("PUT"))
    assert proxy.connections_accepted == 1  # niquests kept its connection alive
    put_path = _path(calendar) + "through-proxy.ics"
    assert ("PUT", put_path) in radicale.logged_requests(since=mark)
    # Visible directly on Radicale too.
    direct = httpx.get(radicale.url + put_path.lstrip("/"), auth=AUTH, timeout=HTTP_TIMEOUT)
    assert direct.status_code == 200
    assert "UID:through-proxy" in direct.text


def test_passthrough_is_faithful(
    radicale: RadicaleProcess, proxy: FaultProxy, calendar: Calendar
) -> None:
    path = _path(calendar) + "raw.ics"
    with (
        httpx.Client(base_url=proxy.url, auth=AUTH, timeout=HTTP_TIMEOUT) as via,
        httpx.Client(base_url=radicale.url, auth=AUTH, timeout=HTTP_TIMEOUT) as direct,
    ):
        created = via.put(
            path,
            content=_ics("raw"),
            headers={"Content-Type": "text/calendar", "If-None-Match": "*"},
        )
        assert created.status_code == 201
        again = via.put(path, content=_ics("raw"), headers={"If-None-Match": "*"})
        assert again.status_code == 412

        a, b = via.get(path), direct.get(path)
        assert (a.status_code, a.content) == (b.status_code, b.content)
        for header in ("etag", "content-type", "content-length"):
            assert a.headers[header] == b.headers[header]
        assert via.head(path).headers["etag"] == a.headers["etag"]

        # Chunked request body (generator content) is de-chunked and forwarded.
        def chunks() -> Iterator[bytes]:
            yield _ics("chunked", "Part one")[:50].encode()
            yield _ics("chunked", "Part one")[50:].encode()

        chunked = via.put(
            _path(calendar) + "chunked.ics",
            content=chunks(),
            headers={"Content-Type": "text/calendar", "If-Match": '"wrong"'},
        )
        assert chunked.status_code == 412
        chunked = via.put(
            _path(calendar) + "chunked.ics",
            content=chunks(),
            headers={"Content-Type": "text/calendar"},
        )
        assert chunked.status_code == 201
        assert "Part one" in direct.get(_path(calendar) + "chunked.ics").text

        propfind = via.request("PROPFIND", _path(calendar), headers={"Depth": "1"})
        assert propfind.status_code == 207
        assert "raw.ics" in propfind.text and "chunked.ics" in propfind.text

        assert via.delete(path, headers={"If-Match": a.headers["etag"]}).status_code in (200, 204)
        assert via.get(path).status_code == 404
        assert via.delete(path).status_code == 404

    assert proxy.methods() == [
        "PUT", "PUT", "GET", "HEAD", "PUT", "PUT", "PROPFIND", "DELETE", "GET", "DELETE",
    ]  # fmt: skip
    # The direct GETs never touched the proxy.
    assert len(proxy.requests("GET")) == 2


def test_keep_alive_reuses_client_connection(proxy: FaultProxy) -> None:
    with httpx.Client(base_url=proxy.url, auth=AUTH, timeout=HTTP_TIMEOUT) as client:
        first = client.request("PROPFIND", "alice/", headers={"Depth": "0"})
        second = client.request("PROPFIND", "alice/", headers={"Depth": "0"})
    assert first.status_code == second.status_code == 207
    assert len(proxy.requests("PROPFIND")) == 2
    assert proxy.connections_accepted == 1


# -- fault proxy: injected faults ------------------------------------------------------


def test_503_makes_caldav_raise(proxy: FaultProxy, calendar: Calendar) -> None:
    proxy.fail_next(1, status=503)
    with pytest.raises(caldav_error.DAVError) as excinfo:
        _events(calendar)
    assert "503" in str(excinfo.value)
    assert proxy.requests()[-1].status == 503
    assert proxy.pending_rules() == 0
    assert _events(calendar) == []  # the next request passes again


def test_caldav_retries_a_failed_put_once(proxy: FaultProxy, calendar: Calendar) -> None:
    """caldav's save() repeats a PUT that got a non-2xx answer (once, if vobject is present)."""
    proxy.fail_next(1, status=503, method="PUT")
    _save_event(calendar, "retried")
    assert [r.status for r in proxy.requests("PUT")] == [503, 201]


def test_429_carries_retry_after(proxy: FaultProxy, calendar: Calendar) -> None:
    proxy.fail_next(1, status=429, retry_after=2)
    raw = httpx.request("PROPFIND", proxy.url + "alice/", auth=AUTH, timeout=HTTP_TIMEOUT)
    assert raw.status_code == 429
    assert raw.headers["Retry-After"] == "2"

    proxy.fail_next(1, status=429, retry_after=2)
    with pytest.raises(caldav_error.RateLimitError) as excinfo:
        _events(calendar)
    assert excinfo.value.retry_after == "2"
    assert excinfo.value.retry_after_seconds == 2.0
    assert [r.status for r in proxy.requests()] == [429, 429]


def test_reset_makes_client_raise_connection_error(proxy: FaultProxy, calendar: Calendar) -> None:
    proxy.reset_next(1)
    with pytest.raises(niquests.exceptions.ConnectionError):
        _events(calendar)
    proxy.reset_next(1)
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        httpx.request("PROPFIND", proxy.url + "alice/", auth=AUTH, timeout=HTTP_TIMEOUT)
    assert proxy.wait_idle()
    assert [r.status for r in proxy.requests()] == [None, None]
    assert _events(calendar) == []


def test_reset_after_forward_loses_only_the_response(
    radicale: RadicaleProcess, proxy: FaultProxy, calendar: Calendar
) -> None:
    proxy.reset_next(1, after_forward=True, method="PUT")
    path = _path(calendar) + "lost-answer.ics"
    with pytest.raises(httpx.TransportError):
        httpx.put(
            proxy.url + path.lstrip("/"),
            content=_ics("lost-answer"),
            auth=AUTH,
            timeout=HTTP_TIMEOUT,
        )
    assert (
        httpx.get(radicale.url + path.lstrip("/"), auth=AUTH, timeout=HTTP_TIMEOUT).status_code
        == 200
    )


def test_delay_causes_read_timeout(proxy: FaultProxy, calendar: Calendar) -> None:
    slow_client = DAVClient(url=proxy.url, username="alice", password="secret", timeout=1)
    slow_view = slow_client.calendar(url=calendar.url)
    proxy.delay_next(1, 3.0, method="REPORT")
    started = time.monotonic()
    with pytest.raises(niquests.exceptions.Timeout):
        _events(slow_view)
    assert time.monotonic() - started < 2.5  # gave up before the proxy answered

    proxy.delay_next(1, 0.3)
    started = time.monotonic()
    response = httpx.request("PROPFIND", proxy.url + "alice/", auth=AUTH, timeout=5)
    assert response.status_code == 207
    assert time.monotonic() - started >= 0.3
    # The REPORT delayed above is still sleeping in the proxy: not idle yet.
    assert not proxy.wait_idle(timeout=0.05)


def test_fail_for_window(proxy: FaultProxy) -> None:
    window_end = time.monotonic() + 0.8
    proxy.fail_for(0.8, status=503)
    url = proxy.url + "alice/"
    statuses = [
        httpx.request("PROPFIND", url, auth=AUTH, timeout=HTTP_TIMEOUT).status_code
        for _ in range(3)
    ]
    assert statuses == [503, 503, 503]
    time.sleep(max(0.0, window_end - time.monotonic()) + 0.05)
    assert httpx.request("PROPFIND", url, auth=AUTH, timeout=HTTP_TIMEOUT).status_code == 207
    assert proxy.pending_rules() == 0


def test_rules_filter_by_method_and_path(proxy: FaultProxy) -> None:
    proxy.fail_next(1, status=503, method="PUT", path_contains="/acct-a/")
    base = proxy.url + "alice/"
    with httpx.Client(auth=AUTH, timeout=HTTP_TIMEOUT) as client:
        assert client.request("PROPFIND", base + "acct-a/").status_code == 404
        assert client.put(base + "acct-b/x.ics", content=_ics("x")).status_code == 409
        assert client.put(base + "acct-a/x.ics", content=_ics("x")).status_code == 503
        assert client.put(base + "acct-a/x.ics", content=_ics("x")).status_code == 409
    assert [r.status for r in proxy.requests("PUT", path_contains="/acct-a/")] == [503, 409]


def test_rules_apply_in_order(proxy: FaultProxy) -> None:
    proxy.fail_next(1, status=500)
    proxy.fail_next(2, status=503, retry_after="Wed, 21 Oct 2037 07:28:00 GMT")
    url = proxy.url + "alice/"
    got = [httpx.request("PROPFIND", url, auth=AUTH, timeout=HTTP_TIMEOUT) for _ in range(4)]
    assert [r.status_code for r in got] == [500, 503, 503, 207]
    assert "Retry-After" not in got[0].headers
    assert got[1].headers["Retry-After"] == "Wed, 21 Oct 2037 07:28:00 GMT"
    proxy.fail_next(5, status=503)
    proxy.clear_rules()
    assert httpx.request("PROPFIND", url, auth=AUTH, timeout=HTTP_TIMEOUT).status_code == 207


def test_request_log(proxy: FaultProxy, calendar: Calendar) -> None:
    _save_event(calendar, "logged")
    _events(calendar)
    records = proxy.requests()
    assert all(isinstance(r, LoggedRequest) for r in records)
    timestamp, method, path, status = records[0]
    assert method == "PUT" and path.endswith("/logged.ics") and status == 201
    assert timestamp <= records[-1].timestamp
    assert proxy.requests(method="put") == proxy.requests("PUT")
    assert proxy.requests(method="DELETE") == []
    proxy.clear_log()
    assert proxy.requests() == []


def test_unreachable_upstream_can_reset_instead_of_502() -> None:
    dead = f"http://127.0.0.1:{free_port()}/"
    with FaultProxy(dead) as gateway:
        assert httpx.get(gateway.url, timeout=HTTP_TIMEOUT).status_code == 502
    with FaultProxy(dead, upstream_error_status=None) as resetting:
        with pytest.raises(httpx.TransportError):
            httpx.get(resetting.url, timeout=HTTP_TIMEOUT)
        assert resetting.wait_idle()
        assert resetting.requests()[0].status is None
