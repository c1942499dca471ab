"""Stateful test of the two-way sync: the production pusher, poller and resync, with crashes.

The journal is a real :class:`Journal` on SQLite (in memory), local commands go
through :class:`AppointmentService`, and the worker's jobs are the production
code: pushes are ``plan`` + ``Pusher.push`` + ``flush`` over the pending-pushes
query (as ``AccountPusher.run_pass`` runs them), polls are ``Poller.poll``, and
backfills and replays are ``Resync`` runs; the copy records live in the
journal's database. The calendar is the storage port in memory
(``tests.support.sync_world.SyncCalendar``). Local commands and another
calendar client's edits, deletions, restores (an undo or a trash bin bringing a
deleted object back) and new events are interleaved with pushes, polls and
resyncs in any order, and with crashes: the process dies after the calendar
accepted a write but before it was recorded, or inside a poll's commit (before
it, inside the transaction, or after it); then it starts anew with only the
database and the calendar.

Checked after every step: no UID is on the calendar twice, and no record claims
a newer push than its appointment has. Checked whenever a push is followed by a
poll: the poll records no event for what the push wrote (echo suppression).
Checked when a poll dies inside or before its commit: the database holds
nothing of that batch. Checked at the end, after a push, a poll and a push:
every booked appointment is on the calendar exactly once with the journal's
title, start and end, and its record names that object, its ETag and the
appointment's sequence; cancelled ones are not on the calendar; every calendar
object belongs to a booked appointment (so every foreign event was imported);
each appointment shows what the conflict policy lets win (a local change wins
over calendar edits made while it waited to be pushed; a calendar edit made
while nothing waited is kept unless a later local change, or a resync, wins;
see ``_changed_remotely``); the next poll records no events and decides nothing
but ``echo``; and a second poll decides nothing at all. Another client storing
an object again without changing it must leave its content hash alone.

Each run draws how the server reports changes (``sync_world.MODES``): a CTag
and a full listing, sync-collection deltas, or deltas that leave out objects
created and deleted between two polls (like Xandikos) made up for by a
comparison with the full listing after our own writes.

The run starts from appointments already on the calendar, keeps few
appointments at a time and picks the most recently touched ones first, so that
both sides often change the same appointment between two syncs.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import icalendar
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from caljournal.adapters.ical import content_hash
from caljournal.appointments import Booking
from caljournal.domain.cause import Cause, Origin
from caljournal.projections.inbound import imported_id
from tests.support.sync_model import (
    Expected,
    SyncModel,
    expected_of,
    master_event,
    replace,
    shown,
    slot,
    tally,
)
from tests.support.sync_world import ACCOUNT, MODES, URL, Crash, PollCrash, PollMode, SyncWorld

API = Cause(Origin.API, "token:acme/default", "req-state-machine")

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


class SyncMachine(SyncModel, RuleBasedStateMachine):
    """Journal, calendar copy records and a calendar, driven by both sides."""

    # -- rules: the booking system ---------------------------------------------------------

    @initialize(
        booked=st.lists(st.tuples(SLOTS, MINUTES, TITLES, ZONES), min_size=1, max_size=2),
        mode=st.sampled_from(MODES),
    )
    def linked(self, booked: list[tuple[int, int, str, str]], mode: PollMode) -> None:
        """Start from an account whose appointments are on its calendar already."""
        self._world = SyncWorld(mode)
        for start, minutes, title, zone in booked:
            self.book(start, minutes, title, zone)
        self._push()

    @precondition(lambda self: len(self._booked()) < MAX_BOOKED)
    @rule(start=SLOTS, minutes=MINUTES, title=TITLES, zone=ZONES)
    def book(self, start: int, minutes: int, title: str, zone: str) -> None:
        self.counter += 1
        booking = Booking(title, slot(start), slot(start) + timedelta(minutes=minutes), zone)
        booked = self.service.book(UUID(ACCOUNT), booking, API, f"booked-{self.counter}")
        self.expected[booked.state["id"]] = expected_of(booked.state)

    def _change_locally(
        self, appointment_id: str, title: str, start: datetime, end: datetime
    ) -> bool:
        """Retitle and move an appointment; return whether anything changed."""
        before = self.states()[appointment_id]["sequence"]
        self.service.change_details(None, UUID(appointment_id), {"title": title}, API)
        state = self.service.move(None, UUID(appointment_id), start, end, API)
        changed = bool(state["sequence"] > before)
        if changed:
            self.expected[appointment_id] = expected_of(state)
        return changed

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
        appointment_id = booked[pick % len(booked)]
        if change[0] == "cancel":
            state = self.service.cancel(None, UUID(appointment_id), API, "customer cancelled")
            self.expected[appointment_id] = expected_of(state)
            return
        current = self.states()[appointment_id]
        before = (
            current["title"],
            datetime.fromisoformat(current["start"]),
            datetime.fromisoformat(current["end"]),
        )
        if change[0] == "move":
            title = current["title"]
            start = slot(change[1])
            end = start + timedelta(minutes=change[2])
        else:
            title, start, end = change[1], before[1], before[2]
        if self._change_locally(appointment_id, title, start, end):
            self.undo_stack.setdefault(appointment_id, []).append(before)

    def _undoable(self) -> list[str]:
        return [a for a in self._booked() if self.undo_stack.get(a)]

    @precondition(lambda self: self._undoable())
    @rule(pick=PICK)
    def undo(self, pick: int) -> None:
        """A user takes back the last move or retitle of an appointment."""
        undoable = self._undoable()
        appointment_id = undoable[pick % len(undoable)]
        self._change_locally(appointment_id, *self.undo_stack[appointment_id].pop())

    # -- rules: another calendar client --------------------------------------------------

    @precondition(lambda self: self.world.calendar.objects)
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
        data, _ = self.world.calendar.objects[href]
        calendar = icalendar.Calendar.from_ical(data)
        event = master_event(calendar)
        if change[0] == "rewrite":
            # Same appointment, other bytes: the hash must see no change.
            event.add("X-SERVER-REVISION", str(self.counter))
            new = calendar.to_ical()
            assert content_hash(new) == content_hash(data)
            self.world.calendar.put(href, new)
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
        self.world.calendar.put(href, new)
        uid, title, start, end = shown(new)
        self._changed_remotely(self._owner(href, uid), Expected("booked", title, start, end))

    @precondition(lambda self: self.world.calendar.objects)
    @rule(pick=PICK)
    def remote_delete(self, pick: int) -> None:
        href = self._href(pick)
        uid = shown(self.world.calendar.objects[href][0])[0]
        self.world.calendar.remove(href)
        self._changed_remotely(self._owner(href, uid), Expected("gone"))

    def _restorable(self) -> list[str]:
        calendar = self.world.calendar
        on_calendar = {shown(data)[0] for data, _ in calendar.objects.values()}
        return sorted(
            href
            for href, data in calendar.trash.items()
            if href not in calendar.objects and shown(data)[0] not in on_calendar
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
        data = self.world.calendar.trash.pop(href)
        if bump:
            calendar = icalendar.Calendar.from_ical(data)
            event = master_event(calendar)
            replace(event, "SEQUENCE", int(event.get("SEQUENCE", 0)) + 1)
            replace(event, "LAST-MODIFIED", datetime.now(UTC).replace(microsecond=0))
            data = calendar.to_ical()
        self.world.calendar.put(href, data)
        uid, title, start, end = shown(data)
        self._changed_remotely(self._owner(href, uid), Expected("booked", title, start, end))

    @precondition(lambda self: len(self.world.calendar.objects) < MAX_OBJECTS)
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
        self.world.calendar.put(f"{URL}foreign-{self.counter}.ics", data)
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
        written = self._push()
        report, events = self._poll()
        echoed = [e for e in events if str(e.originator_id) in written]
        assert not echoed, (
            f"the poll right after a push recorded {echoed} for what it wrote; "
            f"decisions: {report.counts}"
        )

    @rule(delete=st.booleans())
    def resync(self, delete: bool) -> None:
        """An operator runs a backfill (or, with ``delete``, a replay) of the account."""
        self._resync(delete=delete)

    @rule(
        survive=st.integers(min_value=0, max_value=2),
        job=st.sampled_from(["push", "backfill", "replay"]),
    )
    def crash_after_a_write(self, survive: int, job: str) -> None:
        """The process dies after the calendar accepted a write, before it was recorded.

        ``survive`` writes are answered first; then one more is made and the
        process dies (if the job writes that much), and starts anew.
        """
        self.world.calendar.crash_after = survive
        try:
            if job == "push":
                self._push()
            else:
                self._resync(delete=job == "replay")
        except Crash:
            tally(f"crashed after a write ({job})")
        finally:
            self.world.calendar.crash_after = None
        self.world.restart()

    @rule(
        batch=st.integers(min_value=0, max_value=2),
        when=st.sampled_from(["before", "inside", "after"]),
    )
    def crash_in_a_poll(self, batch: int, when: str) -> None:
        """The process dies at a poll's commit of one batch (if it has that many), then restarts.

        The poll commits one decision per batch; the database must then hold
        all of the batch ("after") or none of it.
        """
        try:
            self._poll(PollCrash(batch, when))
        except Crash:
            tally(f"crashed {when} a poll's commit")
        self.world.restart()

    def teardown(self) -> None:
        if self._world is None:
            return
        try:
            self._settle_and_check()
        finally:
            self.world.close()

    # -- checks -----------------------------------------------------------------------------

    @invariant()
    def each_uid_on_the_calendar_once(self) -> None:
        uids = [shown(data)[0] for data, _ in self.world.calendar.objects.values()]
        assert len(uids) == len(set(uids)), f"a UID is on the calendar twice: {sorted(uids)}"

    @invariant()
    def records_never_run_ahead(self) -> None:
        states = self.states()
        for appointment_id, copy in self.copies().items():
            sequence = states[appointment_id]["sequence"]
            assert copy.pushed_sequence <= sequence, (appointment_id, copy, sequence)

    def _settle_and_check(self) -> None:
        self._push()
        self._poll()
        self._push()
        report, events = self._poll()
        assert not events, f"a poll after settling recorded {events}; decisions: {report.counts}"
        assert set(report.counts) <= {"echo"}, report.counts
        report, events = self._poll()
        assert not report.counts and not events, (report.counts, events)
        self._check_calendar_matches_journal()
        self._check_expected()

    def _check_calendar_matches_journal(self) -> None:
        by_uid: dict[str, list[tuple[str, str, datetime, datetime]]] = {}
        objects = self.world.calendar.objects
        for href, (data, _) in objects.items():
            uid, title, start, end = shown(data)
            by_uid.setdefault(uid, []).append((href, title, start, end))
        copies = self.copies()
        expected_uids = set()
        for appointment_id, state in self.states().items():
            uid = state["calendar_uid"] or f"{appointment_id}@caljournal"
            found = by_uid.get(uid, [])
            if state["status"] == "cancelled":
                assert not found, f"cancelled appointment {appointment_id} is on the calendar"
                continue
            expected_uids.add(uid)
            assert len(found) == 1, f"booked {appointment_id} is on the calendar {len(found)}x"
            href, title, start, end = found[0]
            journal = expected_of(state)
            assert (title, start, end) == (journal.title, journal.start, journal.end), (
                f"calendar shows {(title, start, end)} for {state}"
            )
            copy = copies[appointment_id]
            assert copy.present and copy.href == href, copy
            assert copy.etag == objects[href][1], copy
            assert copy.pushed_sequence == state["sequence"], copy
        strays = set(by_uid) - expected_uids
        assert not strays, f"calendar objects without a booked appointment: {sorted(strays)}"

    def _check_expected(self) -> None:
        states = self.states()
        for appointment_id, expected in self.expected.items():
            state = states.get(appointment_id)
            if state is None:
                assert expected.status == "gone", f"{appointment_id} was never imported"
                continue
            actual = expected_of(state)
            assert actual == expected, f"{appointment_id}: journal {actual} != expected {expected}"


# The number of runs comes from the hypothesis profile (tests/conftest.py):
# HYPOTHESIS_PROFILE=long for a longer search.
SyncMachine.TestCase.settings = settings(
    stateful_step_count=20, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestSyncStateMachine = SyncMachine.TestCase


def _started(booked: list[tuple[int, int, str, str]], mode: PollMode = MODES[0]) -> SyncMachine:
    machine = SyncMachine()
    machine.linked(booked=booked, mode=mode)
    return machine


def test_change_taken_back_while_the_calendar_copy_was_edited_reaches_the_calendar() -> None:
    """A local change taken back while another client edits the calendar copy.

    A pushed appointment is retitled and, before the next push, the retitle is
    taken back; meanwhile another client moves the calendar copy. The poll sees a
    local change pending and records a conflict that the booking system wins. The
    record must then describe the remote content, so the next push overwrites it
    even though the journal's content equals what was pushed before.
    """
    machine = _started([(0, 30, "Haircut", "UTC")])
    machine.change(pick=0, change=("retitle", "Beard trim"))
    machine.remote_edit(pick=0, change=("time", 2, 30))
    machine.undo(pick=0)
    machine.sync(poll_first=True)
    machine.teardown()


@pytest.mark.parametrize("bump", [True, False], ids=["sequence-raised", "as-it-was"])
def test_a_deletion_polled_and_then_undone_in_the_calendar_reinstates_the_appointment(
    bump: bool,
) -> None:
    """A deletion polled as a cancellation, then undone in the calendar: booked again.

    The customer restores the object from the trash, with a raised SEQUENCE or
    exactly as it was.
    """
    machine = _started([(0, 30, "Haircut", "Europe/Berlin")])
    machine.remote_delete(pick=0)
    machine.sync(poll_first=False)
    (state,) = machine.states().values()
    assert state["status"] == "cancelled" and state["cancel_origin"] == "caldav"
    machine.remote_restore(pick=0, bump=bump)
    machine.sync(poll_first=False)
    (state,) = machine.states().values()
    assert state["status"] == "booked"
    machine.teardown()


def test_a_copy_restored_after_a_cancellation_in_the_booking_system_is_deleted_again() -> None:
    machine = _started([(0, 30, "Haircut", "Europe/Berlin")])
    machine.change(pick=0, change=("cancel",))
    machine.sync(poll_first=False)
    machine.remote_restore(pick=0, bump=True)
    machine.sync(poll_first=True)
    assert not machine.world.calendar.objects
    machine.teardown()


def test_a_poll_that_dies_after_committing_its_first_batch_loses_nothing_on_the_next() -> None:
    """Two remote changes, polled in batches of one; the process dies after the first commit.

    The sync token moves only with the last batch, so the next poll asks again
    and takes in the second change; the first, recorded with its ETag, is not
    taken in twice.
    """
    machine = _started([(0, 30, "Haircut", "UTC")], mode=MODES[1])
    machine.sync(poll_first=True)  # the poll after this one asks for a delta
    machine.remote_edit(pick=0, change=("title", "Beard trim"))
    machine.remote_create(
        title="Färben ✂", start=4, minutes=60, zone="Europe/Berlin", vtimezone=True
    )
    machine.crash_in_a_poll(batch=0, when="after")
    assert machine.world.restarts == 1
    machine.teardown()


def test_a_write_whose_answer_died_with_the_process_is_recognised_after_the_restart() -> None:
    """The calendar took a new appointment, the process died before recording it.

    After the restart the pusher finds the object it meant to write and
    records it: no second object, no conflict.
    """
    machine = _started([(0, 30, "Haircut", "UTC")])
    machine.book(start=4, minutes=60, title="Beard trim", zone="Europe/Berlin")
    position = machine.world.position()
    machine.crash_after_a_write(survive=0, job="push")
    assert machine.world.restarts == 1 and len(machine.world.calendar.objects) == 2
    assert len(machine.copies()) == 1  # the second write was never recorded
    machine.sync(poll_first=False)
    assert len(machine.copies()) == 2
    assert not machine.world.notifications_since(position)  # no conflict was recorded
    machine.teardown()


def test_a_backfilled_copy_at_a_new_href_outweighs_the_deletion_of_the_recorded_one() -> None:
    """One poll finds an appointment's object at a new href and its recorded one gone.

    Another client deleted an imported event; a backfill wrote it again under
    the appointment's own href and died before recording that. The next poll
    sees both: the appointment is still on the calendar, so it stays booked
    and its record names the new object (it was cancelled, with the object
    left on the calendar, and polls that found the calendar unchanged never
    looked again).
    """
    machine = _started([(0, 30, "Haircut", "UTC")])
    machine.remote_create(title="Färben ✂", start=4, minutes=60, zone="UTC", vtimezone=False)
    machine.sync(poll_first=True)
    machine.remote_delete(pick=0)  # the imported event, the most recently written object
    machine.crash_after_a_write(survive=0, job="backfill")
    machine.sync(poll_first=True)
    assert all(s["status"] == "booked" for s in machine.states().values())
    machine.teardown()


def test_an_imported_event_stored_again_under_a_new_href_stays_booked() -> None:
    """Another client deletes an event and stores it again under a new name (same UID)."""
    machine = _started([(0, 30, "Haircut", "UTC")])
    machine.remote_create(title="Färben ✂", start=4, minutes=60, zone="UTC", vtimezone=False)
    machine.sync(poll_first=True)
    calendar = machine.world.calendar
    old = f"{URL}foreign-{machine.counter}.ics"
    data = calendar.objects[old][0]
    calendar.remove(old)
    calendar.put(f"{URL}renamed.ics", data)
    machine.sync(poll_first=True)
    assert all(s["status"] == "booked" for s in machine.states().values())
    assert {c.href for c in machine.copies().values()} >= {f"{URL}renamed.ics"}
    machine.teardown()


def test_a_replay_records_its_deletions_at_the_appointments_sequence() -> None:
    """A replay deletes the restored copy of an appointment the calendar cancelled.

    Its record must say the calendar is up to date with the journal: restored
    once more, the object then takes back the calendar's own cancellation (a
    record behind the journal made the next poll treat the cancellation as a
    local change still to push, and the push deleted the object again).
    """
    machine = _started([(0, 30, "Haircut", "Europe/Berlin")])
    machine.remote_delete(pick=0)
    machine.sync(poll_first=False)  # polled: cancelled by the calendar
    machine.remote_restore(pick=0, bump=False)
    machine.resync(delete=True)  # the replay deletes the restored copy
    ((appointment_id, state),) = machine.states().items()
    assert machine.copies()[appointment_id].pushed_sequence == state["sequence"]
    machine.remote_restore(pick=0, bump=False)
    machine.sync(poll_first=True)
    assert machine.states()[appointment_id]["status"] == "booked"
    machine.teardown()


@pytest.mark.parametrize("poll_first", [False, True], ids=["push-first", "poll-first"])
def test_an_unrecorded_write_is_not_taken_for_a_calendar_edit_after_an_undo(
    poll_first: bool,
) -> None:
    """A retitle is pushed and the process dies before recording it; the user takes it back.

    The record's ETag names the old content, which the journal shows again. The
    record was marked in doubt before the write, so it claims no content: the
    push writes the old content again (it must not only record it), and a poll
    recognises the unrecorded write as ours (it must not apply it over the undo,
    nor record a conflict).
    """
    machine = _started([(0, 30, "Haircut", "UTC")])
    machine.change(pick=0, change=("retitle", "Beard trim"))
    machine.crash_after_a_write(survive=0, job="push")
    machine.undo(pick=0)
    position = machine.world.position()
    machine.sync(poll_first=poll_first)
    (state,) = machine.states().values()
    assert state["title"] == "Haircut", f"the journal took back the undo: {state['title']}"
    assert not machine.world.notifications_since(position), "a conflict was recorded"
    (data, _) = next(iter(machine.world.calendar.objects.values()))
    assert shown(data)[1] == "Haircut"
    machine.teardown()


def test_a_replay_that_dies_rewriting_a_deleted_import_leaves_one_copy() -> None:
    """A replay writes a remotely deleted, locally moved import again and dies unrecorded.

    The replay writes where the appointment's record points (the import's own
    href), as the push does; the push after the restart finds that object and
    does not make a second one under the appointment's own name.
    """
    machine = _started([(228, 30, "Haircut", "Europe/Berlin")])
    machine.remote_create(
        minutes=30, start=210, title="Haircut", vtimezone=True, zone="Europe/Berlin"
    )
    machine.sync(poll_first=True)
    machine.change(pick=0, change=("move", 3, 30))  # the import, the most recent change
    machine.remote_delete(pick=0)
    machine.crash_after_a_write(job="replay", survive=0)
    machine.teardown()


def test_an_unrecorded_copy_restored_after_a_cancellation_in_the_booking_system_goes() -> None:
    """A replay's unrecorded write is deleted, the appointment cancelled, the copy restored.

    The restored copy carries a SEQUENCE raised by the restoring client, equal
    to the cancelled appointment's: the poll adopts it as behind the journal,
    and the push deletes it (the booking system's cancellation wins).
    """
    machine = _started([(228, 30, "Haircut", "Europe/Berlin")])
    machine.book(minutes=30, start=107, title="Haircut", zone="Europe/Berlin")
    machine.crash_after_a_write(job="replay", survive=0)
    machine.remote_delete(pick=0)
    machine.change(change=("cancel",), pick=0)
    machine.remote_restore(bump=True, pick=0)
    machine.teardown()


def test_an_import_deleted_after_a_poll_died_between_batches_is_cancelled() -> None:
    """A poll imports one of two new events and dies before its last batch; both are deleted.

    The token did not move, and a server whose deltas leave out objects created
    and deleted since (like Xandikos) never reports the imported one's
    deletion: the next poll compares the full listing and cancels it.
    """
    machine = _started([(0, 30, "Haircut", "Europe/Berlin")], mode=MODES[2])
    machine.crash_in_a_poll(batch=1, when="before")  # nothing to poll yet: the token is set
    for _ in range(2):
        machine.remote_create(
            minutes=30, start=0, title="Haircut", vtimezone=False, zone="Europe/Berlin"
        )
    machine.crash_in_a_poll(batch=1, when="before")
    machine.remote_delete(pick=0)
    machine.remote_delete(pick=0)
    machine.teardown()


def test_an_edit_by_another_client_is_not_taken_for_our_write_when_a_replay_died() -> None:
    """A retitle and its undo are recorded without a write; another client moves the copy.

    The copy still carries the SEQUENCE of its first write, so the other
    client's edit has a SEQUENCE older than the appointment's. A replay marks
    the record in doubt and dies before writing it: the poll must not adopt
    the edit as the replay's own write (it holds other content than the
    journal showed at that SEQUENCE), and takes it in as a calendar edit.
    """
    machine = _started([(242, 30, "Haircut", "Europe/Berlin"), (23, 30, "Beard trim", "UTC")])
    machine.change(change=("retitle", "Haircut"), pick=0)
    machine.undo(pick=0)
    machine.sync(poll_first=True)
    machine.remote_create(
        minutes=120, start=44, title="Cut, wash; dry", vtimezone=True, zone="America/New_York"
    )
    machine.sync(poll_first=True)
    (retitled,) = [a for a, s in machine.states().items() if s["sequence"] == 2]
    href = machine.copies()[retitled].href
    pick = next(p for p in range(MAX_OBJECTS) if machine._href(p) == href)
    machine.remote_edit(change=("time", 1, 120), pick=pick)
    machine.crash_after_a_write(job="replay", survive=0)
    machine.teardown()


def test_an_unrecorded_write_edited_by_another_client_is_overwritten_as_a_conflict() -> None:
    """The push's write lands, the process dies before recording it, another client edits it.

    Without a record nothing tells whether a local change waited: as over a
    record in doubt, the booking system wins, the poll records a conflict, and
    the push writes the journal's content over the edit.
    """
    machine = _started([(118, 30, "Beard trim", "Europe/Berlin")])
    machine.book(minutes=30, start=185, title="Haircut", zone="Europe/Berlin")
    machine.crash_after_a_write(job="push", survive=0)
    machine.remote_edit(change=("time", 5, 120), pick=0)  # the unrecorded object
    position = machine.world.position()
    machine.sync(poll_first=True)
    conflicts = [
        n for n in machine.world.notifications_since(position) if "ConflictResolved" in n.topic
    ]
    assert len(conflicts) == 1
    machine.teardown()


def test_an_edit_equal_to_an_older_state_is_not_taken_for_our_write() -> None:
    """Another client's edit happens to equal what a write at its SEQUENCE would have held.

    A retitle and its undo are recorded (by a backfill) without a write; another
    client then makes the retitle on the calendar, which raises SEQUENCE to the
    retitle's. A replay marks the record in doubt and dies before writing it.
    Every write begun since the record renders a state at least as new as the
    record's, so the edit is someone else's and is taken in.
    """
    machine = _started([(118, 30, "Beard trim", "Europe/Berlin"), (118, 30, "Haircut", "UTC")])
    by_title = {s["title"]: a for a, s in machine.states().items()}
    beard, haircut = by_title["Beard trim"], by_title["Haircut"]
    assert haircut < beard  # the replay writes the other appointment first, and dies
    state = machine.states()[beard]
    start, end = datetime.fromisoformat(state["start"]), datetime.fromisoformat(state["end"])
    machine._change_locally(beard, "Haircut", start, end)
    machine._change_locally(beard, "Beard trim", start, end)
    machine.resync(delete=False)
    href = machine.copies()[beard].href
    pick = next(p for p in range(MAX_OBJECTS) if machine._href(p) == href)
    machine.remote_edit(change=("title", "Haircut"), pick=pick)
    other = machine.states()[haircut]
    machine._change_locally(
        haircut,
        "Färben ✂",
        datetime.fromisoformat(other["start"]),
        datetime.fromisoformat(other["end"]),
    )
    machine.crash_after_a_write(job="replay", survive=0)
    machine.teardown()
