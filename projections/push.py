"""Push one appointment to its calendar: decide, then let the executor act.

``plan`` is pure: from a pending push (the appointment's state and the record
of its calendar copy) it returns what to do. ``Pusher.push`` has the executor
(``projections.executor``) perform that with conditional writes and record the
outcome only after the server confirmed it, so a crash repeats at most the write
in flight, and repeating it is harmless: the href is derived from the
appointment, and an object that already holds what we meant to write is
recognised by its content hash.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from caljournal.adapters.ical import AppointmentView, content_hash, object_name, to_ical
from caljournal.adapters.journal import Journal
from caljournal.adapters.storage import CalendarStorage, StorageError
from caljournal.adapters.syncstate import PendingPush, SyncStateStore
from caljournal.domain.cause import Cause
from caljournal.projections.executor import (
    BOOKING_SYSTEM_WINS,
    Action,
    ActionKind,
    CopyLog,
    Executor,
    Subject,
    is_copy_of_ours,
    summary_of_remote,
    summary_of_state,
)

log = logging.getLogger("caljournal.outbound")


class TransientPushError(Exception):
    """The server is unavailable for now; the pass stops and is retried later."""

    def __init__(self, error: StorageError) -> None:
        super().__init__(error.message)
        self.error = error


def href_for(calendar_url: str, appointment_id: str) -> str:
    """Return the deterministic href of an appointment's object in a calendar."""
    base = calendar_url if calendar_url.endswith("/") else calendar_url + "/"
    return base + object_name(UUID(appointment_id))


def render(state: dict[str, Any]) -> tuple[bytes, str]:
    """Return the iCalendar bytes of an appointment state and their content hash."""
    view = AppointmentView.from_state(state)
    data = to_ical(view, dtstamp=datetime.fromisoformat(state["modified_on"]))
    return data, content_hash(data)


def plan(item: PendingPush, calendar_url: str) -> Action:
    """Decide what to do for one pending appointment (pure)."""
    state, copy = item.appointment, item.copy
    href = copy.href if copy is not None else href_for(calendar_url, state["id"])
    present = copy is not None and copy.present
    etag = copy.etag if copy is not None else None
    if state["status"] == "cancelled":
        if present:
            return Action(ActionKind.DELETE, href, etag=etag)
        return Action(ActionKind.FORGET, href)
    data, digest = render(state)
    if present and copy is not None and copy.content_hash == digest:
        return Action(ActionKind.RECORD, href, data, digest, etag)
    if present:
        return Action(ActionKind.UPDATE, href, data, digest, etag)
    return Action(ActionKind.CREATE, href, data, digest)


class Pusher:
    """Push appointments of one account into one calendar."""

    def __init__(
        self,
        journal: Journal,
        storage: CalendarStorage,
        store: SyncStateStore,
        account_id: str,
        calendar_url: str,
        cause: Callable[[], Cause],
    ) -> None:
        self.journal = journal
        self.storage = storage
        self.store = store
        self.account_id = account_id
        self.calendar_url = calendar_url
        self.cause = cause
        self.copies = CopyLog(store)
        self.executor = Executor(journal, storage, self.copies, account_id, calendar_url, cause)

    def flush(self) -> None:
        """Record the confirmed writes not yet recorded (one transaction).

        Records are batched to spare a commit per object; they are flushed
        before the next look at what is pending, so nothing is pushed twice in
        a running worker, and a crash only repeats confirmed but unrecorded
        writes, which land on the same objects.
        """
        self.copies.flush()

    def begin(self, items: Sequence[PendingPush]) -> None:
        """Mark the records of the copies a batch may write over in doubt (one store call).

        Call before pushing ``items``: a crash between the server's answer and
        the (batched) record then leaves records that claim no content, never
        the old one (see ``projections.executor``). Copies that turn out to
        need no write get their content back when recorded.
        """
        self.copies.doubt(
            [
                item.appointment["id"]
                for item in items
                if item.copy is not None
                and item.copy.present
                and item.copy.content_hash is not None
                and item.appointment["status"] != "cancelled"
            ]
        )

    def push(self, item: PendingPush, action: Action | None = None) -> ActionKind | None:
        """Bring one appointment's calendar copy up to date; return the action taken.

        ``action`` is ``plan(item, …)`` when the caller already rendered it.
        None means the push failed for good (recorded on the copy and the
        appointment).

        :raises TransientPushError: when the server is unavailable (nothing recorded).
        """
        action = action or plan(item, self.calendar_url)
        state = item.appointment
        subject = Subject(
            state["id"],
            state["sequence"],
            item.copy.content_hash if item.copy is not None else None,
            state,
        )
        with self.executor.context(subject):
            try:
                self.executor.perform(action, subject)
            except StorageError as exc:
                if exc.transient:
                    raise TransientPushError(exc) from None
                self.executor.record_failure(action, subject, item.copy, exc.message)
                return None
            log.info("account %s appointment %s %s", self.account_id, state["id"], action.kind)
        return action.kind


__all__ = [
    "BOOKING_SYSTEM_WINS",
    "Action",
    "ActionKind",
    "Pusher",
    "TransientPushError",
    "href_for",
    "is_copy_of_ours",
    "plan",
    "render",
    "summary_of_remote",
    "summary_of_state",
]
