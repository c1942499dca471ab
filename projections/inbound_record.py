"""Carry out a poll's decisions: events, copy records and the poll's state, a batch at a time.

``Poller`` (``projections.inbound``) asks the server and decides what each
object means (``projections.inbound_decide``); :class:`DecisionRecorder` records
the decisions as they come: each batch's appointment events, quarantine log,
copy records and the account's inbound state in one transaction, the sync
token with the last batch only (so a poll that dies midway is repeated, and the
copy records make the repeat import nothing twice). :class:`KnownAppointments`
is what both sides ask of the journal about this account's appointments, each
looked up once per poll.
"""

from __future__ import annotations

import functools
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from caljournal.adapters.journal import Journal
from caljournal.adapters.journal_ops import find
from caljournal.adapters.logs import sync_context
from caljournal.adapters.storage import CalendarStorage
from caljournal.adapters.syncstate import (
    CalendarCheck,
    CopyRecord,
    Quarantined,
    StateWrites,
    SyncStateStore,
)
from caljournal.domain.appointment import Appointment
from caljournal.domain.cause import Cause
from caljournal.domain.quarantine import QuarantineLog
from caljournal.domain.values import RemoteFields
from caljournal.projections import inbound_chunks
from caljournal.projections.executor import BOOKING_SYSTEM_WINS
from caljournal.projections.inbound_decide import Decision, DecisionKind

log = logging.getLogger("caljournal.inbound")


@dataclass
class PollReport:
    """What one poll did, with the number of HTTP requests it took.

    ``checked`` says whether the poll compared the full listing although it had
    a delta; ``found`` counts, by decision, what only that comparison revealed.
    """

    requests: int = 0
    full: bool = False
    idle: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    paused: str | None = None
    checked: bool = False
    found: dict[str, int] = field(default_factory=dict)

    def count(self, kind: str) -> None:
        """Count one decision of ``kind``."""
        self.counts[kind] = self.counts.get(kind, 0) + 1


class KnownAppointments:
    """This account's appointments in the journal, for one poll: each id is looked up once."""

    def __init__(self, journal: Journal, account_id: str) -> None:
        self.journal = journal
        self.account_id = account_id
        # Appointment ids found unknown here (or another account's), so an import looks once.
        self.unknown: set[str] = set()

    def look_up(self, ids: set[str], states: dict[str, dict[str, Any]]) -> None:
        """Load the states of those of ``ids`` the journal holds for this account, in one query.

        The rest are remembered as unknown, so nothing asks the journal for them again.
        """
        ids -= self.unknown
        if not ids:
            return
        held = self.journal.journal_recorder.accounts_of(sorted(ids))
        self.unknown |= {i for i in ids if held.get(i) != self.account_id}
        states.update(self.states({i for i in ids if held.get(i) == self.account_id}))

    def states(self, ids: set[str]) -> dict[str, dict[str, Any]]:
        """Return the states of those of ``ids`` that are this account's appointments."""
        found = {}
        for appointment_id in ids:
            appointment = self.load_or_none(appointment_id)
            if appointment is not None:
                found[appointment_id] = appointment.state()
        return found

    def load_or_none(self, appointment_id: str | None) -> Appointment | None:
        """Return this account's appointment, or None when it is unknown here."""
        if appointment_id is None or appointment_id in self.unknown:
            return None
        found = find(self.journal, uuid.UUID(appointment_id), Appointment)
        if found is not None and str(found.account_id) == self.account_id:
            return found
        self.unknown.add(appointment_id)
        return None


