"""The sync state machine's model: what it expects of each appointment, and why.

The machine (``tests/unit/test_sync_state_machine.py``) runs the production
sync code through :class:`SyncWorld`; :class:`SyncModel` notes, around each
job, what the conflict policy lets win, from what the job left behind (the
objects the sync code wrote, the copy records, the events in the journal).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import icalendar
from hypothesis import event
from hypothesis.control import currently_in_test_context

from caljournal.adapters.syncstate import CopyRecord
from caljournal.appointments import AppointmentService
from caljournal.domain.cause import Origin
from caljournal.projections.inbound import PollReport, imported_id
from caljournal.projections.resync import appointment_states
from tests.support.sync_world import ACCOUNT, URL, PollCrash, SyncWorld

BASE = datetime(2026, 3, 26, tzinfo=UTC)  # the span covers the spring DST change in Europe


def slot(number: int) -> datetime:
    """Return the start of half hour ``number`` after :data:`BASE`."""
    return BASE + timedelta(minutes=30 * number)


@dataclass(frozen=True)
class Expected:
    """What the journal must show of one appointment once everything settled."""

    status: str  # "booked" | "gone" (cancelled, or a foreign event never imported)
    title: str | None = None
    start: datetime | None = None
    end: datetime | None = None


def expected_of(state: dict[str, Any], present: bool = True) -> Expected:
    """Return what an appointment state shows (``gone`` when cancelled or not ``present``)."""
    if state["status"] == "cancelled" or not present:
        return Expected("gone")
    return Expected(
        "booked",
        state["title"],
        datetime.fromisoformat(state["start"]),
        datetime.fromisoformat(state["end"]),
    )


def master_event(calendar: icalendar.Calendar) -> icalendar.Event:
    """Return the event of a calendar object that is not an override."""
    return next(e for e in calendar.walk("VEVENT") if "RECURRENCE-ID" not in e)


@lru_cache(maxsize=4096)
def shown(data: bytes) -> tuple[str, str, datetime, datetime]:
    """Return UID, SUMMARY, DTSTART and DTEND of an object, read by icalendar."""
    event = master_event(icalendar.Calendar.from_ical(data))
    return (
        str(event["UID"]),
        str(event.get("SUMMARY", "")),
        event.decoded("DTSTART"),
        event.decoded("DTEND"),
    )


def replace(event: icalendar.Event, name: str, value: Any) -> None:
    """Set a property of an event, dropping what it had."""
    event.pop(name, None)
    event.add(name, value)


# Events that record sync bookkeeping; every other event a poll records takes the
# calendar's version into the journal.
BOOKKEEPING = {
    "caljournal:Appointment.ConflictResolved",
    "caljournal:Appointment.PushFailed",
    "caljournal:Appointment.PushRetried",
}


def tally(what: str) -> None:
    """Count ``what`` in hypothesis's statistics (``--hypothesis-show-statistics``)."""
    if currently_in_test_context():
        event(what)


