"""The full-listing check against real servers: an object created by caljournal and
deleted in the calendar before the next poll is noticed (Xandikos' delta never reports it).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import httpx
import pytest
from fastapi.testclient import TestClient

from caljournal.adapters.caldav_storage import CalDAVStorage
from caljournal.adapters.providers import get_profile
from caljournal.adapters.secrets import Credentials
from caljournal.appointments import Booking
from caljournal.bootstrap import Container
from caljournal.domain.cause import Cause, Origin
from caljournal.domain.link import CalendarLink
from caljournal.projections.inbound import CheckPolicy, Poller, PollReport
from caljournal.projections.outbound import OutboundWorker, PushReconciler
from caljournal.projections.push import href_for
from tests.conftest import Tenant, operator
from tests.integration.test_cli import run
from tests.integration.test_outbound import FAST
from tests.support.calendars import wait_until
from tests.support.radicale import RadicaleProcess
from tests.support.xandikos import XandikosProcess

BERLIN = ZoneInfo("Europe/Berlin")
API = Cause(Origin.API, "token:acme/default", "test")
AFTER_WRITES = CheckPolicy(interval=3600, spacing=0)


@dataclass
class Server:
    kind: str
    calendar_url: str
    auth: tuple[str, str]

    def delete(self, href: str) -> None:
        """Delete an object as another calendar client would."""
        response = httpx.delete(href, auth=self.auth, timeout=30)
        assert response.status_code in (200, 204), response.text

    def exists(self, href: str) -> bool:
        return httpx.get(href, auth=self.auth, timeout=30).status_code == 200


@pytest.fixture(params=["radicale", "xandikos"])
def server(request: pytest.FixtureRequest) -> Server:
    cal_id = f"chk-{uuid.uuid4().hex[:8]}"
    if request.param == "radicale":
        radicale: RadicaleProcess = request.getfixturevalue("radicale")
        radicale.make_calendar("alice", "secret", cal_id, cal_id=cal_id)
        return Server("radicale", f"{radicale.url}alice/{cal_id}/", ("alice", "secret"))
    xandikos: XandikosProcess = request.getfixturevalue("xandikos")
    xandikos.make_calendar(cal_id, cal_id=cal_id)
    return Server("xandikos", f"{xandikos.principal_url}calendars/{cal_id}/", ("user", "x"))


@dataclass
class Linked:
    container: Container
    tenant: Tenant
    server: Server
    url: str

    @property
    def account(self) -> str:
        return str(self.tenant.account_id)

    def poll(self) -> PollReport:
        stored = self.container.journal.repository.get(CalendarLink.id_for(self.tenant.account_id))
        reader = CalDAVStorage(
            self.container.links.access(stored), self.url, get_profile(stored.provider)
        )
        try:
            return Poller(
                self.container.journal,
                reader,
                self.container.sync_state,
                self.account,
                self.container.links.get(self.tenant.account_id),
                lambda: Cause(Origin.CALDAV, "worker:test", f"poll-{uuid.uuid4()}"),
                check=AFTER_WRITES,
            ).poll()
        finally:
            reader.close()

    def push(self) -> int:
        worker = OutboundWorker(self.container.journal, self.container.links, FAST)
        push = PushReconciler(
            worker, self.account, self.container.links.get(self.tenant.account_id), lambda: True
        )
        try:
            return push.run_pass()
        finally:
            push.close()

    def book(self, title: str, day: int) -> dict[str, Any]:
        start = datetime(2026, 4, day, 10, tzinfo=BERLIN)
        booking = Booking(title, start, start + timedelta(hours=1), "Europe/Berlin")
        return self.container.appointments.book(self.tenant.account_id, booking, API).state

    def state(self, appointment_id: str) -> dict[str, Any]:
        return self.container.appointments.get(None, UUID(appointment_id))


@pytest.fixture
def linked(container: Container, acme: Tenant, server: Server) -> Linked:
    result = container.links.link(
        acme.account_id, server.calendar_url, Credentials(*server.auth), operator()
    )
    assert result.state["status"] == "active" and result.state["sync_tokens"], result.as_dict()
    return Linked(container, acme, server, str(result.state["calendar_url"]))


def test_an_object_deleted_in_the_calendar_before_the_next_poll_cancels_its_appointment(
    linked: Linked,
) -> None:
    kept = linked.book("Kept", 6)
    linked.poll()  # the first poll: sets the sync token before our writes
    booked = linked.book("Deleted before the next poll", 7)
    assert linked.push() == 2
    href = href_for(linked.url, booked["id"])
    assert linked.server.exists(href)
    linked.server.delete(href)

    report = linked.poll()

    assert report.checked
    state = linked.state(booked["id"])
    assert state["status"] == "cancelled" and state["cancel_origin"] == "caldav"
    assert linked.state(kept["id"])["status"] == "booked"
    check = linked.container.sync.status(linked.tenant.account_id)["inbound"]["calendar_check"]
    assert check["checks"] >= 1 and check["last"] is not None
    # Radicale's delta reports the deletion; Xandikos' leaves it out and only the check sees it.
    found = {"cancel": 1} if linked.server.kind == "xandikos" else {}
    assert report.found == found
    assert check["differences"] == len(found) and check["last_differences"] == found
    assert linked.push() == 0 and not linked.server.exists(href)


@pytest.fixture
def worker(container: Container) -> Iterator[OutboundWorker]:
    config = FAST.__class__(**{**FAST.__dict__, "check": AFTER_WRITES})
    running = container.outbound_worker(config).start()
    yield running
    running.stop()


def test_the_worker_notices_the_deletion_xandikos_never_reports(
    container: Container,
    client: TestClient,
    acme: Tenant,
    xandikos: XandikosProcess,
    worker: OutboundWorker,
    database_url: str,
    tmp_path: Path,
) -> None:
    cal_id = f"chk-{uuid.uuid4().hex[:8]}"
    xandikos.make_calendar(cal_id, cal_id=cal_id)
    server = Server("xandikos", f"{xandikos.principal_url}calendars/{cal_id}/", ("user", "x"))
    linked = client.post(
        "/link",
        json={"url": server.calendar_url, "username": "user", "password": "x"},
        headers=acme.headers,
    )
    assert linked.status_code == 201, linked.text
    url = linked.json()["link"]["calendar_url"]
    records = container.sync_state
    wait_until(lambda: records.inbound_state(str(acme.account_id)).sync_token, timeout=30)
    start = datetime(2026, 4, 7, 10, tzinfo=BERLIN).isoformat()
    end = datetime(2026, 4, 7, 11, tzinfo=BERLIN).isoformat()
    booked = client.post(
        "/appointments",
        json={"title": "Gone", "start": start, "end": end, "timezone": "Europe/Berlin"},
        headers=acme.headers,
    ).json()
    href = href_for(url, booked["id"])
    wait_until(lambda: getattr(records.copy_of(booked["id"]), "present", False), timeout=30)
    server.delete(href)

    assert client.post("/link/poll", headers=acme.headers).status_code == 202

    def cancelled() -> bool:
        got = client.get(f"/appointments/{booked['id']}", headers=acme.headers).json()
        return got["status"] == "cancelled"

    wait_until(cancelled, timeout=60)
    got = client.get(f"/appointments/{booked['id']}", headers=acme.headers).json()
    assert got["cancel_origin"] == "caldav"
    status = client.get("/link/status", headers=acme.headers).json()
    assert status["inbound"]["calendar_check"]["differences"] == 1
    assert status["inbound"]["calendar_check"]["last_differences"] == {"cancel": 1}
    assert not server.exists(href)
    shown = run(["status", "acme"], tmp_path, CALJOURNAL_DATABASE_URL=database_url)
    assert shown.returncode == 0, shown.stderr
    rows = [" ".join(line.split("│")[1:3]).split() for line in shown.stdout.splitlines()]
    assert ["calendar", "check", "differences", "1"] in rows
