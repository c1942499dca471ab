"""Push one appointment to its calendar: decide, act, record after the server confirmed.

``plan`` is pure: from the appointment's state and the record of its calendar
copy it returns what to do. ``Pusher.push`` performs that with conditional
writes and records the outcome only after the server confirmed it, so a crash
repeats at most the write in flight, and repeating it is harmless: the href is
derived from the appointment, and an object that already holds what we meant to
write is recognised by its content hash.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from caljournal.adapters.caldav_client import CalDAVError, PreconditionFailedError
from caljournal.adapters.calendar_writer import CalendarWriter, Written
from caljournal.adapters.ical import (
    AppointmentView,
    ICalendarError,
    content_hash,
    from_ical,
    object_name,
    to_ical,
)
from caljournal.adapters.journal import Journal
from caljournal.domain.appointment import Appointment
from caljournal.domain.cause import Cause

log = logging.getLogger("caljournal.outbound")
BOOKING_SYSTEM_WINS = "booking system"


class TransientPushError(Exception):
    """The server is unavailable for now; the pass stops and is retried later."""

    def __init__(self, error: CalDAVError) -> None:
        super().__init__(error.message)
        self.error = error


@dataclass(frozen=True)
class Action:
    """What to do for one appointment: create, update, delete, or only record."""

    kind: str  # "create" | "update" | "delete" | "record" | "forget"
    href: str
    data: bytes | None = None
    digest: str | None = None
    etag: str | None = None


def href_for(calendar_url: str, appointment_id: str) -> str:
    """Return the deterministic href of an appointment's object in a calendar."""
    base = calendar_url if calendar_url.endswith("/") else calendar_url + "/"
    return base + object_name(UUID(appointment_id))


def render(state: dict[str, Any]) -> tuple[bytes, str]:
    """Return the iCalendar bytes of an appointment state and their content hash."""
    view = AppointmentView.from_state(state)
    data = to_ical(view, dtstamp=datetime.fromisoformat(state["modified_on"]))
    return data, content_hash(data)


def plan(item: dict[str, Any], calendar_url: str) -> Action:
    """Decide what to do for one pending appointment (pure)."""
    state = item["appointment"]
    href = item["href"] or href_for(calendar_url, state["id"])
    present = bool(item["present"])
    if state["status"] == "cancelled":
        if present:
            return Action("delete", href, etag=item["etag"])
        return Action("forget", href)
    data, digest = render(state)
    if present and item["content_hash"] == digest:
        return Action("record", href, data, digest, item["etag"])
    if present:
        return Action("update", href, data, digest, item["etag"])
    return Action("create", href, data, digest)


def summary_of_state(state: dict[str, Any]) -> dict[str, Any]:
    """Return the fields a conflict record shows for our side."""
    return {"title": state["title"], "start": state["start"], "end": state["end"]}


def summary_of_remote(data: bytes | None) -> dict[str, Any]:
    """Return the fields a conflict record shows for the calendar's side."""
    if data is None:
        return {"deleted": True}
    try:
        events = from_ical(data)
    except ICalendarError as exc:
        return {"unparseable": str(exc)[:200]}
    first = events[0]
    return {"title": first.title, "start": str(first.start), "end": str(first.end)}


