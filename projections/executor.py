"""Perform one planned write against a calendar storage; record it after the server confirmed.

Push (``projections.push``) and backfill/replay (``projections.resync``) plan
differently but write the same way, through :class:`Executor`:

* every write is conditional; a failed precondition (the object exists, or
  changed since we knew its ETag) is resolved the same way for everyone: look at
  the object; our own write whose answer we never got (same content hash), or
  our copy from before a crash, is taken as it is; anything else was changed by
  someone else, which is recorded on the appointment as ``ConflictResolved``
  (the booking system wins) before the object is overwritten or deleted;
* the outcome is recorded as a :class:`CopyRecord` only after the server
  confirmed it (batched in a :class:`CopyLog`: a crash repeats at most confirmed
  but unrecorded writes, which land on the same objects); before a batch is
  written, the records of the copies it writes over are marked in doubt
  (:meth:`CopyLog.doubt`, one store call), so a record whose write was answered
  but never recorded claims no content: the next push writes again instead of
  only recording, and a failed precondition then finds our own earlier write
  (our appointment id, a SEQUENCE older than the one being written), not a
  conflict;
* a failure for good is recorded for good (:meth:`Executor.record_failure`):
  a copy record with ``failed_sequence`` and ``PushFailed`` on the appointment.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from uuid import UUID

from caljournal.adapters.ical import ICalendarError, content_hash, from_ical
from caljournal.adapters.journal import Journal
from caljournal.adapters.journal_ops import apply
from caljournal.adapters.logs import LazyId, current_context, sync_context
from caljournal.adapters.metrics import PUSHES
from caljournal.adapters.storage import CalendarStorage, PreconditionFailed, StorageError, Written
from caljournal.adapters.syncstate import CopyRecord, SyncStateStore
from caljournal.domain.appointment import Appointment
from caljournal.domain.cause import Cause

log = logging.getLogger("caljournal.outbound")
BOOKING_SYSTEM_WINS = "booking system"


class ActionKind(StrEnum):
    """What a planned write does to one appointment's calendar object."""

    CREATE = "create"  # store a new object (none known at its href)
    UPDATE = "update"  # replace the object we know (by its ETag)
    DELETE = "delete"  # remove the object we know
    RECORD = "record"  # the object holds this already: only record it
    FORGET = "forget"  # nothing on the calendar, nothing to write: record the absence


@dataclass(frozen=True)
class Action:
    """A planned write: its kind, the object's href, the bytes and their hash, the known ETag."""

    kind: ActionKind
    href: str
    data: bytes | None = None
    digest: str | None = None
    etag: str | None = None


@dataclass(frozen=True)
class Subject:
    """The appointment a write is for.

    ``sequence`` is the appointment sequence the write shows; ``last_digest``
    the content hash the object had when we last knew it (our record, or a
    backfill's scan): a changed ETag over that content is no one's edit. None
    means we do not know it (a record in doubt): our own earlier write is then
    recognised by the appointment id and SEQUENCE it carries.
    ``state`` is the appointment state written, or None to load it when needed.
    """

    appointment_id: str
    sequence: int
    last_digest: str | None = None
    state: dict[str, Any] | None = None


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


def is_copy_of_ours(data: bytes, appointment_id: str, sequence: int) -> bool:
    """Return whether an object is our copy of this appointment, not newer than ``sequence``."""
    try:
        events = from_ical(data)
    except ICalendarError:
        return False
    ours = [e for e in events if e.appointment_id == appointment_id]
    return bool(ours) and all((e.sequence or 0) <= sequence for e in ours)


def now_us() -> int:
    """Return the time as integer microseconds since the epoch."""
    return int(time.time() * 1_000_000)


