"""The worker finds pending pushes by journal position, whatever the writers' clocks say."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import eventsourcing.domain
import pytest
from fastapi.testclient import TestClient

from caljournal.bootstrap import Container
from caljournal.projections.outbound import OutboundWorker
from tests.conftest import Tenant
from tests.integration.test_outbound import FAST, book, link_through, new_calendar
from tests.support.calendars import remote_events, wait_until
from tests.support.faultproxy import FaultProxy
from tests.support.radicale import RadicaleProcess

BEHIND = timedelta(minutes=2)


@pytest.fixture
def running_worker(container: Container) -> Iterator[OutboundWorker]:
    worker = container.outbound_worker(FAST).start()
    yield worker
    worker.stop()


def test_a_change_written_with_a_clock_behind_is_still_pushed(
    container: Container,
    client: TestClient,
    radicale: RadicaleProcess,
    acme: Tenant,
    running_worker: OutboundWorker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calendar, path = new_calendar(radicale)
    with FaultProxy(radicale.url) as proxy:
        link_through(container, acme, proxy, path)
        wait_until(lambda: str(acme.account_id) in running_worker.served_accounts(), timeout=10)
        first = book(client, acme, "On time", 9)
        wait_until(lambda: f"{first['id']}@caljournal" in remote_events(calendar), timeout=30)

        # A writer whose clock runs two minutes behind: its events carry old timestamps,
        # older than the calendar choice and every pass the worker has made.
        now = eventsourcing.domain.datetime_now_with_tzinfo
        with monkeypatch.context() as patch:
            patch.setattr(eventsourcing.domain, "datetime_now_with_tzinfo", lambda: now() - BEHIND)
            late = book(client, acme, "Written late", 10)
        chosen = container.links.get(acme.account_id)["calendar_chosen_on"]
        # Older than the calendar choice: a wall-clock filter would never push it.
        assert datetime.fromisoformat(late["modified_on"]) < datetime.fromisoformat(chosen)

        uid = f"{late['id']}@caljournal"
        event = wait_until(lambda: remote_events(calendar).get(uid), timeout=30)[0]
        assert str(event["SUMMARY"]) == "Written late"
        status = wait_until(
            lambda: (
                (s := client.get("/link/status", headers=acme.headers).json())["pending"] == 0 and s
            )
        )
        assert status["failed"] == []
