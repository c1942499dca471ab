"""Hostile calendar servers: endless, huge and slow answers, and DNS that changes its mind.

Whatever a server sends, the API process and the worker keep their memory
flat, every request ends by its deadline with one sentence naming the
server's fault, and one account's slow server never delays another account.
Peak memory is measured on real child processes (``VmHWM`` in /proc).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from caljournal.adapters.caldav_client import (
    AddressRefusedError,
    CalDAVError,
    DeadlineExceededError,
    ResponseTooLargeError,
    ServerAccess,
    UnreachableError,
    open_client,
    request,
)
from caljournal.adapters.secrets import Credentials
from caljournal.adapters.transport import TransferLimits
from caljournal.appointments import Booking
from caljournal.bootstrap import Container, bootstrap
from caljournal.settings import load_settings
from tests.conftest import open_tenant, operator, sqlite_url
from tests.support.apiserver import serve_api
from tests.support.calendars import wait_until
from tests.support.hostile import HostileServer
from tests.support.ports import free_port
from tests.support.radicale import RadicaleProcess

MB = 1024 * 1024
#: Generous bound on the peak memory growth of a process under one hostile
#: server; before the caps the same cases grew by hundreds of MB to GBs.
GROWTH_BOUND_MB = 100
FIGURES: list[str] = []

#: (mode, error class, words of the message) for one request of each kind.
CASES = [
    ("endless", ResponseTooLargeError, "sent more than"),
    ("huge", ResponseTooLargeError, "sent more than"),
    ("huge_chunked", ResponseTooLargeError, "sent more than"),
    ("slow_body", DeadlineExceededError, "did not finish answering within"),
    ("slow_headers", DeadlineExceededError, "did not finish answering within"),
    ("endless_headers", UnreachableError, "sent invalid HTTP"),
]


def peak_rss_mb(pid: int) -> float:
    """Return the peak resident memory (VmHWM) of process ``pid`` in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for process {pid}")


def reset_peak(pid: int) -> None:
    """Reset the peak resident memory of ``pid`` to its current value (Linux >= 4.0).

    Only for per-case figures: the asserts compare with the peak before the
    first case, which holds whether or not the reset is permitted.
    """
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


def note(figure: str) -> None:
    """Keep a measured figure for the summary at the end of the module."""
    FIGURES.append(figure)
    print(figure)


@pytest.fixture(scope="module", autouse=True)
def _print_figures() -> Iterator[None]:
    yield
    if FIGURES:
        sys.stderr.write("\nhostile-server figures:\n  " + "\n  ".join(FIGURES) + "\n")


def child_env(database_url: str, key_file: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALJOURNAL_")}
    env.update(
        {
            "CALJOURNAL_DATABASE_URL": database_url,
            "CALJOURNAL_SECRET_KEY_FILE": str(key_file),
            "CALJOURNAL_ALLOW_PRIVATE_ADDRESSES": "true",
            "CALJOURNAL_CALDAV_TIMEOUT": "3",
            "CALJOURNAL_CALDAV_REQUEST_DEADLINE": "6",
            "CALJOURNAL_CALDAV_LISTING_DEADLINE": "12",
            "CALJOURNAL_CALDAV_LINK_DEADLINE": "20",
            "CALJOURNAL_WORKER_LEASE_TTL": "3",
            "CALJOURNAL_WORKER_POLL": "0.05",
            **extra,
        }
    )
    return env


@dataclass
class Child:
    """A caljournal command running as a child process."""

    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_child(args: list[str], env: dict[str, str], log: Path) -> Child:
    with open(log, "ab") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "caljournal", *args],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    return Child(process, log)


# -- one request, in this process ---------------------------------------------------


@pytest.mark.parametrize(("mode", "error", "words"), CASES)
def test_one_request_to_a_hostile_server_ends_with_the_servers_fault(
    mode: str, error: type[CalDAVError], words: str
) -> None:
    limits = TransferLimits(request_seconds=4)
    with HostileServer(drip_seconds=1) as hostile:
        hostile.misbehave(mode)
        access = ServerAccess(
            hostile.url + "/cal/",
            Credentials("u", "p"),
            allow_private=True,
            timeout=3,
            limits=limits,
        )
        client = open_client(access)
        started = time.monotonic()
        with pytest.raises(error) as raised:
            request(client, hostile.url + "/cal/", "PROPFIND", "listing the calendar", "<x/>")
        elapsed = time.monotonic() - started
    assert words in raised.value.message
    assert "while listing the calendar" in raised.value.message
    # Before the deadline existed a dripping server held one request for hours.
    assert elapsed < 4 + 30


