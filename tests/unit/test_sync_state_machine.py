"""Stateful test of the two-way sync decisions, without a database or a server.

The journal is a dict of real :class:`Appointment` aggregates, the calendar a
:class:`MemoryCalendar`, and the calendar-copy records a dict keyed by
appointment id. Pushing uses the real ``plan`` and ``render`` and an executor
that does with the calendar and the records what ``Pusher.push`` does; polling
compares the calendar's ETags with the records like ``Poller.poll`` does for a
full listing, asks the real ``decide`` and executes its decisions like
``Poller._execute``. Local commands and another calendar client's edits,
deletions, restores (an undo or a trash bin bringing a deleted object back) and
new events are interleaved with pushes and polls in any order.

Checked after every step: no UID is on the calendar twice, and no record claims
a newer push than its appointment has. Checked whenever a push is followed by a
poll: the poll records no event for what the push wrote (echo suppression).
Checked at the end, after a push, a poll and a push: every booked appointment
is on the calendar exactly once with the journal's title, start and end, and
its record names that object, its ETag and the appointment's sequence;
cancelled ones are not on the calendar; every calendar object belongs to a
booked appointment (so every foreign event was imported); each appointment
shows what the conflict policy lets win (a local change wins over calendar
edits made while it waited to be pushed; a calendar edit made while nothing
waited is kept unless a later local change wins; see ``_changed_remotely``);
the next poll records no events and decides nothing but ``echo``; and a second
poll decides nothing at all. Another client storing an object again without
changing it must leave its content hash alone.

The run starts from appointments already on the calendar, keeps few
appointments at a time and picks the most recently touched ones first, so that
both sides often change the same appointment between two syncs.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import icalendar
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from caljournal.adapters.ical import content_hash, from_ical
from caljournal.domain.appointment import Appointment
from caljournal.domain.cause import Cause, Origin
from caljournal.projections.inbound import Decision, _cancelled, decide, imported_id
from caljournal.projections.push import (
    BOOKING_SYSTEM_WINS,
    Action,
    Pusher,
    plan,
    summary_of_remote,
    summary_of_state,
)
from tests.support.memory_calendar import MemoryCalendar, PreconditionFailed

ACCOUNT = "3f2c8a64-5b1e-4d7a-9c0e-2a6b8d4f1e90"
URL = "https://dav.example.org/calendars/alice/work/"
API = Cause(Origin.API, "token:acme/default", "req-state-machine")
SYNC = Cause(Origin.CALDAV, "sync:state-machine", "poll-state-machine")

BASE = datetime(2026, 3, 26, tzinfo=UTC)  # the span covers the spring DST change in Europe
SLOTS = st.integers(min_value=0, max_value=6 * 48 - 1)  # half hours
MINUTES = st.sampled_from([30, 60, 90, 120])
TITLES = st.sampled_from(["Haircut", "Beard trim", "Cut, wash; dry", "Färben ✂"])
ZONES = st.sampled_from(["Europe/Berlin", "UTC", "America/New_York"])
# Which appointment or object a step is about, counted from the most recently
# changed one: people tend to go on with what they just touched.
PICK = st.integers(min_value=0, max_value=3)
# Few appointments at a time, so that steps often meet on the same one.
MAX_BOOKED = 3
MAX_OBJECTS = 4


def slot(number: int) -> datetime:
    return BASE + timedelta(minutes=30 * number)


@dataclass(frozen=True)
class Expected:
    """What the journal must show of one appointment once everything settled."""

    status: str  # "booked" | "gone" (cancelled, or a foreign event never imported)
    title: str | None = None
    start: datetime | None = None
    end: datetime | None = None


def expected_of(appointment: Appointment) -> Expected:
    if appointment.cancelled:
        return Expected("gone")
    return Expected("booked", appointment.title, appointment.start, appointment.end)


def expected_of_state(state: dict[str, Any], present: bool = True) -> Expected:
    if state["status"] == "cancelled" or not present:
        return Expected("gone")
    return Expected(
        "booked",
        state["title"],
        datetime.fromisoformat(state["start"]),
        datetime.fromisoformat(state["end"]),
    )


def master_event(calendar: icalendar.Calendar) -> icalendar.Event:
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
    event.pop(name, None)
    event.add(name, value)


class SyncMachine(RuleBasedStateMachine):
    """Journal, calendar copy records and a calendar, driven by both sides."""

    def __init__(self) -> None:
        super().__init__()
        self.calendar = MemoryCalendar()
        self.appointments: dict[str, Appointment] = {}
        self.copies: dict[str, dict[str, Any]] = {}
        self.quarantine: dict[str, dict[str, Any]] = {}
        self.expected: dict[str, Expected] = {}
        self.undo_stack: dict[str, list[tuple[str, datetime, datetime]]] = {}
        # What the calendar-copy record says the calendar holds, per appointment.
        self.synced: dict[str, Expected] = {}
        # The last calendar change neither polled nor overwritten by a push, with
        # ``synced`` before the first such change.
        self.contested: dict[str, tuple[Expected, Expected]] = {}
        # The last content of each deleted object, as a trash bin keeps it.
        self.trash: dict[str, bytes] = {}
        # Where each cancellation came from ("api" or "caldav"), per appointment.
        self.cancelled_by: dict[str, str] = {}
        self.counter = 0

    # -- the journal ------------------------------------------------------------------

    def _save(self, appointment: Appointment) -> list[Any]:
        """Keep the aggregate and return the events it recorded since the last save."""
        self.appointments[str(appointment.id)] = appointment
        return list(appointment.collect_events())

    def _booked(self) -> list[str]:
        """Return the booked appointments, the most recently changed first."""
        booked = [ap for ap in self.appointments.values() if not ap.cancelled]
        booked.sort(key=lambda ap: (ap.modified_on, str(ap.id)), reverse=True)
        return [str(ap.id) for ap in booked]

    def _pending_locally(self, appointment_id: str) -> bool:
        """Tell whether the appointment has a change that is not on the calendar yet."""
        appointment = self.appointments.get(appointment_id)
        if appointment is None:
            return False
        copy = self.copies.get(appointment_id)
        if copy is None:
            return not appointment.cancelled
        return appointment.sequence > copy["pushed_sequence"]

    # -- push: pending_pushes + plan + Pusher.push --------------------------------------

    def _pending_pushes(self) -> list[dict[str, Any]]:
        items = []
        for appointment_id, appointment in self.appointments.items():
            state = appointment.state()
            copy = self.copies.get(appointment_id)
            if copy is None or copy["calendar_url"] != URL:
                due = state["status"] == "booked"
            else:
                due = state["sequence"] > copy["pushed_sequence"] and (
                    copy["failed_sequence"] is None or copy["failed_sequence"] < state["sequence"]
                )
            if not due:
                continue
            on_this = copy is not None and copy["calendar_url"] == URL
            items.append(
                {
                    "appointment": json.loads(json.dumps(state)),
                    "sequence": state["sequence"],
                    "href": copy["href"] if on_this else None,
                    "etag": copy["etag"] if on_this else None,
                    "pushed_sequence": copy["pushed_sequence"] if on_this else None,
                    "content_hash": copy["content_hash"] if on_this else None,
                    "present": copy["present"] if on_this else None,
                }
            )
        items.sort(key=lambda i: (i["appointment"]["modified_on"], i["appointment"]["id"]))
        return items

    def _push(self) -> tuple[set[str], list[Any]]:
        """Push until nothing is pending; return the appointments written and the events."""
        pushed: set[str] = set()
        events: list[Any] = []
        for _ in range(3):
            items = self._pending_pushes()
            if not items:
                return pushed, events
            for item in items:
                action = plan(item, URL)
                events.extend(self._push_one(item, action))
                if action.kind in ("create", "update", "delete"):
                    pushed.add(item["appointment"]["id"])
                    self.contested.pop(item["appointment"]["id"], None)
        raise AssertionError(f"still pending after three passes: {self._pending_pushes()}")

    def _push_one(self, item: dict[str, Any], action: Action) -> list[Any]:
        state = item["appointment"]
        events: list[Any] = []
        if action.kind == "delete":
            self._delete(action, state, events)
            self._record(state, action.href, None, None, present=False)
        elif action.kind == "forget":
            self._record(state, action.href, None, None, present=False)
        elif action.kind == "record":
            self._record(state, action.href, action.etag, action.digest, present=True)
        else:
            etag = self._write(action, state, item["content_hash"], events)
            self._record(state, action.href, etag, action.digest, present=True)
        return events

    def _write(
        self, action: Action, state: dict[str, Any], last_digest: str | None, events: list[Any]
    ) -> str:
        assert action.data is not None
        try:
            if action.kind == "create":
                return self.calendar.create(action.href, action.data)
            return self.calendar.update(action.href, action.data, action.etag)
        except PreconditionFailed:
            return self._resolve(action, state, last_digest, events)

    def _resolve(
        self, action: Action, state: dict[str, Any], last_digest: str | None, events: list[Any]
    ) -> str:
        assert action.data is not None
        remote = self.calendar.fetch(action.href)
        if remote is None:
            if action.kind == "update":
                events.extend(self._push_conflict(state, None))
            return self.calendar.create(action.href, action.data)
        data, etag = remote
        digest = content_hash(data)
        if digest == action.digest:
            return etag
        if action.kind == "update":
            ours = digest == last_digest
        else:
            ours = Pusher._is_copy_of_ours(data, state)
        if not ours:
            events.extend(self._push_conflict(state, data))
        return self.calendar.update(action.href, action.data, etag)

    def _delete(self, action: Action, state: dict[str, Any], events: list[Any]) -> None:
        before = self.calendar.fetch(action.href)
        try:
            self.calendar.delete(action.href, action.etag)
        except PreconditionFailed:
            remote = self.calendar.fetch(action.href)
            if remote is None:
                return
            events.extend(self._push_conflict(state, remote[0]))
            self.calendar.delete(action.href, remote[1])
            before = remote
        if before is not None:
            self.trash[action.href] = before[0]

    def _push_conflict(self, state: dict[str, Any], remote: bytes | None) -> list[Any]:
        appointment = self.appointments[state["id"]]
        appointment.record_conflict(
            local=summary_of_state(state),
            remote=summary_of_remote(remote),
            winner=BOOKING_SYSTEM_WINS,
            cause=SYNC,
        )
        return self._save(appointment)

    def _record(
        self,
        state: dict[str, Any],
        href: str,
        etag: str | None,
        digest: str | None,
        *,
        present: bool,
    ) -> None:
        self.copies[state["id"]] = {
            "appointment_id": state["id"],
            "calendar_url": URL,
            "href": href,
            "etag": etag,
            "pushed_sequence": state["sequence"],
            "content_hash": digest,
            "present": 1 if present else 0,
            "failed_sequence": None,
        }
        self.synced[state["id"]] = expected_of_state(state, present)

    # -- poll: Poller.poll with a full listing + decide + Poller._execute ---------------

    def _poll(self) -> tuple[list[Decision], list[Any]]:
        """Poll once; return the decisions taken and the events recorded."""
        current = {a: dict(c) for a, c in self.copies.items()}
        copies = {
            c["href"]: c for c in current.values() if c["calendar_url"] == URL and c["present"]
        }
        listing = self.calendar.listing()

        def known(record: dict[str, Any] | None, etag: str | None) -> bool:
            return bool(record and etag and record.get("etag") == etag)

        wanted = {
            href: etag
            for href, etag in listing.items()
            if not known(copies.get(href), etag) and not known(self.quarantine.get(href), etag)
        }
        gone = set(copies) - set(listing)
        gone &= set(copies) | set(self.quarantine)
        objects = {href: self.calendar.objects[href] for href in sorted(wanted)}
        decisions = self._decide(objects, gone, copies)
        events: list[Any] = []
        for decision in decisions:
            events.extend(self._execute(decision, current))
        return decisions, events

    def _state(self, appointment_id: str | None) -> dict[str, Any] | None:
        appointment = self.appointments.get(appointment_id) if appointment_id else None
        return appointment.state() if appointment is not None else None

    def _named(self, data: bytes) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """Return the absent-copy record and the state of the appointment an object names."""
        events = from_ical(data)
        owner = next((e.appointment_id for e in events if e.appointment_id), None)
        if owner is None:
            master = next(e for e in events if e.recurrence_id is None)
            owner = imported_id(ACCOUNT, URL, master.uid)
        state = self._state(owner)
        if state is None:
            return None, None
        record = self.copies.get(owner)
        if record and record["calendar_url"] == URL and not record["present"]:
            return dict(record), state
        return None, state

    def _decide(
        self,
        objects: dict[str, tuple[bytes, str]],
        gone: set[str],
        copies: dict[str, dict[str, Any]],
    ) -> list[Decision]:
        involved = {c["appointment_id"] for h, c in copies.items() if h in objects or h in gone}
        states = {a: s for a in involved if (s := self._state(a)) is not None}
        decisions: list[Decision] = []
        seen_uids: dict[str, str] = {}
        for href in sorted(objects):
            data, etag = objects[href]
            copy = copies.get(href)
            appointment = states.get(copy["appointment_id"]) if copy else None
            if copy is None:
                copy, appointment = self._named(data)
            decision = decide(
                href,
                etag,
                data,
                copy,
                appointment,
                lambda uid: imported_id(ACCOUNT, URL, uid),
            )
            uid = decision.fields.calendar_uid if decision.fields else None
            if uid and decision.kind in ("import", "apply", "reinstate"):
                if uid in seen_uids:
                    decision = Decision(
                        "quarantine", href, etag=etag, reason=f"duplicate UID {seen_uids[uid]}"
                    )
                else:
                    seen_uids[uid] = href
            decisions.append(decision)
        for href in sorted(gone):
            copy = copies.get(href)
            state = states.get(copy["appointment_id"]) if copy else None
            decisions.append(
                decide(href, None, None, copy, state, lambda uid: uid)
                if copy
                else Decision("forget", href)
            )
        return decisions

    def _execute(self, decision: Decision, current: dict[str, dict[str, Any]]) -> list[Any]:
        kind = decision.kind
        if decision.href in self.quarantine and kind != "quarantine":
            del self.quarantine[decision.href]
        if kind == "quarantine":
            self.quarantine[decision.href] = {"etag": decision.etag, "reason": decision.reason}
            return []
        if kind == "forget":
            if decision.appointment_id:
                self._copy_row(decision, current, None, present=False)
            return []
        if kind == "echo":
            self._copy_row(decision, current, None, present=True, keep_sequence=True)
            return []
        if kind == "adopt":
            self._copy_row(decision, current, decision.sequence, present=True)
            return []
        appointment = self.appointments.get(str(decision.appointment_id))
        if kind == "import" and appointment is None:
            assert decision.fields is not None
            appointment = Appointment.import_from_calendar(
                appointment_id=uuid.UUID(decision.appointment_id),
                account_id=uuid.UUID(ACCOUNT),
                remote=decision.fields,
                cause=SYNC,
            )
            self._copy_row(decision, current, appointment.sequence, present=True)
            self._absorbed(appointment)
            return self._save(appointment)
        if appointment is None:
            return []
        if kind == "reinstate":
            assert decision.fields is not None
            appointment.reinstate_from_calendar(remote=decision.fields, cause=SYNC)
            self.cancelled_by.pop(str(appointment.id), None)
            self._copy_row(decision, current, appointment.sequence, present=True)
            self._absorbed(appointment)
            return self._save(appointment)
        if kind == "conflict":
            local = {"title": appointment.title, "start": appointment.start.isoformat()}
            remote: dict[str, Any] = (
                {"title": decision.fields.title, "start": decision.fields.start.isoformat()}
                if decision.fields
                else {"deleted": True}
            )
            if decision.fields and decision.reason:
                remote["note"] = decision.reason
            appointment.record_conflict(
                local=local, remote=remote, winner="booking system", cause=SYNC
            )
            self._copy_row(
                decision,
                current,
                decision.sequence,
                present=decision.fields is not None,
                keep_sequence=decision.sequence is None,
            )
            return self._save(appointment)
        if kind == "cancel":
            appointment.apply_calendar_change(remote=_cancelled(appointment), cause=SYNC)
            self.cancelled_by[str(appointment.id)] = "caldav"
            self._copy_row(decision, current, appointment.sequence, present=False)
            self._absorbed(appointment)
            return self._save(appointment)
        assert decision.fields is not None
        appointment.apply_calendar_change(remote=decision.fields, cause=SYNC)
        self._copy_row(decision, current, appointment.sequence, present=True)
        self._absorbed(appointment)
        return self._save(appointment)

    def _copy_row(
        self,
        decision: Decision,
        current: dict[str, dict[str, Any]],
        sequence: int | None,
        *,
        present: bool,
        keep_sequence: bool = False,
        keep_hash: bool = False,
    ) -> None:
        needs_current = keep_sequence or keep_hash or sequence is None
        before = (current.get(str(decision.appointment_id)) or {}) if needs_current else {}
        self.copies[str(decision.appointment_id)] = {
            "appointment_id": decision.appointment_id,
            "calendar_url": URL,
            "href": decision.href,
            "etag": decision.etag if present else None,
            "pushed_sequence": (
                before.get("pushed_sequence", -1) if keep_sequence or sequence is None else sequence
            ),
            "content_hash": before.get("content_hash") if keep_hash else decision.digest,
            "present": 1 if present else 0,
            "failed_sequence": None,
        }

    # -- the other calendar client -------------------------------------------------------

    def _owner(self, href: str, uid: str) -> str:
        """Return the id of the appointment a calendar object belongs to (or would)."""
        for appointment_id, copy in self.copies.items():
            if copy["href"] == href:
                return appointment_id
        if uid.endswith("@caljournal"):
            return uid.removesuffix("@caljournal")
        return imported_id(ACCOUNT, URL, uid)

    def _changed_remotely(self, owner: str, remote: Expected) -> None:
        """Note what a calendar change means for the appointment it belongs to.

        Made while no local change waits, it must end up in the journal (unless a
        later local change wins). Made while one waits, the local side wins. Either
        way it may also stand when, by the time a poll takes it in, the journal's
        content is back where the record says the calendar was (a change and its
        undo): then the booking system has nothing to push that could win.

        An object of a cancelled appointment is on the calendar only when it was
        restored after its deletion: the calendar may take back only a
        cancellation it caused itself, one from the booking system wins.
        """
        appointment = self.appointments.get(owner)
        if appointment is not None and appointment.cancelled and remote.status == "booked":
            if self.cancelled_by.get(owner) == "caldav" and not self._pending_locally(owner):
                self.expected[owner] = remote
            return
        if not self._pending_locally(owner):
            self.expected[owner] = remote
        if owner in self.synced:
            base = self.contested.get(owner, (remote, self.synced[owner]))[1]
            self.contested[owner] = (remote, base)

    def _absorbed(self, appointment: Appointment) -> None:
        """A poll took the calendar's version into the journal: settle what it means."""
        appointment_id = str(appointment.id)
        now = expected_of(appointment)
        self.synced[appointment_id] = now
        remote, base = self.contested.pop(appointment_id, (None, None))
        if remote is not None and now == remote and self.expected.get(appointment_id) == base:
            self.expected[appointment_id] = remote

    def _href(self, pick: int) -> str:
        """Return the href of a calendar object, counted from the most recently written."""
        hrefs = sorted(self.calendar.objects, key=lambda h: -int(self.calendar.objects[h][1][1:-1]))
        return hrefs[pick % len(hrefs)]

    # -- rules: the booking system ---------------------------------------------------------

    @initialize(booked=st.lists(st.tuples(SLOTS, MINUTES, TITLES, ZONES), min_size=1, max_size=2))
    def linked(self, booked: list[tuple[int, int, str, str]]) -> None:
        """Start from an account whose appointments are on its calendar already."""
        for start, minutes, title, zone in booked:
            self.book(start, minutes, title, zone)
        self._push()

    @precondition(lambda self: len(self._booked()) < MAX_BOOKED)
    @rule(start=SLOTS, minutes=MINUTES, title=TITLES, zone=ZONES)
    def book(self, start: int, minutes: int, title: str, zone: str) -> None:
        self.counter += 1
        appointment = Appointment.book(
            appointment_id=uuid.uuid5(uuid.NAMESPACE_URL, f"booked-{self.counter}"),
            account_id=uuid.UUID(ACCOUNT),
            title=title,
            start=slot(start),
            end=slot(start) + timedelta(minutes=minutes),
            timezone=zone,
            cause=API,
        )
        self._save(appointment)
        self.expected[str(appointment.id)] = expected_of(appointment)

    def _change_locally(
        self, appointment: Appointment, title: str, start: datetime, end: datetime
    ) -> bool:
        """Retitle and move an appointment; return whether anything changed."""
        changed = appointment.change_details(changes={"title": title}, cause=API)
        changed = appointment.move(start=start, end=end, cause=API) or changed
        self._save(appointment)
        if changed:
            self.expected[str(appointment.id)] = expected_of(appointment)
        return changed

    def _remember(self, appointment: Appointment) -> tuple[str, datetime, datetime]:
        return appointment.title, appointment.start, appointment.end

    @precondition(lambda self: self._booked())
    @rule(
        pick=PICK,
        change=st.one_of(
            st.tuples(st.just("move"), SLOTS, MINUTES),
            st.tuples(st.just("retitle"), TITLES),
            st.just(("cancel",)),
        ),
    )
    def change(self, pick: int, change: tuple[Any, ...]) -> None:
        """Move, retitle or cancel a booked appointment."""
        booked = self._booked()
        appointment = self.appointments[booked[pick % len(booked)]]
        if change[0] == "cancel":
            appointment.cancel(cause=API, reason="customer cancelled")
            self.cancelled_by[str(appointment.id)] = "api"
            self._save(appointment)
            self.expected[str(appointment.id)] = expected_of(appointment)
            return
        before = self._remember(appointment)
        if change[0] == "move":
            title = appointment.title
            start = slot(change[1])
            end = start + timedelta(minutes=change[2])
        else:
            title, start, end = change[1], appointment.start, appointment.end
        if self._change_locally(appointment, title, start, end):
            self.undo_stack.setdefault(str(appointment.id), []).append(before)

    def _undoable(self) -> list[str]:
        return [a for a in self._booked() if self.undo_stack.get(a)]

    @precondition(lambda self: self._undoable())
    @rule(pick=PICK)
    def undo(self, pick: int) -> None:
        """A user takes back the last move or retitle of an appointment."""
        undoable = self._undoable()
        appointment = self.appointments[undoable[pick % len(undoable)]]
        self._change_locally(appointment, *self.undo_stack[str(appointment.id)].pop())

    # -- rules: another calendar client --------------------------------------------------

    @precondition(lambda self: self.calendar.objects)
    @rule(
        pick=PICK,
        change=st.one_of(
            st.tuples(st.just("title"), TITLES),
            st.tuples(
                st.just("time"),
                st.integers(min_value=-8, max_value=8).filter(bool),
                MINUTES,
            ),
            st.just(("rewrite",)),
        ),
    )
    def remote_edit(self, pick: int, change: tuple[Any, ...]) -> None:
        """Another client changes the title or the period, or stores the object again."""
        href = self._href(pick)
        data, _ = self.calendar.objects[href]
        calendar = icalendar.Calendar.from_ical(data)
        event = master_event(calendar)
        if change[0] == "rewrite":
            # Same appointment, other bytes: the hash must see no change.
            event.add("X-SERVER-REVISION", str(self.counter))
            new = calendar.to_ical()
            assert content_hash(new) == content_hash(data)
            self.calendar.put(href, new)
            return
        if change[0] == "title":
            replace(event, "SUMMARY", change[1])
        else:
            _, half_hours, minutes = change
            start = event.decoded("DTSTART")
            zone = start.tzinfo
            moved = (start.astimezone(UTC) + timedelta(minutes=30 * half_hours)).astimezone(zone)
            end = (moved.astimezone(UTC) + timedelta(minutes=minutes)).astimezone(zone)
            replace(event, "DTSTART", moved)
            replace(event, "DTEND", end)
        replace(event, "SEQUENCE", int(event.get("SEQUENCE", 0)) + 1)
        replace(event, "LAST-MODIFIED", datetime.now(UTC).replace(microsecond=0))
        new = calendar.to_ical()
        self.calendar.put(href, new)
        uid, title, start, end = shown(new)
        self._changed_remotely(self._owner(href, uid), Expected("booked", title, start, end))

    @precondition(lambda self: self.calendar.objects)
    @rule(pick=PICK)
    def remote_delete(self, pick: int) -> None:
        href = self._href(pick)
        data = self.calendar.objects[href][0]
        uid = shown(data)[0]
        self.calendar.remove(href)
        self.trash[href] = data
        self._changed_remotely(self._owner(href, uid), Expected("gone"))

    def _restorable(self) -> list[str]:
        on_calendar = {shown(data)[0] for data, _ in self.calendar.objects.values()}
        return sorted(
            href
            for href, data in self.trash.items()
            if href not in self.calendar.objects and shown(data)[0] not in on_calendar
        )

    @precondition(lambda self: self._restorable())
    @rule(pick=PICK, bump=st.booleans())
    def remote_restore(self, pick: int, bump: bool) -> None:
        """Another client restores a deleted object (undo, trash bin).

        The object comes back at the same href with the same UID and its last
        content, possibly with a raised SEQUENCE as a client storing it anew
        would write. A cancellation the calendar caused (the deletion, polled)
        is undone by the restore; one made in the booking system wins.
        """
        restorable = self._restorable()
        href = restorable[pick % len(restorable)]
        data = self.trash.pop(href)
        if bump:
            calendar = icalendar.Calendar.from_ical(data)
            event = master_event(calendar)
            replace(event, "SEQUENCE", int(event.get("SEQUENCE", 0)) + 1)
            replace(event, "LAST-MODIFIED", datetime.now(UTC).replace(microsecond=0))
            data = calendar.to_ical()
        self.calendar.put(href, data)
        uid, title, start, end = shown(data)
        self._changed_remotely(self._owner(href, uid), Expected("booked", title, start, end))

    @precondition(lambda self: len(self.calendar.objects) < MAX_OBJECTS)
    @rule(title=TITLES, start=SLOTS, minutes=MINUTES, zone=ZONES, vtimezone=st.booleans())
    def remote_create(
        self, title: str, start: int, minutes: int, zone: str, vtimezone: bool
    ) -> None:
        self.counter += 1
        uid = f"foreign-{self.counter}@client.example"
        tz = ZoneInfo(zone) if zone != "UTC" else UTC
        event = icalendar.Event()
        event.add("UID", uid)
        event.add("DTSTAMP", datetime.now(UTC).replace(microsecond=0))
        event.add("SUMMARY", title)
        event.add("DTSTART", slot(start).astimezone(tz))
        event.add("DTEND", (slot(start) + timedelta(minutes=minutes)).astimezone(tz))
        calendar = icalendar.Calendar()
        calendar.add("PRODID", "-//client.example//test//EN")
        calendar.add("VERSION", "2.0")
        calendar.add_component(event)
        if vtimezone:
            calendar.add_missing_timezones()
        data = calendar.to_ical()
        self.calendar.put(f"{URL}foreign-{self.counter}.ics", data)
        _, title, begin, end = shown(data)
        self.expected[imported_id(ACCOUNT, URL, uid)] = Expected("booked", title, begin, end)

    # -- rules: the sync worker -------------------------------------------------------------

    @rule(poll_first=st.booleans())
    def sync(self, poll_first: bool) -> None:
        """One round of the worker: a push and a poll, in either order."""
        if poll_first:
            self._poll()
            self._push()
            return
        written, _ = self._push()
        decisions, events = self._poll()
        echoed = [e for e in events if str(e.originator_id) in written]
        assert not echoed, (
            f"the poll right after a push recorded {echoed} for what it wrote; "
            f"decisions: {decisions}"
        )

    def teardown(self) -> None:
        self._settle_and_check()

    # -- checks -----------------------------------------------------------------------------

    @invariant()
    def each_uid_on_the_calendar_once(self) -> None:
        uids = [shown(data)[0] for data, _ in self.calendar.objects.values()]
        assert len(uids) == len(set(uids)), f"a UID is on the calendar twice: {sorted(uids)}"

    @invariant()
    def records_never_run_ahead(self) -> None:
        for appointment_id, copy in self.copies.items():
            sequence = self.appointments[appointment_id].sequence
            assert copy["pushed_sequence"] <= sequence, (appointment_id, copy, sequence)

    def _settle_and_check(self) -> None:
        self._push()
        self._poll()
        self._push()
        decisions, events = self._poll()
        assert not events, f"a poll after settling recorded {events}; decisions: {decisions}"
        assert all(d.kind == "echo" for d in decisions), decisions
        decisions, events = self._poll()
        assert not decisions and not events, (decisions, events)
        self._check_calendar_matches_journal()
        self._check_expected()

    def _check_calendar_matches_journal(self) -> None:
        by_uid: dict[str, list[tuple[str, str, datetime, datetime]]] = {}
        for href, (data, _) in self.calendar.objects.items():
            uid, title, start, end = shown(data)
            by_uid.setdefault(uid, []).append((href, title, start, end))
        expected_uids = set()
        for appointment_id, appointment in self.appointments.items():
            uid = appointment.calendar_uid or f"{appointment_id}@caljournal"
            objects = by_uid.get(uid, [])
            if appointment.cancelled:
                assert not objects, f"cancelled appointment {appointment_id} is on the calendar"
                continue
            expected_uids.add(uid)
            assert len(objects) == 1, f"booked {appointment_id} is on the calendar {len(objects)}x"
            href, title, start, end = objects[0]
            assert (title, start, end) == (
                appointment.title,
                appointment.start,
                appointment.end,
            ), f"calendar shows {(title, start, end)} for {appointment.state()}"
            copy = self.copies[appointment_id]
            assert copy["present"] and copy["href"] == href, copy
            assert copy["etag"] == self.calendar.objects[href][1], copy
            assert copy["pushed_sequence"] == appointment.sequence, copy
        strays = set(by_uid) - expected_uids
        assert not strays, f"calendar objects without a booked appointment: {sorted(strays)}"

    def _check_expected(self) -> None:
        for appointment_id, expected in self.expected.items():
            appointment = self.appointments.get(appointment_id)
            if appointment is None:
                assert expected.status == "gone", f"{appointment_id} was never imported"
                continue
            actual = expected_of(appointment)
            assert actual == expected, f"{appointment_id}: journal {actual} != expected {expected}"