class CopyLog:
    """Confirmed writes waiting to be recorded, in batches (shared by threads).

    ``flush_at``: record as soon as that many wait (None: only on :meth:`flush`).
    """

    def __init__(self, store: SyncStateStore, flush_at: int | None = None) -> None:
        self.store = store
        self.flush_at = flush_at
        self._waiting: list[CopyRecord] = []
        self._lock = threading.Lock()

    def add(self, records: Sequence[CopyRecord]) -> None:
        """Note confirmed writes."""
        with self._lock:
            self._waiting.extend(records)
            full = self.flush_at is not None and len(self._waiting) >= self.flush_at
        if full:
            self.flush()

    def doubt(self, appointment_ids: Sequence[str]) -> None:
        """Mark the records of copies about to be written over in doubt (one store call).

        Writes still waiting are recorded first, so the mark always follows them.
        """
        if not appointment_ids:
            return
        self.flush()
        self.store.doubt_copies(appointment_ids)

    def flush(self) -> None:
        """Record every waiting write (one transaction)."""
        with self._lock:
            batch, self._waiting = self._waiting, []
        if batch:
            self.store.record_copies(batch)


class Executor:
    """Perform planned writes on one calendar for one account (see the module's docstring).

    ``copies`` is None for a run that records nothing (a replay as of an earlier
    moment); conflicts are recorded on the appointments all the same. ``states``
    loads the state a write was rendered from when a conflict needs it.
    """

    def __init__(
        self,
        journal: Journal,
        storage: CalendarStorage,
        copies: CopyLog | None,
        account_id: str,
        calendar_url: str,
        cause: Callable[[], Cause],
        states: Callable[[str], dict[str, Any]] | None = None,
    ) -> None:
        self.journal = journal
        self.storage = storage
        self.copies = copies
        self.account_id = account_id
        self.calendar_url = calendar_url
        self.cause = cause
        self.states = states

    def perform(self, action: Action, subject: Subject) -> Written | None:
        """Make the calendar show ``action``; record it once the server confirmed.

        Returns what the server answered to the write (None for a deletion or
        when nothing was written).

        :raises StorageError: when the server failed (nothing recorded).
        """
        with self.context(subject):
            try:
                written = self._perform(action, subject)
            except StorageError as exc:
                PUSHES.labels(action.kind.value, "transient" if exc.transient else "failed").inc()
                raise
            PUSHES.labels(action.kind.value, "ok").inc()
            log.debug("%s of appointment %s done", action.kind.value, subject.appointment_id)
            return written

    def context(self, subject: Subject) -> contextlib.AbstractContextManager[None]:
        """Tag the log lines of a write with the account, the appointment and a correlation id.

        The correlation id is the one already set (a backfill's request), else
        the one recorded with the appointment's latest event (looked up only
        when a line is written): an API request's id is then found on the
        worker's lines for its push.
        """
        now = current_context()
        if now["appointment"] == subject.appointment_id and now["account"] == self.account_id:
            return contextlib.nullcontext()
        correlation = (
            None if now["correlation_id"] else LazyId(lambda: self._correlation_of(subject))
        )
        return sync_context(
            account=self.account_id,
            appointment=subject.appointment_id,
            correlation_id=correlation,
        )

    def _correlation_of(self, subject: Subject) -> str | None:
        """Return the correlation id of the appointment's latest event (None: no event)."""
        stored = self.journal.recorder.select_events(
            UUID(subject.appointment_id), desc=True, limit=1
        )
        if not stored:
            return None
        return getattr(self.journal.mapper.to_domain_event(stored[0]), "correlation_id", None)

    def _perform(self, action: Action, subject: Subject) -> Written | None:
        written: Written | None = None
        if action.kind is ActionKind.DELETE:
            self._delete(action, subject)
        elif action.kind in (ActionKind.CREATE, ActionKind.UPDATE):
            written = self._write(action, subject)
        present = action.kind not in (ActionKind.DELETE, ActionKind.FORGET)
        if action.kind is ActionKind.RECORD:
            etag: str | None = action.etag
        else:
            etag = written.etag if written is not None else None
        self._record(subject, action.href, etag, action.digest if present else None, present)
        return written

    def record_failure(
        self, action: Action, subject: Subject, before: CopyRecord | None, message: str
    ) -> None:
        """Record that a write failed for good: on the copy record and on the appointment.

        The record keeps what the calendar held before (``before``); the
        appointment's next change, or an operator's retry, tries again.
        """
        with self.context(subject):
            log.warning(
                "push of appointment %s failed for good: %s", subject.appointment_id, message
            )
        if self.copies is None:
            return
        self.copies.flush()
        self.copies.store.record_copies(
            [
                CopyRecord(
                    appointment_id=subject.appointment_id,
                    account_id=self.account_id,
                    calendar_url=self.calendar_url,
                    href=action.href,
                    etag=before.etag if before else None,
                    pushed_sequence=before.pushed_sequence if before else -1,
                    content_hash=before.content_hash if before else None,
                    present=before.present if before else False,
                    failed_sequence=subject.sequence,
                    failure=message,
                    updated_us=now_us(),
                )
            ]
        )
        cause = self.cause()
        apply(
            self.journal,
            UUID(subject.appointment_id),
            lambda a: a.record_push_failure(sequence=subject.sequence, error=message, cause=cause),
            Appointment,
        )

    # -- writes and their preconditions ---------------------------------------------

    def _write(self, action: Action, subject: Subject) -> Written:
        assert action.data is not None
        try:
            if action.kind is ActionKind.CREATE:
                return self.storage.create(action.href, action.data)
            return self.storage.update(action.href, action.data, action.etag)
        except PreconditionFailed:
            return self._resolve(action, subject)

    def _resolve(self, action: Action, subject: Subject) -> Written:
        """The object exists (create) or changed (update): look, then let our side win."""
        assert action.data is not None
        remote = self.storage.fetch(action.href)
        if remote is None:
            if action.kind is ActionKind.UPDATE:
                self._conflict(subject, None)
            return self.storage.create(action.href, action.data)
        data, etag = remote
        digest = content_hash(data)
        if digest == action.digest:
            return Written(etag)  # our own write whose answer we never got
        if action.kind is ActionKind.CREATE:  # our copy written before a crash
            ours = is_copy_of_ours(data, subject.appointment_id, subject.sequence)
        elif subject.last_digest is not None:
            ours = digest == subject.last_digest  # unchanged content: only the ETag moved
        else:
            # Over a record in doubt: our unrecorded write shows an older sequence
            # (at this one it would hold this content, recognised above).
            ours = is_copy_of_ours(data, subject.appointment_id, subject.sequence - 1)
        if not ours:
            self._conflict(subject, data)
        return self.storage.update(action.href, action.data, etag)

    def _delete(self, action: Action, subject: Subject) -> None:
        try:
            self.storage.delete(action.href, action.etag)
        except PreconditionFailed:
            remote = self.storage.fetch(action.href)
            if remote is None:
                return
            self._conflict(subject, remote[0])
            self.storage.delete(action.href, remote[1])

    def _conflict(self, subject: Subject, remote: bytes | None) -> None:
        state = subject.state
        if state is None:
            assert self.states is not None, "a conflict needs the state that was written"
            state = self.states(subject.appointment_id)
        local, theirs = summary_of_state(state), summary_of_remote(remote)
        cause = self.cause()
        apply(
            self.journal,
            UUID(subject.appointment_id),
            lambda a: a.record_conflict(
                local=local, remote=theirs, winner=BOOKING_SYSTEM_WINS, cause=cause
            ),
            Appointment,
        )

    def _record(
        self, subject: Subject, href: str, etag: str | None, digest: str | None, present: bool
    ) -> None:
        if self.copies is None:
            return
        self.copies.add(
            [
                CopyRecord(
                    appointment_id=subject.appointment_id,
                    account_id=self.account_id,
                    calendar_url=self.calendar_url,
                    href=href,
                    etag=etag,
                    pushed_sequence=subject.sequence,
                    content_hash=digest,
                    present=present,
                    updated_us=now_us(),
                )
            ]
        )


__all__ = [
    "BOOKING_SYSTEM_WINS",
    "Action",
    "ActionKind",
    "CopyLog",
    "Executor",
    "Subject",
    "is_copy_of_ours",
    "summary_of_remote",
    "summary_of_state",
]