@pytest.mark.parametrize("server", ["radicale", "xandikos"])
def test_a_multiget_too_large_for_one_answer_is_asked_for_in_smaller_batches(
    server: str, request: pytest.FixtureRequest
) -> None:
    from caljournal.adapters.calendar_reader import CalendarReader

    real = request.getfixturevalue(server)
    cal_id = f"big-{uuid.uuid4().hex[:8]}"
    if server == "radicale":
        calendar = real.make_calendar("alice", "secret", cal_id, cal_id=cal_id)
    else:
        calendar = real.make_calendar(cal_id, cal_id=cal_id)
    padding = "X" * 300_000
    for i in range(4):
        calendar.save_event(
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//t//EN\r\nBEGIN:VEVENT\r\n"
            f"UID:big-{i}\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:20260601T080000Z\r\n"
            f"DTEND:20260601T090000Z\r\nSUMMARY:big {i}\r\nDESCRIPTION:{padding}\r\n"
            "END:VEVENT\r\nEND:VCALENDAR\r\n"
        )
    limits = TransferLimits(multiget_bytes=700_000)
    url = str(calendar.url)
    access = ServerAccess(url, Credentials("alice", "secret"), allow_private=True, limits=limits)
    reader = CalendarReader(access, url)
    try:
        first = reader.changes_since(None)
        hrefs = list(reader.listing().changed)
        loaded = reader.load(hrefs)
    finally:
        reader.close()
    assert sorted(first.changed) == sorted(hrefs)
    assert len(hrefs) == 4
    assert sorted(loaded.objects) == sorted(hrefs)
    assert all(len(data) > 300_000 for data, _etag in loaded.objects.values())
    assert loaded.requests > 1


def _small_calendar(real: Any, server: str, count: int) -> str:
    """Fill a new calendar of ``real`` with ``count`` small events; return its URL."""
    cal_id = f"many-{uuid.uuid4().hex[:8]}"
    if server == "radicale":
        calendar = real.make_calendar("alice", "secret", cal_id, cal_id=cal_id)
    else:
        calendar = real.make_calendar(cal_id, cal_id=cal_id)
    for i in range(count):
        calendar.save_event(
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//t//EN\r\nBEGIN:VEVENT\r\n"
            f"UID:many-{i}\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:20260601T080000Z\r\n"
            f"DTEND:20260601T090000Z\r\nSUMMARY:small {i}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
        )
    return str(calendar.url)


