"""The full-listing check finds what a server's delta leaves out (against a calendar double).

The calendar is the storage port in memory (``MemoryStorage``), answering deltas
like Xandikos: an object created and deleted after the token is not reported,
and changes can be lost from deltas altogether. The journal is a real SQLite file.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import pytest

from caljournal.adapters.memory_storage import MemoryStorage
from caljournal.adapters.syncstate import CalendarCheck, PendingPush
from caljournal.appointments import Booking
from caljournal.bootstrap import Container, bootstrap
from caljournal.domain.cause import Cause, Origin
from caljournal.projections.inbound import CheckPolicy, Poller, PollReport
from caljournal.projections.push import Pusher, href_for, render
from caljournal.settings import load_settings
from tests.conftest import open_tenant, sqlite_url

URL = "https://calendar.example/user/calendars/work/"
BERLIN = ZoneInfo("Europe/Berlin")
API = Cause(Origin.API, "token:acme/default", "test")
QUIET = CheckPolicy(interval=3600, spacing=3600)  # no check unless forced
AFTER_WRITES = CheckPolicy(interval=3600, spacing=0)  # check whenever we wrote since the last

FOREIGN = (
    b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//another client//EN\r\nBEGIN:VEVENT\r\n"
    b"UID:foreign-1\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:20260410T080000Z\r\n"
    b"DTEND:20260410T090000Z\r\nSUMMARY:Dentist\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
)


@dataclass
class World:
    container: Container
    account: str
    account_id: UUID
    calendar: MemoryStorage

    @property
    def reader(self) -> MemoryStorage:
        """The calendar, as the poller reads it (one object serves both)."""
        return self.calendar

    def book(self, title: str, day: int) -> dict[str, Any]:
        start = datetime(2026, 4, day, 10, tzinfo=BERLIN)
        booking = Booking(title, start, start + timedelta(hours=1), "Europe/Berlin")
        return self.container.appointments.book(self.account_id, booking, API).state

    def state(self, appointment_id: str) -> dict[str, Any]:
        return self.container.appointments.get(None, UUID(appointment_id))

    def poll(self, check: CheckPolicy) -> PollReport:
        self.reader.requests.clear()
        link = {"calendar_url": URL, "sync_tokens": True, "provider": "xandikos"}
        return Poller(
            self.container.journal,
            self.reader,
            self.container.sync_state,
            self.account,
            link,
            lambda: Cause(Origin.CALDAV, "worker:test", f"poll-{uuid.uuid4()}"),
            check=check,
        ).poll()

    def pending(self) -> list[PendingPush]:
        return self.container.sync_state.pending_pushes(self.account, URL, 0, 100)

    def push(self) -> list[str]:
        """Push what is pending, as the worker does; return the actions taken."""
        pusher = Pusher(
            self.container.journal,
            self.calendar,
            self.container.sync_state,
            self.account,
            URL,
            lambda: Cause(Origin.CALDAV, "worker:test", f"push-{uuid.uuid4()}"),
        )
        pending = self.pending()
        pusher.begin(pending)
        done = [pusher.push(item) for item in pending]
        pusher.flush()
        return done

    def events(self) -> int:
        return self.container.journal.journal_recorder.max_notification_id() or 0

    def check_record(self) -> CalendarCheck:
        return self.container.sync_state.calendar_check(self.account)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    container = bootstrap(
        load_settings(database_url=sqlite_url(tmp_path), secret_key_file=tmp_path / "k.key")
    )
    tenant = open_tenant(container, "acme")
    calendar = MemoryStorage(URL, drops_short_lived=True)
    yield World(container, str(tenant.account_id), tenant.account_id, calendar)
    container.close()


def test_an_object_created_and_deleted_between_polls_is_found_and_cancels(world: World) -> None:
    booked = world.book("Haircut", 6)
    world.poll(AFTER_WRITES)  # the first poll: everything, and a token
    assert world.push() == ["create"]
    world.calendar.remove(href_for(URL, booked["id"]))  # the user deletes it before the next poll

    blind = world.poll(QUIET)
    assert not blind.checked and world.reader.requests == ["sync-collection"]
    assert world.state(booked["id"])["status"] == "booked"  # the delta alone misses it

    report = world.poll(AFTER_WRITES)
    assert report.checked and world.reader.requests == ["sync-collection", "listing"]
    assert report.found == {"cancel": 1}
    state = world.state(booked["id"])
    assert state["status"] == "cancelled" and state["cancel_origin"] == "caldav"
    check = world.check_record()
    assert check.differences == 1 and '"cancel": 1' in (check.last_found or "")
    assert world.push() == []  # nothing to write back: the journal agrees with the calendar


def test_a_check_costs_one_listing_when_nothing_differs_and_is_spaced(world: World) -> None:
    first = world.book("First", 6)
    world.poll(AFTER_WRITES)
    world.push()
    before = world.events()
    report = world.poll(AFTER_WRITES)  # our write since the last check: compare
    assert report.checked and world.reader.requests == ["sync-collection", "listing"]
    assert report.counts == {} and report.found == {} and world.events() == before

    world.book("Second", 7)
    world.push()
    spaced = CheckPolicy(interval=3600, spacing=3600)
    assert not world.poll(spaced).checked  # written since, but the last listing is too recent
    assert world.reader.requests == ["sync-collection"]
    assert world.poll(AFTER_WRITES).checked  # no listing too recent: compare now
    assert world.check_record().checks == 2

    idle = world.poll(AFTER_WRITES)  # no writes since the last check: the delta suffices
    assert not idle.checked and world.reader.requests == ["sync-collection"]
    scheduled = world.poll(CheckPolicy(interval=0, spacing=0))
    assert scheduled.checked and world.reader.requests == ["sync-collection", "listing"]
    assert world.state(first["id"])["status"] == "booked"


def test_every_difference_a_lost_delta_hides_follows_the_delta_rules(world: World) -> None:
    edited, deleted, moved = (
        world.book(t, d) for t, d in (("Edit", 6), ("Delete", 7), ("Move", 8))
    )
    world.poll(AFTER_WRITES)
    assert world.push() == ["create"] * 3
    world.poll(AFTER_WRITES)
    # Behind the delta's back: an edit, a deletion, a foreign event, and the deletion of an
    # object whose appointment changed here since it was pushed.
    data, _ = render({**world.state(edited["id"]), "title": "Edited elsewhere"})
    world.calendar.put(href_for(URL, edited["id"]), data)
    world.calendar.remove(href_for(URL, deleted["id"]))
    world.calendar.put(URL + "foreign-1.ics", FOREIGN)
    start = datetime(2026, 4, 9, 12, tzinfo=BERLIN)
    world.container.appointments.move(
        None, UUID(moved["id"]), start, start + timedelta(hours=1), API
    )
    world.calendar.remove(href_for(URL, moved["id"]))
    world.calendar.lose_changes()

    report = world.poll(CheckPolicy(interval=0, spacing=0))
    assert report.found == {"apply": 1, "cancel": 1, "import": 1, "conflict": 1}
    assert world.state(edited["id"])["title"] == "Edited elsewhere"
    gone = world.state(deleted["id"])
    assert gone["status"] == "cancelled" and gone["cancel_origin"] == "caldav"
    imported = [
        a
        for a in world.container.appointments.list_window(
            world.account_id,
            datetime(2026, 4, 1, tzinfo=BERLIN),
            datetime(2026, 5, 1, tzinfo=BERLIN),
        )
        if a["title"] == "Dentist"
    ]
    assert len(imported) == 1
    assert world.state(moved["id"])["status"] == "booked"
    assert [p.appointment["id"] for p in world.pending()] == [moved["id"]]
    assert world.push() == ["create"]  # the live appointment's missing object is re-pushed
    assert href_for(URL, moved["id"]) in world.calendar.objects


def test_a_copy_written_while_the_listing_is_taken_is_not_taken_for_deleted(world: World) -> None:
    world.poll(AFTER_WRITES)
    written = world.book("Written by a backfill meanwhile", 6)
    snapshot = world.reader.listing

    def listing_then_a_write_elsewhere() -> Any:
        listed = snapshot()  # the server answered before the write below reached it
        assert world.push() == ["create"]
        return listed

    world.reader.listing = listing_then_a_write_elsewhere  # type: ignore[method-assign]
    report = world.poll(CheckPolicy(interval=0, spacing=0))
    assert report.checked and report.counts == {}
    assert world.state(written["id"])["status"] == "booked"

    world.reader.listing = snapshot  # type: ignore[method-assign]
    again = world.poll(AFTER_WRITES)  # the write counts as one since the last check
    assert again.checked and again.counts == {}
    assert world.state(written["id"])["status"] == "booked"


def test_what_a_poll_itself_records_is_not_taken_for_our_writes(world: World) -> None:
    world.calendar.put(URL + "foreign-1.ics", FOREIGN)
    first = world.poll(AFTER_WRITES)  # imports the foreign event: records its copy
    assert first.counts == {"import": 1}
    world.calendar.put(URL + "foreign-2.ics", FOREIGN.replace(b"foreign-1", b"foreign-2"))
    changed = world.poll(AFTER_WRITES)  # a delta import records a copy too
    assert changed.counts == {"import": 1} and not changed.checked
    idle = world.poll(AFTER_WRITES)
    assert not idle.checked and world.reader.requests == ["sync-collection"]


def test_a_live_appointment_missing_without_a_deletion_is_pushed_again(world: World) -> None:
    booked = world.book("Lost", 6)
    world.poll(AFTER_WRITES)
    assert world.push() == ["create"]
    records = world.container.sync_state
    # The record says the calendar holds no copy, yet the appointment is booked and
    # nothing is pending: no remote deletion explains it (one would have cancelled it).
    copy = records.copy_of(booked["id"])
    assert copy is not None
    records.record_copies([replace(copy, present=False, etag=None)])
    world.calendar.remove(href_for(URL, booked["id"]))
    assert world.pending() == []

    report = world.poll(CheckPolicy(interval=0, spacing=0))

    assert report.found == {"repush": 1}
    assert world.state(booked["id"])["status"] == "booked"
    assert world.push() == ["create"]
    assert href_for(URL, booked["id"]) in world.calendar.objects
    assert world.poll(CheckPolicy(interval=0, spacing=0)).found == {}