class Pusher:
    """Push appointments of one account into one calendar."""

    def __init__(
        self,
        journal: Journal,
        writer: CalendarWriter,
        account_id: str,
        calendar_url: str,
        cause: Callable[[], Cause],
    ) -> None:
        self.journal = journal
        self.writer = writer
        self.account_id = account_id
        self.calendar_url = calendar_url
        self.cause = cause
        self.recorder = journal.journal_recorder
        self._unrecorded: list[dict[str, Any]] = []

    def flush(self) -> None:
        """Record the confirmed writes not yet recorded (one transaction).

        Records are batched to spare a commit per object; they are flushed
        before the next look at what is pending, so nothing is pushed twice in
        a running worker, and a crash only repeats confirmed but unrecorded
        writes, which land on the same objects.
        """
        if self._unrecorded:
            batch, self._unrecorded = self._unrecorded, []
            self.recorder.record_copies(batch)

    def push(self, item: dict[str, Any], action: Action | None = None) -> str:
        """Bring one appointment's calendar copy up to date; return the action taken.

        ``action`` is ``plan(item, …)`` when the caller already rendered it.

        :raises TransientPushError: when the server is unavailable (nothing recorded).
        """
        action = action or plan(item, self.calendar_url)
        state = item["appointment"]
        try:
            if action.kind == "delete":
                self._delete(action, state)
                self._record(state, action.href, None, None, present=False)
            elif action.kind == "forget":
                self._record(state, action.href, None, None, present=False)
            elif action.kind == "record":
                self._record(state, action.href, action.etag, action.digest, present=True)
            else:
                written = self._write(action, state, item["content_hash"])
                self._record(state, action.href, written.etag, action.digest, present=True)
        except CalDAVError as exc:
            if exc.transient:
                raise TransientPushError(exc) from None
            self._record_failure(state, action.href, item, exc)
            return "failed"
        log.info("account %s appointment %s %s", self.account_id, state["id"], action.kind)
        return action.kind

    def _write(self, action: Action, state: dict[str, Any], last_digest: str | None) -> Written:
        assert action.data is not None
        try:
            if action.kind == "create":
                return self.writer.create(action.href, action.data)
            return self.writer.update(action.href, action.data, action.etag)
        except PreconditionFailedError:
            return self._resolve(action, state, last_digest)

    def _resolve(self, action: Action, state: dict[str, Any], last_digest: str | None) -> Written:
        """The object exists (create) or changed (update): look, then let our side win."""
        assert action.data is not None
        remote = self.writer.fetch(action.href)
        if remote is None:
            if action.kind == "update":
                self._conflict(state, None)
            return self.writer.create(action.href, action.data)
        data, etag = remote
        digest = content_hash(data)
        if digest == action.digest:
            return Written(etag)  # our own write whose answer we never got
        if action.kind == "update":
            ours = digest == last_digest  # unchanged since our last write: only the ETag moved
        else:
            ours = self._is_copy_of_ours(data, state)  # written by us before a crash
        if not ours:
            self._conflict(state, data)
        return self.writer.update(action.href, action.data, etag)

    def _delete(self, action: Action, state: dict[str, Any]) -> None:
        try:
            self.writer.delete(action.href, action.etag)
        except PreconditionFailedError:
            remote = self.writer.fetch(action.href)
            if remote is None:
                return
            self._conflict(state, remote[0])
            self.writer.delete(action.href, remote[1])

    @staticmethod
    def _is_copy_of_ours(data: bytes, state: dict[str, Any]) -> bool:
        try:
            events = from_ical(data)
        except ICalendarError:
            return False
        ours = [e for e in events if e.appointment_id == state["id"]]
        return bool(ours) and all((e.sequence or 0) <= state["sequence"] for e in ours)

    def _record(
        self,
        state: dict[str, Any],
        href: str,
        etag: str | None,
        digest: str | None,
        *,
        present: bool,
    ) -> None:
        self._unrecorded.append(
            {
                "appointment_id": state["id"],
                "account_id": self.account_id,
                "calendar_url": self.calendar_url,
                "href": href,
                "etag": etag,
                "pushed_sequence": state["sequence"],
                "content_hash": digest,
                "present": 1 if present else 0,
                "failed_sequence": None,
                "failure": None,
                "updated_us": int(time.time() * 1_000_000),
            }
        )

    def _record_failure(
        self, state: dict[str, Any], href: str, item: dict[str, Any], exc: CalDAVError
    ) -> None:
        log.warning("push of appointment %s failed for good: %s", state["id"], exc.message)
        self.flush()
        self.recorder.record_copy(
            {
                "appointment_id": state["id"],
                "account_id": self.account_id,
                "calendar_url": self.calendar_url,
                "href": href,
                "etag": item["etag"],
                "pushed_sequence": item["pushed_sequence"]
                if item["pushed_sequence"] is not None
                else -1,
                "content_hash": item["content_hash"],
                "present": 1 if item["present"] else 0,
                "failed_sequence": state["sequence"],
                "failure": exc.message,
                "updated_us": int(time.time() * 1_000_000),
            }
        )
        self._on_appointment(
            state["id"],
            lambda a: a.record_push_failure(
                sequence=state["sequence"], error=exc.message, cause=self.cause()
            ),
        )

    def _conflict(self, state: dict[str, Any], remote: bytes | None) -> None:
        local, theirs = summary_of_state(state), summary_of_remote(remote)
        self._on_appointment(
            state["id"],
            lambda a: a.record_conflict(
                local=local, remote=theirs, winner=BOOKING_SYSTEM_WINS, cause=self.cause()
            ),
        )

    def _on_appointment(self, appointment_id: str, command: Callable[[Appointment], None]) -> None:
        for _ in range(20):
            appointment = self.journal.repository.get(UUID(appointment_id))
            command(appointment)
            try:
                self.journal.save(appointment)
                return
            except IntegrityError:
                continue
        log.error("could not record a sync event on appointment %s", appointment_id)