@pytest.mark.parametrize("server", ["radicale", "xandikos"])
def test_multigets_grow_while_the_server_answers_quickly_and_not_when_it_is_slow(
    server: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    from caljournal.adapters import calendar_reader
    from caljournal.adapters.calendar_reader import CalendarReader

    url = _small_calendar(request.getfixturevalue(server), server, 250)
    access = ServerAccess(url, Credentials("alice", "secret"), allow_private=True)

    def load(count: int) -> tuple[int, int]:
        reader = CalendarReader(access, url)
        try:
            hrefs = sorted(reader.listing().changed)[:count]
            loaded = reader.load(hrefs)
        finally:
            reader.close()
        assert sorted(loaded.objects) == hrefs and not loaded.missing
        return loaded.requests, reader.multiget_batch

    # The thresholds are set so that no answer's timing on a busy machine decides.
    # Every answer quick: the second multiget asks for 200, one more for the last 50.
    monkeypatch.setattr(calendar_reader, "MULTIGET_QUICK", 3600.0)
    assert load(250) == (2, 200)
    # Answers neither quick nor slow: 100 at a time throughout.
    monkeypatch.setattr(calendar_reader, "MULTIGET_QUICK", -1.0)
    monkeypatch.setattr(calendar_reader, "MULTIGET_SLOW_SHARE", 3600.0)
    assert load(250) == (3, 100)
    # Every answer slow (past its share of the request deadline): halved each time.
    monkeypatch.setattr(calendar_reader, "MULTIGET_SLOW_SHARE", -1.0)
    assert load(150) == (2, 25)


# -- addresses: the address checked is the address connected to ---------------------


class FakeDNS:
    """Answer one name with a list of addresses in turn (the last one repeats)."""

    def __init__(self, name: str, answers: list[str]) -> None:
        self.name = name
        self.answers = answers
        self.asked = 0
        self._real = socket.getaddrinfo

    def __call__(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in (self.name, self.name.encode()):
            address = self.answers[min(self.asked, len(self.answers) - 1)]
            self.asked += 1
            return self._real(address, port, *args, **kwargs)
        return self._real(host, port, *args, **kwargs)


@pytest.fixture
def loopback_server() -> Iterator[tuple[int, list[str]]]:
    """Serve 207 answers on a loopback port; yield the port and the paths asked for."""
    seen: list[str] = []
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                data = conn.recv(65536)
                seen.append(data.split(b" ")[1].decode() if b" " in data else "?")
                conn.sendall(b"HTTP/1.1 207 Multi-Status\r\nContent-Length: 0\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], seen
    stop.set()
    thread.join(timeout=5)
    listener.close()


def test_a_name_that_resolves_differently_the_second_time_is_connected_where_checked(
    monkeypatch: pytest.MonkeyPatch, loopback_server: tuple[int, list[str]]
) -> None:
    """DNS rebinding: the check saw loopback (allowed here), a later answer is link-local."""
    port, seen = loopback_server
    dns = FakeDNS("rebind.test", ["127.0.0.1", "169.254.169.254"])
    monkeypatch.setattr(socket, "getaddrinfo", dns)
    access = ServerAccess(
        f"http://rebind.test:{port}/cal/", Credentials("u", "p"), allow_private=True, timeout=3
    )
    client = open_client(access)
    response = request(client, access.url, "PROPFIND", "asking", "<x/>", ok=(207,))
    assert response.status == 207
    assert seen == ["/cal/"]
    assert dns.asked == 1


def test_a_name_whose_later_answer_is_refused_never_reaches_that_address(
    monkeypatch: pytest.MonkeyPatch, loopback_server: tuple[int, list[str]]
) -> None:
    """The reverse: first answer public-looking is never used to connect elsewhere."""
    port, seen = loopback_server
    dns = FakeDNS("rebind.test", ["127.0.0.1"])
    monkeypatch.setattr(socket, "getaddrinfo", dns)
    access = ServerAccess(
        f"http://rebind.test:{port}/cal/", Credentials("u", "p"), allow_private=False, timeout=3
    )
    with pytest.raises(AddressRefusedError) as raised:
        request(open_client(access), access.url, "PROPFIND", "asking", "<x/>", ok=(207,))
    assert seen == []
    assert "rebind.test is refused" in raised.value.message
    assert "127.0.0.1" not in raised.value.message


@pytest.mark.parametrize("allow_private", [False, True])
def test_loopback_is_connected_to_only_when_allowed(
    allow_private: bool, loopback_server: tuple[int, list[str]]
) -> None:
    port, seen = loopback_server
    access = ServerAccess(
        f"http://localhost:{port}/cal/",
        Credentials("u", "p"),
        allow_private=allow_private,
        timeout=3,
    )
    client = open_client(access)
    if allow_private:
        assert request(client, access.url, "PROPFIND", "asking", "<x/>", ok=(207,)).status == 207
        assert seen == ["/cal/"]
    else:
        with pytest.raises(AddressRefusedError):
            request(client, access.url, "PROPFIND", "asking", "<x/>", ok=(207,))
        assert seen == []


# -- the API process: POST /link against a hostile server ---------------------------


@pytest.fixture
def api_process(tmp_path: Path) -> Iterator[tuple[str, Container, Child]]:
    database_url = sqlite_url(tmp_path)
    key_file = tmp_path / "shared.key"
    container = bootstrap(
        load_settings(
            database_url=database_url, secret_key_file=key_file, allow_private_addresses=True
        )
    )
    port = free_port()
    child = start_child(
        ["serve", "--no-worker", "--port", str(port)],
        child_env(database_url, key_file),
        tmp_path / "api.log",
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(up, timeout=60)
        yield url, container, child
    finally:
        child.stop()
        container.close()


def test_post_link_to_hostile_servers_is_a_422_and_the_api_keeps_its_memory(
    api_process: tuple[str, Container, Child],
) -> None:
    url, container, child = api_process
    tenant = open_tenant(container, "acme")
    baseline = highest = peak_rss_mb(child.pid)
    for mode, _error, words in CASES:
        with HostileServer(drip_seconds=1) as hostile:
            hostile.misbehave(mode)
            reset_peak(child.pid)
            before = peak_rss_mb(child.pid)
            started = time.monotonic()
            response = httpx.post(
                f"{url}/link",
                json={"url": hostile.url + "/cal/", "username": "u", "password": "p"},
                headers=tenant.headers,
                timeout=120,
            )
            elapsed = time.monotonic() - started
            peak = peak_rss_mb(child.pid)
        body = response.json()
        note(
            f"API POST /link {mode}: {response.status_code} in {elapsed:.1f} s, peak RSS "
            f"{peak:.0f} MiB ({peak - before:+.0f}), server sent {hostile.sent_bytes} bytes: "
            f"{body.get('message')}"
        )
        assert response.status_code == 422, response.text
        assert body["field"] == "url"
        assert words in body["message"]
        highest = max(highest, peak)
        assert highest - baseline < GROWTH_BOUND_MB
        # The link deadline (20 s here) bounds discovery, however many candidates.
        assert elapsed < 20 + 30
    assert child.process.poll() is None


def test_one_accounts_slow_server_does_not_delay_another_accounts_calls(
    container: Container, radicale: RadicaleProcess
) -> None:
    slow = open_tenant(container, "slow")
    other = open_tenant(container, "other")
    cal_id = f"other-{uuid.uuid4().hex[:8]}"
    radicale.make_calendar("alice", "secret", cal_id, cal_id=cal_id)
    container.links.link(
        other.account_id,
        f"{radicale.url}alice/{cal_id}/",
        Credentials("alice", "secret"),
        operator(),
    )
    attempts = 45  # more than the shared pool's 40 threads
    with HostileServer(drip_seconds=5) as hostile, serve_api(container) as api:
        hostile.misbehave("slow_headers")

        def link_slow() -> httpx.Response:
            return httpx.post(
                f"{api}/link",
                json={"url": hostile.url + "/cal/", "username": "u", "password": "p"},
                headers=slow.headers,
                timeout=600,
            )

        pool = concurrent.futures.ThreadPoolExecutor(max_workers=attempts)
        futures = [pool.submit(link_slow) for _ in range(attempts)]
        refused = wait_until(
            lambda: (
                done
                if len(done := [f for f in futures if f.done()]) >= attempts - 2
                and len(hostile.hostile_requests) >= 2
                else None
            ),
            timeout=120,
        )
        asked = time.monotonic()
        status = httpx.get(f"{api}/link/status", headers=other.headers, timeout=60)
        note(
            f"GET /link/status of another account with {attempts} slow links in flight: "
            f"{status.status_code} in {time.monotonic() - asked:.2f} s"
        )
        still_running = [f for f in futures if not f.done()]
        assert status.status_code == 200, status.text
        assert status.json()["link_status"] == "active"
        # The other account was answered while the slow account's calls still hung.
        assert len(still_running) == 2
        answers = [f.result() for f in refused]
        assert {a.status_code for a in answers} == {429}
        assert "already has 2 calendar-server operations running" in answers[0].json()["message"]
        hostile.close()
        finished = [f.result() for f in still_running]
        pool.shutdown(wait=True)
    assert {f.status_code for f in finished} == {422}


# -- the worker process: poll and push against a hostile server ---------------------


def remote_event(radicale: RadicaleProcess, cal_id: str, uid: str) -> None:
    """Put an event into alice's calendar behind caljournal's back."""
    response = httpx.put(
        f"{radicale.url}alice/{cal_id}/{uid}.ics",
        content=(
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//t//EN\r\nBEGIN:VEVENT\r\n"
            f"UID:{uid}\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:20260601T080000Z\r\n"
            "DTEND:20260601T090000Z\r\nSUMMARY:remote\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
        ).encode(),
        headers={"Content-Type": "text/calendar"},
        auth=("alice", "secret"),
        timeout=60,
    )
    assert response.status_code in (200, 201, 204), response.text


def shown_error(status: dict[str, Any], words: str) -> str | None:
    """Return the account's error (or failed push) in ``status`` that has ``words``."""
    errors = [status["last_error"]] + [f["error"] for f in status["failed"]]
    return next((e for e in errors if e and words in e), None)


def test_the_worker_polls_and_pushes_through_hostile_answers_with_flat_memory(
    tmp_path: Path, radicale: RadicaleProcess
) -> None:
    database_url = sqlite_url(tmp_path)
    key_file = tmp_path / "shared.key"
    container = bootstrap(
        load_settings(
            database_url=database_url, secret_key_file=key_file, allow_private_addresses=True
        )
    )
    tenant = open_tenant(container, "acme")
    cal_id = f"hostile-{uuid.uuid4().hex[:8]}"
    radicale.make_calendar("alice", "secret", cal_id, cal_id=cal_id)
    hostile = HostileServer(radicale.url, drip_seconds=1)
    worker = start_child(
        ["worker", "--verbose"], child_env(database_url, key_file), tmp_path / "worker.log"
    )
    try:
        container.links.link(
            tenant.account_id,
            f"{hostile.url}/alice/{cal_id}/",
            Credentials("alice", "secret"),
            operator(),
        )

        def status() -> dict[str, Any]:
            return container.sync.status(tenant.account_id)

        wait_until(lambda: status()["inbound"]["last_poll"], timeout=60)
        cases = [("REPORT", mode, words) for mode, _e, words in CASES] + [
            ("multiget", "endless", "sent more than 32 MiB for one multiget answer"),
            ("multiget", "slow_body", "did not finish answering within"),
            ("PUT", "endless", "sent more than"),
            ("PUT", "slow_headers", "did not finish answering within"),
        ]
        baseline = highest = peak_rss_mb(worker.pid)
        for n, (method, mode, words) in enumerate(cases):
            if method == "multiget":
                # Every REPORT that asks for calendar data: a delta asking for it
                # falls back to ETags only when its answer is too large, and the
                # change is then loaded by multiget.
                hostile.misbehave(mode, methods={"REPORT"}, body_contains=b"calendar-data")
            else:
                hostile.misbehave(mode, methods={method})
            asked = len(hostile.hostile_requests)
            reset_peak(worker.pid)
            before = peak_rss_mb(worker.pid)
            started = time.monotonic()
            if method == "PUT":
                start = datetime(2026, 6, 1, 8, tzinfo=UTC) + timedelta(hours=n)
                container.appointments.book(
                    tenant.account_id,
                    Booking(f"n{n}", start, start + timedelta(minutes=30), "Europe/Berlin"),
                    operator(),
                )
            else:
                if method == "multiget":  # a remote change, so that the poll loads it
                    remote_event(radicale, cal_id, f"remote-{n}")
                container.links.request_poll(tenant.account_id, operator())
            wait_until(lambda a=asked: len(hostile.hostile_requests) > a, timeout=120)
            shown = wait_until(lambda w=words: shown_error(status(), w), timeout=120)
            elapsed = time.monotonic() - started
            peak = peak_rss_mb(worker.pid)
            note(
                f"worker {method} {mode}: error in status after {elapsed:.1f} s, peak RSS "
                f"{peak:.0f} MiB ({peak - before:+.0f}): {shown}"
            )
            highest = max(highest, peak)
            assert highest - baseline < GROWTH_BOUND_MB
            hostile.misbehave(None)
            # Recovered: the next poll through the now honest server clears the error.
            container.links.request_poll(tenant.account_id, operator())
            wait_until(lambda: status()["last_error"] is None, timeout=120)
        assert worker.process.poll() is None
    finally:
        worker.stop()
        hostile.close()
        container.close()
