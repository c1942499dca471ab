"""The one executor: push and backfill/replay resolve a failed precondition alike.

The calendar is the storage port in memory; the journal a real SQLite file.
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

import icalendar
import pytest

from caljournal.adapters.ical import content_hash, from_ical
from caljournal.adapters.memory_storage import MemoryStorage
from caljournal.appointments import Booking
from caljournal.bootstrap import Container, bootstrap
from caljournal.domain.cause import Cause, Origin
from caljournal.projections.executor import BOOKING_SYSTEM_WINS, ActionKind, summary_of_state
from caljournal.projections.push import Pusher, href_for, render
from caljournal.projections.resync import Resync
from caljournal.settings import load_settings
from tests.conftest import open_tenant, sqlite_url

URL = "https://calendar.example/user/calendars/work/"
BERLIN = ZoneInfo("Europe/Berlin")
API = Cause(Origin.API, "token:acme/default", "test")
WORKER = Cause(Origin.CALDAV, "worker:test", "push")
OPERATOR = Cause(Origin.OPERATOR, "operator:tests", "replay")


@dataclass
class World:
    container: Container
    account_id: UUID
    calendar: MemoryStorage

    @property
    def account(self) -> str:
        return str(self.account_id)

    def book(self, title: str) -> dict[str, Any]:
        start = datetime(2026, 4, 6, 10, tzinfo=BERLIN)
        booking = Booking(title, start, start + timedelta(hours=1), "Europe/Berlin")
        return self.container.appointments.book(self.account_id, booking, API).state

    def rename(self, appointment_id: str, title: str) -> dict[str, Any]:
        return self.container.appointments.change_details(
            None, UUID(appointment_id), {"title": title}, API
        )

    def push(self) -> list[ActionKind | None]:
        pusher = Pusher(
            self.container.journal,
            self.calendar,
            self.container.sync_state,
            self.account,
            URL,
            lambda: WORKER,
        )
        pending = self.container.sync_state.pending_pushes(self.account, URL, 0, 100)
        pusher.begin(pending)
        done = [pusher.push(item) for item in pending]
        pusher.flush()
        return done

    def push_and_die(self) -> None:
        """Push everything pending; the process dies before the batch is recorded."""
        pusher = Pusher(
            self.container.journal,
            self.calendar,
            self.container.sync_state,
            self.account,
            URL,
            lambda: WORKER,
        )
        pending = self.container.sync_state.pending_pushes(self.account, URL, 0, 100)
        pusher.begin(pending)
        for item in pending:
            pusher.push(item)

    def replay(self) -> Resync:
        return Resync(
            self.container.journal,
            self.calendar,
            self.container.sync_state,
            self.account,
            URL,
            lambda: OPERATOR,
            delete=True,
            record=True,
        )

    def edit_elsewhere(self, appointment_id: str, title: str) -> None:
        """Change the calendar object as another calendar client does."""
        state = self.container.appointments.get(None, UUID(appointment_id))
        data, _ = render({**state, "title": title})
        self.calendar.put(href_for(URL, appointment_id), data)

    def conflicts(self, appointment_id: str) -> list[Any]:
        events = self.container.journal.events.get(UUID(appointment_id))
        return [e for e in events if type(e).__name__ == "ConflictResolved"]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    container = bootstrap(
        load_settings(database_url=sqlite_url(tmp_path), secret_key_file=tmp_path / "k.key")
    )
    tenant = open_tenant(container, f"acme{uuid.uuid4().hex[:6]}")
    yield World(container, tenant.account_id, MemoryStorage(URL))
    container.close()


def on_calendar(world: World, appointment_id: str) -> str:
    data, _ = world.calendar.objects[href_for(URL, appointment_id)]
    return from_ical(data)[0].title


def test_a_replay_meeting_a_remote_edit_records_the_conflict_as_the_worker_does(
    world: World,
) -> None:
    pushed, replayed = world.book("Haircut"), world.book("Haircut")
    assert world.push() == [ActionKind.CREATE, ActionKind.CREATE]
    # Both are changed here, and later in the calendar by someone else: once
    # before the worker's update, once between a replay's scan and its write.
    for appointment in (pushed, replayed):
        world.rename(appointment["id"], "Haircut and colour")
    run = world.replay()
    steps, summary = run.plan()
    assert sorted(s.kind for s in steps) == [ActionKind.UPDATE, ActionKind.UPDATE]
    world.edit_elsewhere(pushed["id"], "Moved by the salon")
    world.edit_elsewhere(replayed["id"], "Moved by the salon")

    run.run([s for s in steps if s.appointment_id == replayed["id"]], summary)
    assert world.push() == [ActionKind.UPDATE]

    (by_worker,) = world.conflicts(pushed["id"])
    (by_replay,) = world.conflicts(replayed["id"])
    fields = ("local", "remote", "winner")
    assert [getattr(by_replay, f) for f in fields] == [getattr(by_worker, f) for f in fields]
    state = world.container.appointments.get(None, UUID(replayed["id"]))
    assert by_replay.local == summary_of_state(state)
    assert by_replay.remote["title"] == "Moved by the salon"
    assert by_replay.winner == BOOKING_SYSTEM_WINS
    assert (by_replay.origin, by_worker.origin) == ("operator", "caldav")
    # The booking system won on the calendar, and the records say so.
    assert on_calendar(world, replayed["id"]) == on_calendar(world, pushed["id"])
    assert on_calendar(world, replayed["id"]) == "Haircut and colour"
    copy = world.container.sync_state.copy_of(replayed["id"])
    assert copy is not None
    assert copy.etag == world.calendar.objects[href_for(URL, replayed["id"])][1]
    assert copy.content_hash == content_hash(render(state)[0])


def test_a_replay_recognises_the_workers_write_between_its_scan_and_its_write(
    world: World,
) -> None:
    booked = world.book("Haircut")
    assert world.push() == [ActionKind.CREATE]
    world.rename(booked["id"], "Haircut and colour")
    run = world.replay()
    steps, summary = run.plan()
    assert world.push() == [ActionKind.UPDATE]  # the worker wins the race

    done = run.run(steps, summary)

    assert done.updated == 1 and done.failed == []
    assert world.conflicts(booked["id"]) == []
    assert on_calendar(world, booked["id"]) == "Haircut and colour"


def test_a_replay_deleting_an_object_changed_elsewhere_records_the_conflict(
    world: World,
) -> None:
    booked = world.book("Haircut")
    assert world.push() == [ActionKind.CREATE]
    world.container.appointments.cancel(None, UUID(booked["id"]), API)
    run = world.replay()
    steps, summary = run.plan()
    world.edit_elsewhere(booked["id"], "Kept by the salon")

    done = run.run(steps, summary)

    assert done.deleted == 1
    (conflict,) = world.conflicts(booked["id"])
    assert conflict.remote["title"] == "Kept by the salon"
    assert href_for(URL, booked["id"]) not in world.calendar.objects


def test_a_write_answered_but_never_recorded_is_ours_when_the_change_is_taken_back(
    world: World,
) -> None:
    booked = world.book("Haircut")
    assert world.push() == [ActionKind.CREATE]
    world.rename(booked["id"], "Haircut and colour")
    world.push_and_die()
    copy = world.container.sync_state.copy_of(booked["id"])
    assert copy is not None and copy.present and copy.content_hash is None  # in doubt
    world.rename(booked["id"], "Haircut")  # taken back to what the record once claimed

    assert world.push() == [ActionKind.UPDATE]  # written, not only recorded

    assert world.conflicts(booked["id"]) == []
    assert on_calendar(world, booked["id"]) == "Haircut"
    copy = world.container.sync_state.copy_of(booked["id"])
    assert copy is not None
    assert copy.etag == world.calendar.objects[href_for(URL, booked["id"])][1]


def test_an_edit_elsewhere_over_a_record_in_doubt_is_still_a_conflict(world: World) -> None:
    booked = world.book("Haircut")
    assert world.push() == [ActionKind.CREATE]
    world.rename(booked["id"], "Haircut and colour")
    world.push_and_die()
    href = href_for(URL, booked["id"])
    calendar = icalendar.Calendar.from_ical(world.calendar.objects[href][0])
    (event,) = calendar.walk("VEVENT")
    event.pop("SUMMARY")
    event.add("SUMMARY", "Moved by the salon")
    sequence = int(event.pop("SEQUENCE"))
    event.add("SEQUENCE", sequence + 1)  # as a client storing an edit does: not our write
    world.calendar.put(href, calendar.to_ical())
    world.rename(booked["id"], "Haircut")

    assert world.push() == [ActionKind.UPDATE]

    (conflict,) = world.conflicts(booked["id"])
    assert conflict.remote["title"] == "Moved by the salon"
    assert on_calendar(world, booked["id"]) == "Haircut"