class DecisionRecorder:
    """Records one poll's decisions for an account's calendar (see the module's text)."""

    def __init__(
        self,
        journal: Journal,
        store: SyncStateStore,
        storage: CalendarStorage,
        account_id: str,
        calendar_url: str,
        known: KnownAppointments,
        cause: Callable[[], Cause],
    ) -> None:
        self.journal = journal
        self.store = store
        self.storage = storage  # what the poll learned of the server is recorded with the token
        self.account_id = account_id
        self.calendar_url = calendar_url
        self.known = known
        self.cause = cause
        self._quarantine_log: QuarantineLog | None = None

    def record(
        self,
        decided: Iterator[list[Decision]],
        report: PollReport,
        token: str | None,
        ctag: str | None,
        mentioned: set[str],
        quarantine: dict[str, Quarantined],
        checks: CalendarCheck,
        began_us: int,
    ) -> None:
        """Record the decisions as they come, a chunk at a time; the token moves with the last.

        A batch of decisions holds at most ``inbound_chunks.BATCH`` of them (the
        fetched chunks' size, read at each poll).
        """
        size = inbound_chunks.BATCH
        pieces = (
            batch[i : i + size] for batch in decided for i in range(0, max(len(batch), 1), size)
        )
        done = 0
        number = 0
        batch: list[Decision] | None = next(pieces, [])
        while batch is not None:
            following = next(pieces, None)
            if report.paused:
                return  # the breaker tripped while the next batch was decided
            last = following is None
            for decision in batch:
                report.count(decision.kind)
                if report.checked and decision.href not in mentioned:
                    report.found[decision.kind] = report.found.get(decision.kind, 0) + 1
            if last and report.found:
                log.warning(
                    "account %s: the calendar differed from what its server reported: %s",
                    self.account_id,
                    report.found,
                )
            aggregates: list[Appointment | QuarantineLog] = []
            writes = StateWrites(self.account_id)
            cause = self.cause()
            for decision in batch:
                with sync_context(appointment=decision.appointment_id):
                    aggregate = self._execute(decision, cause, quarantine, writes)
                if aggregate is not None:
                    aggregates.append(aggregate)
            quarantine_log = self._log_quarantine(writes, cause)
            if quarantine_log is not None:
                aggregates.append(quarantine_log)
            done += len(batch)
            writes.inbound = self._inbound_values(report, token if last else None, ctag, done, last)
            if last and (report.full or report.checked):
                writes.check = self._check_record(report, checks, began_us)
            elif not last:
                # The token moves only with the last batch. Should this poll die
                # before it, the next one asks again from the old token, and a
                # server whose deltas leave out objects created and deleted since
                # (Xandikos) would never report the deletion of one imported here:
                # until the last batch is in, a full comparison is due.
                writes.check = replace(checks, last_us=None)
            elif number:
                writes.check = checks  # finished: the comparison is as due as before
            self.store.commit(aggregates, writes)
            batch = following
            number += 1

    def _execute(
        self,
        decision: Decision,
        cause: Cause,
        quarantine: dict[str, Quarantined],
        writes: StateWrites,
    ) -> Appointment | None:
        """Carry out one decision: return the appointment it changed; add its state writes."""
        kind = decision.kind
        if decision.href in quarantine and kind is not DecisionKind.QUARANTINE:
            writes.released.append(decision.href)
        if kind is DecisionKind.QUARANTINE:
            writes.quarantine.append(
                Quarantined(
                    self.account_id,
                    decision.href,
                    decision.etag,
                    decision.reason or "",
                    int(time.time() * 1e6),
                )
            )
            return None
        copies = writes.copies
        if kind is DecisionKind.FORGET:
            if decision.appointment_id:
                copies.append(self._copy_record(decision, None, present=False))
            return None
        if (
            kind is DecisionKind.REPUSH
        ):  # recorded as never pushed: the worker's next pass creates it
            copies.append(self._copy_record(decision, -1, present=False))
            return None
        if kind is DecisionKind.ECHO:
            copies.append(self._copy_record(decision, None, present=True, keep_sequence=True))
            return None
        if kind is DecisionKind.ADOPT:
            copies.append(self._copy_record(decision, decision.sequence, present=True))
            return None
        appointment = self.known.load_or_none(decision.appointment_id)
        if kind is DecisionKind.IMPORT and appointment is None:
            assert decision.fields is not None and decision.appointment_id is not None
            appointment = Appointment.import_from_calendar(
                appointment_id=uuid.UUID(decision.appointment_id),
                account_id=self._account_uuid,
                remote=decision.fields,
                cause=cause,
            )
            copies.append(self._copy_record(decision, appointment.sequence, present=True))
            return appointment
        if appointment is None:
            return None
        if kind is DecisionKind.REINSTATE:
            assert decision.fields is not None
            appointment.reinstate_from_calendar(remote=decision.fields, cause=cause)
            copies.append(self._copy_record(decision, appointment.sequence, present=True))
            return appointment
        if kind is DecisionKind.CONFLICT:
            local = {"title": appointment.title, "start": appointment.start.isoformat()}
            remote: dict[str, Any] = (
                {"title": decision.fields.title, "start": decision.fields.start.isoformat()}
                if decision.fields
                else {"deleted": True}
            )
            if decision.fields and decision.reason:
                remote["note"] = decision.reason
            appointment.record_conflict(
                local=local, remote=remote, winner=BOOKING_SYSTEM_WINS, cause=cause
            )
            # The push that follows overwrites, re-creates or deletes the calendar
            # copy. The record takes the remote ETag and the remote content's hash,
            # so that push happens even when the journal's content equals what was
            # pushed before; a restored copy is recorded behind the journal.
            copies.append(
                self._copy_record(
                    decision,
                    decision.sequence,
                    present=decision.fields is not None,
                    keep_sequence=decision.sequence is None,
                )
            )
            return appointment
        if kind is DecisionKind.CANCEL:
            appointment.apply_calendar_change(remote=_cancelled(appointment), cause=cause)
            copies.append(self._copy_record(decision, appointment.sequence, present=False))
            return appointment
        assert decision.fields is not None
        appointment.apply_calendar_change(remote=decision.fields, cause=cause)
        copies.append(self._copy_record(decision, appointment.sequence, present=True))
        return appointment

    @functools.cached_property
    def _account_uuid(self) -> uuid.UUID:
        return uuid.UUID(self.account_id)

    def _copy_record(
        self,
        decision: Decision,
        sequence: int | None,
        *,
        present: bool,
        keep_sequence: bool = False,
        keep_hash: bool = False,
    ) -> CopyRecord:
        needs_current = keep_sequence or keep_hash or sequence is None
        current = self.store.copy_of(str(decision.appointment_id)) if needs_current else None
        known_sequence = current.pushed_sequence if current is not None else -1
        return CopyRecord(
            appointment_id=str(decision.appointment_id),
            account_id=self.account_id,
            calendar_url=self.calendar_url,
            href=decision.href,
            etag=decision.etag if present else None,
            pushed_sequence=(known_sequence if keep_sequence or sequence is None else sequence),
            content_hash=(
                (current.content_hash if current is not None else None)
                if keep_hash
                else decision.digest
            ),
            present=present,
            updated_us=int(time.time() * 1e6),
        )

    def _inbound_values(
        self, report: PollReport, token: str | None, ctag: str | None, done: int, last: bool
    ) -> dict[str, Any]:
        values: dict[str, Any] = {
            "last_poll_us": int(time.time() * 1e6),
            "last_requests": report.requests,
            "import_done": done,
            "last_error": None,
        }
        if last:
            values.update(
                calendar_url=self.calendar_url,
                sync_token=token,
                ctag=ctag,
                confirm_deletes=False,
                breaker=None,
                # What this poll learned of how the server answers, for the next
                # poll of any process (see _use_recorded_mode).
                fetch_mode=self.storage.fetch_mode.as_text(),
            )
            if report.full:
                values["last_full_us"] = int(time.time() * 1e6)
        return values

    def _check_record(
        self, report: PollReport, checks: CalendarCheck, began_us: int
    ) -> CalendarCheck:
        """Return the record of a full comparison (and what only it found).

        It is dated when the poll began: copies recorded since are compared next time.
        """
        now_us = int(time.time() * 1e6)
        found = sum(report.found.values())
        return CalendarCheck(
            account_id=self.account_id,
            last_us=began_us,
            checks=checks.checks + (1 if report.checked else 0),
            differences=checks.differences + found,
            last_found=json.dumps(report.found) if found else checks.last_found,
            last_found_us=now_us if found else checks.last_found_us,
        )

    def _log_quarantine(self, writes: StateWrites, cause: Cause) -> QuarantineLog | None:
        """Record a batch's quarantine changes on the account's log; return it if it changed.

        The sync state holds what is quarantined now, for the poller; the log's
        events, saved in the same transaction, are what auditors read.
        """
        if not writes.quarantine and not writes.released:
            return None
        log = self._quarantine_log
        if log is None:
            account = uuid.UUID(self.account_id)
            log = find(self.journal, QuarantineLog.id_for(account), QuarantineLog)
            log = log or QuarantineLog.open(account, cause)
            self._quarantine_log = log
        for held in writes.quarantine:
            log.quarantine(held.href, held.etag, held.reason, cause)
        for href in writes.released:
            log.release(href, cause)
        return log


def _cancelled(appointment: Appointment) -> RemoteFields:
    return RemoteFields(
        title=appointment.title,
        start=appointment.start,
        end=appointment.end,
        timezone=appointment.timezone,
        cancelled=True,
    )