# The number of runs comes from the hypothesis profile (tests/conftest.py):
# HYPOTHESIS_PROFILE=long for a longer search.
SyncMachine.TestCase.settings = settings(
    stateful_step_count=20, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestSyncStateMachine = SyncMachine.TestCase


def test_change_taken_back_while_the_calendar_copy_was_edited_reaches_the_calendar() -> None:
    """A local change taken back while another client edits the calendar copy.

    A pushed appointment is retitled and, before the next push, the retitle is
    taken back; meanwhile another client moves the calendar copy. The poll sees a
    local change pending and records a conflict that the booking system wins. The
    record must then describe the remote content, so the next push overwrites it
    even though the journal's content equals what was pushed before.
    """
    machine = SyncMachine()
    machine.linked(booked=[(0, 30, "Haircut", "UTC")])
    machine.change(pick=0, change=("retitle", "Beard trim"))
    machine.remote_edit(pick=0, change=("time", 2, 30))
    machine.undo(pick=0)
    machine.sync(poll_first=True)
    machine.teardown()


def test_a_deletion_polled_and_then_undone_in_the_calendar_reinstates_the_appointment() -> None:
    """A deletion polled as a cancellation, then undone in the calendar: booked again.

    The customer restores the object from the trash, with a raised SEQUENCE.
    """
    machine = SyncMachine()
    machine.linked(booked=[(0, 30, "Haircut", "Europe/Berlin")])
    machine.remote_delete(pick=0)
    machine.sync(poll_first=False)
    machine.remote_restore(pick=0, bump=True)
    machine.sync(poll_first=False)
    (appointment,) = machine.appointments.values()
    assert appointment.status == "booked"
    machine.teardown()


def test_a_copy_restored_after_a_cancellation_in_the_booking_system_is_deleted_again() -> None:
    machine = SyncMachine()
    machine.linked(booked=[(0, 30, "Haircut", "Europe/Berlin")])
    machine.change(pick=0, change=("cancel",))
    machine.sync(poll_first=False)
    machine.remote_restore(pick=0, bump=True)
    machine.sync(poll_first=True)
    assert not machine.calendar.objects
    machine.teardown()