class SyncModel:
    """What the state machine knows and expects, and the worker's jobs as it runs them.

    The jobs are the production code (``SyncWorld``); around each, the model
    notes what it did from what it left behind: the objects the sync code
    wrote, the copy records, and the events in the journal.
    """

    def __init__(self) -> None:
        super().__init__()
        self._world: SyncWorld | None = None
        self.expected: dict[str, Expected] = {}
        self.undo_stack: dict[str, list[tuple[str, datetime, datetime]]] = {}
        # What the calendar-copy record says the calendar holds, per appointment.
        self.synced: dict[str, Expected] = {}
        # The last calendar change neither polled nor overwritten by a write of
        # the sync code, with ``synced`` before the first such change.
        self.contested: dict[str, tuple[Expected, Expected]] = {}
        self.counter = 0

    @property
    def world(self) -> SyncWorld:
        assert self._world is not None, "the machine starts with linked()"
        return self._world

    # -- the journal, as the model reads it -------------------------------------------

    def states(self) -> dict[str, dict[str, Any]]:
        """Return every appointment of the account by id (from the query table)."""
        return {s["id"]: s for s in appointment_states(self.world.journal, ACCOUNT, None)}

    def _booked(self) -> list[str]:
        """Return the booked appointments, the most recently changed first."""
        booked = [s for s in self.states().values() if s["status"] == "booked"]
        booked.sort(key=lambda s: (datetime.fromisoformat(s["modified_on"]), s["id"]), reverse=True)
        return [s["id"] for s in booked]

    def copies(self) -> dict[str, CopyRecord]:
        """Return the calendar-copy records by appointment id."""
        return {c.appointment_id: c for c in self.world.store.copies(ACCOUNT)}

    def _pending_locally(self, appointment_id: str) -> bool:
        """Tell whether the appointment has a change that is not on the calendar yet."""
        state = self.states().get(appointment_id)
        if state is None:
            return False
        copy = self.copies().get(appointment_id)
        if copy is None:
            return state["status"] == "booked"
        return bool(state["sequence"] > copy.pushed_sequence)

    @property
    def service(self) -> AppointmentService:
        return AppointmentService(self.world.journal)

    # -- the worker's jobs, and what they mean for the expectations ---------------------

    def _push(self) -> set[str]:
        """Push until nothing is pending; return the appointments whose objects were written."""
        before = self.copies()
        self.world.calendar.written.clear()
        try:
            self.world.push_pass()
        finally:
            written = self._sync_wrote(resync=False)
            self._recorded(before)
        return written

    def _poll(self, crash: PollCrash | None = None) -> tuple[PollReport, list[Any]]:
        """Poll once; return the report and the events recorded."""
        position = self.world.position()
        try:
            report = self.world.poll(crash)
        finally:
            events = self.world.notifications_since(position)
            for appointment_id in {
                str(e.originator_id) for e in events if e.topic not in BOOKKEEPING
            }:
                self._absorbed(appointment_id)
        assert report.paused is None, report.paused
        for kind in report.counts:
            tally(f"a poll decided {kind}")
        return report, events

    def _resync(self, *, delete: bool) -> None:
        before = self.copies()
        self.world.calendar.written.clear()
        try:
            summary = self.world.resync(delete=delete)
        finally:
            self._sync_wrote(resync=True)
            self._recorded(before)
        assert not summary.failed and summary.stopped is None, summary.as_dict()

    def _sync_wrote(self, *, resync: bool) -> set[str]:
        """Note that the sync code overwrote (or deleted) the objects it wrote.

        A calendar change made meanwhile is gone. A resync makes the calendar
        equal the journal whether or not a local change waited: the journal's
        content wins then.
        """
        by_href = {c.href: a for a, c in self.copies().items()}
        owners = set()
        for href in self.world.calendar.written:
            owner = by_href.get(href)
            if owner is None:
                found = self.world.calendar.objects.get(href)
                owner = self._owner(href, shown(found[0])[0]) if found else None
            if owner is None:
                continue
            owners.add(owner)
            self.contested.pop(owner, None)
            if resync:
                self.expected[owner] = expected_of(self.states()[owner])
        self.world.calendar.written.clear()
        return owners

    def _recorded(self, before: dict[str, CopyRecord]) -> None:
        """Note what the records written by a push or a resync say the calendar holds."""
        states = self.states()
        for appointment_id, copy in self.copies().items():
            if copy.present and copy.content_hash is None:
                continue  # in doubt: the record claims nothing about the calendar
            if before.get(appointment_id) != copy:
                self.synced[appointment_id] = expected_of(
                    states[appointment_id], present=copy.present
                )

    def _absorbed(self, appointment_id: str) -> None:
        """A poll took the calendar's version into the journal: settle what it means."""
        now = expected_of(self.states()[appointment_id])
        self.synced[appointment_id] = now
        remote, base = self.contested.pop(appointment_id, (None, None))
        if remote is not None and now == remote and self.expected.get(appointment_id) == base:
            self.expected[appointment_id] = remote

    # -- the other calendar client -------------------------------------------------------

    def _owner(self, href: str, uid: str) -> str:
        """Return the id of the appointment a calendar object belongs to (or would)."""
        for appointment_id, copy in self.copies().items():
            if copy.href == href:
                return appointment_id
        if uid.endswith("@caljournal"):
            return uid.removesuffix("@caljournal")
        return imported_id(ACCOUNT, URL, uid)

    def _changed_remotely(self, owner: str, remote: Expected) -> None:
        """Note what a calendar change means for the appointment it belongs to.

        Made while no local change waits, it must end up in the journal (unless a
        later local change or a resync wins). Made while one waits, the local
        side wins. Either way it may also stand when, by the time a poll takes it
        in, the journal's content is back where the record says the calendar was
        (a change and its undo): then the booking system has nothing to push
        that could win.

        An object of a cancelled appointment is on the calendar only when it was
        restored after its deletion: the calendar may take back only a
        cancellation it caused itself, one from the booking system wins.
        """
        state = self.states().get(owner)
        if state is not None and state["status"] == "cancelled" and remote.status == "booked":
            if state["cancel_origin"] == Origin.CALDAV.value and not self._pending_locally(owner):
                self.expected[owner] = remote
            return
        if not self._pending_locally(owner):
            self.expected[owner] = remote
        if owner in self.synced:
            base = self.contested.get(owner, (remote, self.synced[owner]))[1]
            self.contested[owner] = (remote, base)

    def _href(self, pick: int) -> str:
        """Return the href of a calendar object, counted from the most recently written."""
        objects = self.world.calendar.objects
        hrefs = sorted(objects, key=lambda h: -int(objects[h][1][1:-1]))
        return hrefs[pick % len(hrefs)]
