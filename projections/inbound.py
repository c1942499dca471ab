"""Inbound sync: turn a calendar's changes into journal events, cheaply and without echo.

``decide`` is pure: for one remote object (or its deletion) and what caljournal
knows of it, it says what to do. ``Poller.poll`` asks the server the cheapest
question it can (a sync-collection delta, or a CTag check and an ETag listing),
loads only objects whose ETag differs from caljournal's own href → ETag map
(so our own writes are never read back as changes), and commits the events
together with the map and the new sync token, in one transaction per batch:
the token moves only with the last batch, so a crash repeats the poll and the
map makes the repeat import nothing twice.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from datetime import time as dtime
from typing import Any
from zoneinfo import ZoneInfo

from eventsourcing.application import AggregateNotFoundError

from caljournal.adapters.calendar_reader import CalendarReader, SyncTokenInvalidError
from caljournal.adapters.ical import ICalendarError, content_hash, from_ical
from caljournal.adapters.ical_parse import RemoteEvent
from caljournal.adapters.journal import Journal
from caljournal.adapters.providers import get_profile
from caljournal.adapters.readmodel import INBOUND, OUTBOUND, QUARANTINE, Row
from caljournal.domain.appointment import Appointment, RemoteFields
from caljournal.domain.cause import Cause
from caljournal.domain.errors import DomainError
from caljournal.domain.link import CalendarLink

log = logging.getLogger("caljournal.inbound")
IMPORT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://caljournal.invalid/imported")
BATCH = 200
FULL_COMPARE_EVERY_US = 6 * 3600 * 1_000_000
MAX_OBJECT_BYTES = 5_000_000


@dataclass(frozen=True)
class BreakerPolicy:
    """When one poll would cancel too much, stop and ask an operator."""

    share: float = 0.5
    minimum: int = 10


@dataclass(frozen=True)
class Decision:
    """What one remote object (or its deletion) means for the journal."""

    kind: str  # import | apply | adopt | echo | conflict | cancel | forget | quarantine
    href: str
    appointment_id: str | None = None
    fields: RemoteFields | None = None
    etag: str | None = None
    digest: str | None = None
    reason: str | None = None
    sequence: int | None = None


@dataclass
class PollReport:
    """What one poll did, with the number of HTTP requests it took."""

    requests: int = 0
    full: bool = False
    idle: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    paused: str | None = None

    def count(self, kind: str) -> None:
        """Count one decision of ``kind``."""
        self.counts[kind] = self.counts.get(kind, 0) + 1


def imported_id(account_id: str, calendar_url: str, uid: str) -> str:
    """Return the appointment id of a foreign calendar object (the same on every import)."""
    return str(uuid.uuid5(IMPORT_NAMESPACE, f"{account_id}|{calendar_url.rstrip('/')}|{uid}"))


def _moment(value: date | datetime, zone: str, floating: bool) -> datetime:
    if isinstance(value, datetime):
        if floating or value.tzinfo is None:
            return value.replace(tzinfo=ZoneInfo("UTC"))
        return value.astimezone(ZoneInfo(zone))
    return datetime.combine(value, dtime(0), tzinfo=ZoneInfo(zone))


def remote_fields(events: Sequence[RemoteEvent]) -> RemoteFields:
    """Return the appointment fields a calendar object states (master plus overrides).

    :raises ICalendarError: when the object has no master event.
    """
    masters = [e for e in events if e.recurrence_id is None]
    if len(masters) != 1:
        raise ICalendarError("the object has no single master event (only overrides?)")
    master = masters[0]
    floating = master.floating
    zone = "UTC" if floating else (master.timezone or "UTC")
    overrides = [
        {
            "recurrence_id": e.recurrence_id_line,
            "start": _moment(e.start, zone, floating).isoformat(),
            "end": _moment(e.end, zone, floating).isoformat(),
            "title": e.title,
            "location": e.location,
            "description": e.description,
            "status": e.status,
        }
        for e in events
        if e.recurrence_id is not None
    ]
    recurrence = None
    if master.rrule or master.rdate or overrides:
        recurrence = {
            "rrule": list(master.rrule),
            "rdate": list(master.rdate),
            "exdate": list(master.exdate),
            "overrides": overrides,
        }
    return RemoteFields(
        title=master.title or "",
        start=_moment(master.start, zone, floating),
        end=_moment(master.end, zone, floating),
        timezone=zone,
        location=master.location,
        description=master.description,
        customer_name=master.customer_name,
        customer_email=master.customer_email,
        calendar_uid=master.uid,
        all_day=master.all_day,
        floating=floating,
        recurrence=recurrence,
        cancelled=(master.status or "").upper() == "CANCELLED",
    )


def decide(
    href: str,
    etag: str | None,
    data: bytes | None,
    copy: dict[str, Any] | None,
    appointment: dict[str, Any] | None,
    new_id: Callable[[str], str],
) -> Decision:
    """Decide what a remote object (``data``; None when deleted) means (pure).

    ``copy`` is caljournal's record of that href, ``appointment`` the state of
    the appointment it belongs to, ``new_id`` maps a foreign UID to an id.
    """
    local_newer = (
        copy is not None
        and appointment is not None
        and appointment["sequence"] > copy["pushed_sequence"]
    )
    if data is None:
        if copy is None or appointment is None or appointment["status"] == "cancelled":
            return Decision("forget", href, copy and copy["appointment_id"])
        if local_newer:
            return Decision("conflict", href, appointment["id"], reason="deleted in the calendar")
        return Decision("cancel", href, appointment["id"])
    if len(data) > MAX_OBJECT_BYTES:
        return Decision("quarantine", href, etag=etag, reason="object larger than 5 MB")
    try:
        events = from_ical(data)
        fields = remote_fields(events)
        fields.check()
    except (ICalendarError, DomainError) as exc:
        reason = getattr(exc, "message", None) or str(exc)
        return Decision("quarantine", href, etag=etag, reason=reason[:500])
    digest = content_hash(data)
    if copy is not None:
        if digest == copy["content_hash"]:
            return Decision("echo", href, copy["appointment_id"], etag=etag, digest=digest)
        if local_newer:
            return Decision("conflict", href, copy["appointment_id"], fields, etag, digest)
        return Decision("apply", href, copy["appointment_id"], fields, etag, digest)
    ours = next((e.appointment_id for e in events if e.appointment_id), None)
    if ours is not None and appointment is not None and appointment["id"] == ours:
        remote_sequence = max(e.sequence or 0 for e in events)
        if remote_sequence <= appointment["sequence"]:
            # Our own write whose record was lost (a crash between the server's
            # answer and the record): adopt it; the push brings it up to date.
            return Decision("adopt", href, ours, fields, etag, digest, sequence=remote_sequence)
        return Decision("apply", href, ours, fields, etag, digest)
    return Decision("import", href, new_id(fields.calendar_uid or href), fields, etag, digest)


class Poller:
    """Poll one account's calendar and record what changed there."""

    def __init__(
        self,
        journal: Journal,
        reader: CalendarReader,
        account_id: str,
        link: dict[str, Any],
        cause: Callable[[], Cause],
        breaker: BreakerPolicy | None = None,
    ) -> None:
        self.journal = journal
        self.reader = reader
        self.account_id = account_id
        self.link = link
        self.calendar_url = str(link["calendar_url"])
        self.cause = cause
        self.breaker = breaker or BreakerPolicy()
        self.recorder = journal.journal_recorder

    def poll(self) -> PollReport:
        """Poll once; return what was done.

        :raises CalDAVError: when the server cannot be asked (nothing is recorded).
        """
        report = PollReport()
        state = self.recorder.inbound_state(self.account_id)
        same_calendar = state.get("calendar_url") == self.calendar_url
        token = state.get("sync_token") if same_calendar else None
        ctag = None
        now_us = int(time.time() * 1e6)
        blind = not get_profile(self.link.get("provider") or "generic").detects_invalid_sync_token
        due = now_us - (state.get("last_full_us") or 0) > FULL_COMPARE_EVERY_US
        if self.link.get("sync_tokens") and token and blind and due:
            # Servers that answer an expired token with an empty 207 (DAViCal, SOGo,
            # OX, Zimbra…) cannot tell us it expired: compare everything now and then.
            log.info("account %s: periodic full compare (server hides bad tokens)", self.account_id)
            delta = self.reader.changes_since(None)
            report.requests += 1
        elif self.link.get("sync_tokens"):
            try:
                delta = self.reader.changes_since(token)
                report.requests += 1
            except SyncTokenInvalidError:
                report.requests += 1
                log.info("account %s: sync token refused; comparing everything", self.account_id)
                delta = self.reader.changes_since(None)
                report.requests += 1
        else:
            ctag = self.reader.state_tag()
            report.requests += 1
            if ctag is not None and same_calendar and ctag == state.get("ctag"):
                report.idle = True
                self._finish(report, [], token=None, ctag=ctag)
                return report
            delta = self.reader.listing()
            report.requests += 1
        report.full = delta.complete
        if not delta.complete and not delta.changed and not delta.deleted:
            # Nothing changed: record the poll (and the server's new token) only.
            self.recorder.update_inbound(
                self.account_id,
                last_poll_us=int(time.time() * 1e6),
                last_requests=report.requests,
                sync_token=delta.token or token,
                last_error=None,
            )
            report.idle = True
            return report
        wanted_hrefs = None if delta.complete else set(delta.changed) | set(delta.deleted)
        copies = self.recorder.copies_by_href(self.account_id, self.calendar_url, wanted_hrefs)
        quarantine = self.recorder.quarantined(self.account_id)
        wanted = {
            href: etag
            for href, etag in delta.changed.items()
            if not _known(copies.get(href), etag) and not _known(quarantine.get(href), etag)
        }
        gone = set(delta.deleted)
        if delta.complete:
            gone |= set(copies) - set(delta.changed)
        gone &= set(copies) | set(quarantine)
        if state.get("sync_token") is None and not same_calendar:
            self.recorder.update_inbound(
                self.account_id, import_total=len(wanted), import_done=0, calendar_url=None
            )
        loaded = self.reader.load(sorted(wanted))
        report.requests += loaded.requests
        gone |= loaded.missing & (set(copies) | set(quarantine))
        decisions = self._decide(loaded.objects, gone, copies)
        cancels = sum(1 for d in decisions if d.kind == "cancel")
        live = self.recorder.count_copies(self.account_id)
        if (
            cancels >= self.breaker.minimum
            and cancels > self.breaker.share * max(live, 1)
            and not state.get("confirm_deletes")
        ):
            reason = (
                f"one poll would cancel {cancels} of {live} appointments; nothing was "
                "cancelled — confirm with 'caljournal link resume ACCOUNT --confirm-deletes'"
            )
            self._trip_breaker(reason)
            report.paused = reason
            return report
        for decision in decisions:
            report.count(decision.kind)
        self._apply(decisions, report, delta.token, ctag, quarantine)
        return report

    def _decide(
        self,
        objects: dict[str, tuple[bytes, str | None]],
        gone: set[str],
        copies: dict[str, dict[str, Any]],
    ) -> list[Decision]:
        involved = {c["appointment_id"] for h, c in copies.items() if h in objects or h in gone}
        states = self._states(involved)
        decisions: list[Decision] = []
        seen_uids: dict[str, str] = {}
        for href in sorted(objects):
            data, etag = objects[href]
            copy = copies.get(href)
            decision = decide(
                href,
                etag,
                data,
                copy,
                states.get(copy["appointment_id"]) if copy else self._ours(data, states),
                lambda uid: imported_id(self.account_id, self.calendar_url, uid),
            )
            uid = decision.fields.calendar_uid if decision.fields else None
            if uid and decision.kind in ("import", "apply"):
                if uid in seen_uids:
                    decision = Decision(
                        "quarantine",
                        href,
                        etag=etag,
                        reason=f"the same UID as {seen_uids[uid]} (duplicate UID)",
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

    def _ours(self, data: bytes, states: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
        try:
            events = from_ical(data)
        except ICalendarError:
            return None
        ours = next((e.appointment_id for e in events if e.appointment_id), None)
        if ours is None:
            return None
        if ours not in states:
            states.update(self._states({ours}))
        return states.get(ours)

    def _states(self, ids: set[str]) -> dict[str, dict[str, Any]]:
        found = {}
        for appointment_id in ids:
            try:
                appointment = self.journal.repository.get(uuid.UUID(appointment_id))
            except AggregateNotFoundError:  # not in the journal: unknown here
                continue
            if (
                isinstance(appointment, Appointment)
                and str(appointment.account_id) == self.account_id
            ):
                found[appointment_id] = appointment.state()
        return found

    def _apply(
        self,
        decisions: list[Decision],
        report: PollReport,
        token: str | None,
        ctag: str | None,
        quarantine: dict[str, dict[str, Any]],
    ) -> None:
        batches = [decisions[i : i + BATCH] for i in range(0, len(decisions), BATCH)] or [[]]
        done = 0
        for number, batch in enumerate(batches):
            aggregates: list[Appointment] = []
            rows: list[Row] = []
            cause = self.cause()
            for decision in batch:
                aggregate, decision_rows = self._execute(decision, cause, quarantine)
                if aggregate is not None:
                    aggregates.append(aggregate)
                rows.extend(decision_rows)
            done += len(batch)
            last = number == len(batches) - 1
            rows.append(self._inbound_row(report, token if last else None, ctag, done, last))
            self.journal.save(*aggregates, extra_rows=rows)

    def _execute(
        self, decision: Decision, cause: Cause, quarantine: dict[str, dict[str, Any]]
    ) -> tuple[Appointment | None, list[Row]]:
        rows: list[Row] = []
        if decision.href in quarantine and decision.kind != "quarantine":
            rows.append(
                Row(QUARANTINE, {"id": self._qid(decision.href)}, versioned=False, delete=True)
            )
        kind = decision.kind
        if kind == "quarantine":
            rows.append(
                Row(
                    QUARANTINE,
                    {
                        "id": self._qid(decision.href),
                        "account_id": self.account_id,
                        "href": decision.href,
                        "etag": decision.etag,
                        "reason": decision.reason,
                        "at_us": int(time.time() * 1e6),
                    },
                    versioned=False,
                )
            )
            return None, rows
        if kind == "forget":
            if decision.appointment_id:
                rows.append(self._copy_row(decision, None, present=False))
            return None, rows
        if kind == "echo":
            rows.append(self._copy_row(decision, None, present=True, keep_sequence=True))
            return None, rows
        if kind == "adopt":
            rows.append(self._copy_row(decision, decision.sequence, present=True))
            return None, rows
        appointment = self._load_or_none(decision.appointment_id)
        if kind == "import" and appointment is None:
            assert decision.fields is not None
            appointment = Appointment.import_from_calendar(
                appointment_id=uuid.UUID(decision.appointment_id),
                account_id=uuid.UUID(self.account_id),
                remote=decision.fields,
                cause=cause,
            )
            rows.append(self._copy_row(decision, appointment.sequence, present=True))
            return appointment, rows
        if appointment is None:
            return None, rows
        if kind == "conflict":
            local = {"title": appointment.title, "start": appointment.start.isoformat()}
            remote = (
                {"title": decision.fields.title, "start": decision.fields.start.isoformat()}
                if decision.fields
                else {"deleted": True}
            )
            appointment.record_conflict(
                local=local, remote=remote, winner="booking system", cause=cause
            )
            # The push that follows overwrites (or re-creates) the calendar copy. The
            # record takes the remote ETag and the remote content's hash, so that push
            # happens even when the journal's content equals what was pushed before.
            rows.append(
                self._copy_row(
                    decision, None, present=decision.fields is not None, keep_sequence=True
                )
            )
            return appointment, rows
        if kind == "cancel":
            appointment.apply_calendar_change(remote=_cancelled(appointment), cause=cause)
            rows.append(self._copy_row(decision, appointment.sequence, present=False))
            return appointment, rows
        assert decision.fields is not None
        appointment.apply_calendar_change(remote=decision.fields, cause=cause)
        rows.append(self._copy_row(decision, appointment.sequence, present=True))
        return appointment, rows

    def _copy_row(
        self,
        decision: Decision,
        sequence: int | None,
        *,
        present: bool,
        keep_sequence: bool = False,
        keep_hash: bool = False,
    ) -> Row:
        needs_current = keep_sequence or keep_hash or sequence is None
        current = (
            (self.recorder.copy_of(str(decision.appointment_id)) or {}) if needs_current else {}
        )
        return Row(
            OUTBOUND,
            {
                "appointment_id": decision.appointment_id,
                "account_id": self.account_id,
                "calendar_url": self.calendar_url,
                "href": decision.href,
                "etag": decision.etag if present else None,
                "pushed_sequence": (
                    current.get("pushed_sequence", -1)
                    if keep_sequence or sequence is None
                    else sequence
                ),
                "content_hash": current.get("content_hash") if keep_hash else decision.digest,
                "present": 1 if present else 0,
                "failed_sequence": None,
                "failure": None,
                "updated_us": int(time.time() * 1e6),
            },
            key="appointment_id",
            versioned=False,
        )

    def _inbound_row(
        self, report: PollReport, token: str | None, ctag: str | None, done: int, last: bool
    ) -> Row:
        values: dict[str, Any] = {
            "account_id": self.account_id,
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
                confirm_deletes=0,
                breaker=None,
            )
            if report.full:
                values["last_full_us"] = int(time.time() * 1e6)
        return Row(INBOUND, values, key="account_id", versioned=False)

    def _finish(
        self, report: PollReport, rows: list[Row], token: str | None, ctag: str | None
    ) -> None:
        self.recorder.update_inbound(
            self.account_id,
            last_poll_us=int(time.time() * 1e6),
            last_requests=report.requests,
            ctag=ctag,
            last_error=None,
        )

    def _trip_breaker(self, reason: str) -> None:
        self.recorder.update_inbound(
            self.account_id, breaker=reason, last_poll_us=int(time.time() * 1e6)
        )
        link = self.journal.repository.get(CalendarLink.id_for(uuid.UUID(self.account_id)))
        assert isinstance(link, CalendarLink)
        if link.pause(reason=reason, cause=self.cause()):
            self.journal.save(link)

    def _load_or_none(self, appointment_id: str | None) -> Appointment | None:
        if appointment_id is None:
            return None
        try:
            found = self.journal.repository.get(uuid.UUID(appointment_id))
        except AggregateNotFoundError:
            return None
        return found if isinstance(found, Appointment) else None

    def _qid(self, href: str) -> str:
        return f"{self.account_id}|{href}"


def _known(record: dict[str, Any] | None, etag: str | None) -> bool:
    return bool(record and etag and record.get("etag") == etag)


def _cancelled(appointment: Appointment) -> RemoteFields:
    return RemoteFields(
        title=appointment.title,
        start=appointment.start,
        end=appointment.end,
        timezone=appointment.timezone,
        cancelled=True,
    )


__all__ = ["BreakerPolicy", "Decision", "PollReport", "Poller", "decide", "remote_fields", "UTC"]
