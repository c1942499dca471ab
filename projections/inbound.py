"""Inbound sync: turn a calendar's changes into journal events, cheaply and without echo.

``decide`` (``projections.inbound_decide``) is pure: for one remote object (or
its deletion) and what caljournal knows of it, it says what to do.
``Poller.poll`` asks the server the cheapest question it can (a sync-collection
delta, or a CTag check and an ETag listing), loads only objects whose ETag
differs from caljournal's own href → ETag map (so our own writes are never read
back as changes), and commits the events together with the map and the new
sync token, in one transaction per batch: the token moves only with the last
batch, so a crash repeats the poll and the map makes the repeat import nothing
twice. Objects are fetched (unless the delta carried them), parsed once,
decided and recorded a chunk at a time, so a first import's counter moves from
its first chunk and memory holds one chunk, not the calendar; the next chunk is
loaded and parsed meanwhile (``projections.inbound_chunks``).

No server's delta is trusted alone (Xandikos, for one, never reports an object
created and deleted after the client's token): on a schedule, and after our own
writes, a poll also compares the calendar's full href → ETag listing with the
copy records (:class:`CheckPolicy`). Whatever differs goes through the same
``decide`` as a delta, and is counted in the account's status.
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

from caljournal.adapters.cpu_pool import INLINE, CpuPool
from caljournal.adapters.journal import Journal
from caljournal.adapters.journal_ops import apply, find, state_at_sequence
from caljournal.adapters.logs import sync_context
from caljournal.adapters.metrics import POLL_SECONDS, POLLS
from caljournal.adapters.providers import get_profile
from caljournal.adapters.storage import (
    CalendarStorage,
    Delta,
    FetchMode,
    SyncTokenInvalid,
)
from caljournal.adapters.syncstate import (
    CalendarCheck,
    CopyRecord,
    Quarantined,
    StateWrites,
    SyncStateStore,
)
from caljournal.domain.appointment import Appointment
from caljournal.domain.cause import Cause
from caljournal.domain.link import CalendarLink
from caljournal.domain.quarantine import QuarantineLog
from caljournal.domain.values import RemoteFields
from caljournal.projections.executor import BOOKING_SYSTEM_WINS
from caljournal.projections.inbound_chunks import BATCH, fetch_chunks
from caljournal.projections.inbound_decide import (
    MAX_OBJECT_BYTES,
    Decision,
    DecisionKind,
    Parsed,
    decide,
    imported_id,
    remote_fields,
)

log = logging.getLogger("caljournal.inbound")
FULL_COMPARE_EVERY_US = 6 * 3600 * 1_000_000


@dataclass(frozen=True)
class BreakerPolicy:
    """When one poll would cancel too much, stop and ask an operator."""

    share: float = 0.5
    minimum: int = 10


@dataclass(frozen=True)
class CheckPolicy:
    """When a poll also compares the calendar's full listing with the copy records.

    At least every ``interval`` seconds, and after caljournal's own writes as
    soon as ``spacing`` seconds have passed since the last comparison (never
    more than one listing per ``spacing``).
    """

    interval: float = 900.0
    spacing: float = 60.0


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


class Poller:
    """Poll one account's calendar and record what changed there."""

    def __init__(
        self,
        journal: Journal,
        storage: CalendarStorage,
        store: SyncStateStore,
        account_id: str,
        link: dict[str, Any],
        cause: Callable[[], Cause],
        breaker: BreakerPolicy | None = None,
        check: CheckPolicy | None = None,
        pool: CpuPool = INLINE,
    ) -> None:
        self.journal = journal
        self.storage = storage
        self.store = store
        self.account_id = account_id
        self.link = link
        self.calendar_url = str(link["calendar_url"])
        self.cause = cause
        self.breaker = breaker or BreakerPolicy()
        self.check = check or CheckPolicy()
        self.pool = pool  # parses the objects of a poll of many chunks ahead (inbound_chunks)
        # Appointment ids one poll found unknown here, so an import looks once.
        self._unknown: set[str] = set()
        self._quarantine_log: QuarantineLog | None = None
        self._poll_cause: Cause | None = None
        # The recorded fetch mode last handed to the storage (see _use_recorded_mode).
        self._mode_applied: str | None = None

    def poll(self) -> PollReport:
        """Poll once; return what was done.

        The poll's events and log lines share one correlation id; its outcome
        and duration are counted (``adapters.metrics``).

        :raises CalDAVError: when the server cannot be asked (nothing is recorded).
        """
        cause = self._poll_cause = self.cause()
        began = time.monotonic()
        outcome = "failed"
        try:
            with sync_context(account=self.account_id, correlation_id=cause.correlation_id):
                report = self._poll()
            outcome = "ok"
            return report
        finally:
            self._poll_cause = None
            POLLS.labels(outcome).inc()
            POLL_SECONDS.labels(outcome).observe(time.monotonic() - began)

    def _poll(self) -> PollReport:
        report = PollReport()
        self._unknown = set()
        self._quarantine_log = None
        state = self.store.inbound_state(self.account_id)
        self._use_recorded_mode(state.fetch_mode)
        checks = self.store.calendar_check(self.account_id)
        same_calendar = state.calendar_url == self.calendar_url
        token = state.sync_token if same_calendar else None
        ctag = None
        now_us = int(time.time() * 1e6)
        blind = not get_profile(self.link.get("provider") or "generic").detects_invalid_sync_token
        due = now_us - (state.last_full_us or 0) > FULL_COMPARE_EVERY_US
        check = self._check_due(checks if same_calendar else CalendarCheck(self.account_id), now_us)
        if self.link.get("sync_tokens") and token and blind and due:
            # Servers that answer an expired token with an empty 207 (DAViCal, SOGo,
            # OX, Zimbra…) cannot tell us it expired: compare everything now and then.
            log.info("account %s: periodic full compare (server hides bad tokens)", self.account_id)
            delta = self.storage.changes_since(None)
            report.requests += delta.requests
        elif self.link.get("sync_tokens"):
            try:
                delta = self.storage.changes_since(token)
                report.requests += delta.requests
            except SyncTokenInvalid:
                report.requests += 1
                log.info("account %s: sync token refused; comparing everything", self.account_id)
                delta = self.storage.changes_since(None)
                report.requests += delta.requests
        else:
            ctag = self.storage.state_tag()
            report.requests += 1
            if ctag is not None and same_calendar and ctag == state.ctag and not check:
                report.idle = True
                self._finish(report, token=None, ctag=ctag)
                return report
            delta = self.storage.listing()
            report.requests += 1
            # A listing asked for although the CTag had not moved is a check.
            report.checked = ctag is not None and same_calendar and ctag == state.ctag
        # What the server's own answer named; a check counts what it found beyond that.
        mentioned = set() if report.checked else set(delta.changed) | set(delta.deleted)
        if check and not delta.complete:
            delta = _with_listing(delta, self.storage.listing())
            report.requests += 1
            report.checked = True
        report.full = delta.complete
        if not delta.complete and not delta.changed and not delta.deleted:
            # Nothing changed: record the poll (and the server's new token) only.
            self.store.update_inbound(
                self.account_id,
                last_poll_us=int(time.time() * 1e6),
                last_requests=report.requests,
                sync_token=delta.token or token,
                last_error=None,
            )
            report.idle = True
            return report
        wanted_hrefs = None if delta.complete else set(delta.changed) | set(delta.deleted)
        copies = self.store.copies_by_href(self.account_id, self.calendar_url, wanted_hrefs)
        quarantine = self.store.quarantined(self.account_id)
        wanted = {
            href: etag
            for href, etag in delta.changed.items()
            if not _known(copies.get(href), etag) and not _known(quarantine.get(href), etag)
        }
        gone = set(delta.deleted)
        if delta.complete:
            # A copy recorded after this poll began may have been written after the
            # listing was taken (a backfill in another process): its absence proves
            # nothing. The next check looks at it (it counts as a write since then).
            gone |= {h for h in set(copies) - set(delta.changed) if copies[h].updated_us < now_us}
        gone &= set(copies) | set(quarantine)
        if state.sync_token is None and not same_calendar:
            self.store.update_inbound(
                self.account_id, import_total=len(wanted), import_done=0, calendar_url=None
            )
        live = self.store.count_copies(self.account_id)
        listed = set(delta.changed) if delta.complete else None
        batches = self._decisions(
            sorted(wanted),
            delta.data,
            wanted,
            gone,
            copies,
            quarantine,
            listed,
            report,
            live,
            state.confirm_deletes,
        )
        if self._trips(len(gone), live, state.confirm_deletes):
            # So many deletions that the breaker may trip: decide everything before
            # anything is recorded, as the breaker promises ("nothing was cancelled").
            batches = iter([[d for batch in batches for d in batch]])
        self._apply(batches, report, delta.token, ctag, mentioned, quarantine, checks, now_us)
        return report

    def _check_due(self, checks: CalendarCheck, now_us: int) -> bool:
        """Return whether this poll compares the full listing (see :class:`CheckPolicy`)."""
        last_us = checks.last_us
        if last_us is None:
            return True
        elapsed = (now_us - last_us) / 1e6
        if elapsed >= self.check.interval:
            return True
        if elapsed < self.check.spacing:
            return False
        return (checks.written_us or 0) > last_us

    def _trips(self, cancels: int, live: int, confirmed: bool) -> bool:
        """Return whether ``cancels`` of ``live`` appointments in one poll trip the breaker."""
        return (
            cancels >= self.breaker.minimum
            and cancels > self.breaker.share * max(live, 1)
            and not confirmed
        )

    def _decisions(
        self,
        wanted: list[str],
        inline: dict[str, bytes],
        etags: dict[str, str | None],
        gone: set[str],
        copies: dict[str, CopyRecord],
        quarantine: dict[str, Quarantined],
        listed: set[str] | None,
        report: PollReport,
        live: int,
        confirmed: bool,
    ) -> Iterator[list[Decision]]:
        """Yield the poll's decisions chunk by chunk: fetched, parsed and decided per chunk.

        Objects the server sent with the delta are used as they are; the rest are
        loaded a chunk at a time. Deletions come last, once every object is
        decided (an appointment found under another href is not deleted), and
        only if they do not trip the breaker (then ``report.paused`` says why).
        ``listed`` is every href of a complete delta (None for a partial one).
        """
        seen_uids: dict[str, str] = {}
        found: set[str] = set()
        held = set(copies) | set(quarantine)
        for chunk in fetch_chunks(self.storage, self.pool, wanted, inline, etags):
            report.requests += chunk.requests
            gone |= chunk.missing & held
            decided = self._decide(chunk.objects, copies, seen_uids, chunk.parsed())
            found.update(d.appointment_id for d in decided if d.appointment_id)
            yield decided
        last = self._decide_gone(gone, copies, found)
        if listed is not None:
            last += self._missing_without_deletion(
                listed, found | {d.appointment_id for d in last if d.appointment_id}
            )
        cancels = sum(1 for d in last if d.kind is DecisionKind.CANCEL)
        if self._trips(cancels, live, confirmed):
            reason = (
                f"one poll would cancel {cancels} of {live} appointments; nothing was "
                "cancelled — confirm with 'caljournal link resume ACCOUNT --confirm-deletes'"
            )
            self._trip_breaker(reason)
            report.paused = reason
            return
        yield last

    def _decide(
        self,
        objects: dict[str, tuple[bytes, str | None]],
        copies: dict[str, CopyRecord],
        seen_uids: dict[str, str],
        parsed: dict[str, Parsed],
    ) -> list[Decision]:
        """Decide on one chunk of objects, each parsed once; ``seen_uids`` spans the poll.

        ``parsed`` holds :func:`parse_object` of each object (``inbound_chunks`` parses them).
        """
        involved = {c.appointment_id for h, c in copies.items() if h in objects}
        states = self._states(involved)
        import_ids: dict[str, str] = {}  # by UID: the owner and the decision both ask

        def import_id(uid: str) -> str:
            found = import_ids.get(uid)
            if found is None:
                found = import_ids[uid] = imported_id(self.account_id, self.calendar_url, uid)
            return found

        owners = {
            href: self._owner_id(parsed[href], import_id)
            for href in objects
            if copies.get(href) is None
        }
        self._look_up({o for o in owners.values() if o} - set(states), states)
        decisions: list[Decision] = []
        for href in sorted(objects):
            data, etag = objects[href]
            copy = copies.get(href)
            appointment = states.get(copy.appointment_id) if copy else None
            if copy is None:
                copy, appointment = self._owner(owners[href], states)
            decision = decide(
                href,
                etag,
                data,
                copy,
                appointment,
                import_id,
                past=self._past(appointment),
                parsed=parsed[href],
            )
            uid = decision.fields.calendar_uid if decision.fields else None
            if uid and decision.kind in (
                DecisionKind.IMPORT,
                DecisionKind.APPLY,
                DecisionKind.REINSTATE,
            ):
                if uid in seen_uids:
                    decision = Decision(
                        DecisionKind.QUARANTINE,
                        href,
                        etag=etag,
                        reason=f"the same UID as {seen_uids[uid]} (duplicate UID)",
                    )
                else:
                    seen_uids[uid] = href
            decisions.append(decision)
        return decisions

    def _decide_gone(
        self, gone: set[str], copies: dict[str, CopyRecord], found: set[str]
    ) -> list[Decision]:
        """Decide on deleted objects: an appointment this poll ``found`` elsewhere stays."""
        involved = {c.appointment_id for h, c in copies.items() if h in gone}
        states = self._states(involved)
        decisions = []
        for href in sorted(gone):
            copy = copies.get(href)
            state = states.get(copy.appointment_id) if copy else None
            decisions.append(
                decide(href, None, None, copy, state, lambda uid: uid)
                if copy and copy.appointment_id not in found
                else Decision(DecisionKind.FORGET, href)
            )
        return decisions

    def _missing_without_deletion(self, listed: set[str], decided: set[str]) -> list[Decision]:
        """Return re-pushes of live appointments missing from the calendar.

        Their records say the calendar holds no copy although no deletion there
        took it (that would have cancelled the appointment, or left a newer
        local change pending) and no push is pending or failed.
        """
        return [
            Decision(DecisionKind.REPUSH, record.href, record.appointment_id)
            for record in self.store.absent_live_copies(self.account_id, self.calendar_url)
            if record.href not in listed and record.appointment_id not in decided
        ]

    def _owner_id(self, parsed: Parsed, import_id: Callable[[str], str]) -> str | None:
        """Return the id of the appointment an object names: ours, or its UID's import id."""
        events = parsed.events
        owner = next((e.appointment_id for e in events if e.appointment_id), None)
        if owner is None:
            master = next((e for e in events if e.recurrence_id is None), None)
            if master is None or not master.uid:
                return None
            owner = import_id(master.uid)
        return owner

    def _owner(
        self, owner: str | None, states: dict[str, dict[str, Any]]
    ) -> tuple[CopyRecord | None, dict[str, Any] | None]:
        """Return the absent-copy record and the state of the appointment ``owner``.

        For an object at an href without a present copy: ours (by its appointment
        id) or an imported one (by its UID). The record is returned only when it
        says this calendar holds no copy (the object was deleted and is back).
        """
        if owner is None:
            return None, None
        if owner not in states:
            states.update(self._states({owner}))
        state = states.get(owner)
        if state is None:
            return None, None
        record = self.store.copy_of(owner)
        if record and record.calendar_url == self.calendar_url and not record.present:
            return record, state
        return None, state

    def _look_up(self, ids: set[str], states: dict[str, dict[str, Any]]) -> None:
        """Load the states of those of ``ids`` the journal holds for this account, in one query.

        The rest are remembered as unknown, so nothing asks the journal for them again.
        """
        ids -= self._unknown
        if not ids:
            return
        held = self.journal.journal_recorder.accounts_of(sorted(ids))
        self._unknown |= {i for i in ids if held.get(i) != self.account_id}
        states.update(self._states({i for i in ids if held.get(i) == self.account_id}))

    def _states(self, ids: set[str]) -> dict[str, dict[str, Any]]:
        found = {}
        for appointment_id in ids:
            appointment = self._load_or_none(appointment_id)
            if appointment is not None:
                found[appointment_id] = appointment.state()
        return found

    def _apply(
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
        """Record the decisions as they come, BATCH at a time; the token moves with the last."""
        pieces = (
            batch[i : i + BATCH] for batch in decided for i in range(0, max(len(batch), 1), BATCH)
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
            cause = self._poll_cause or self.cause()
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
        appointment = self._load_or_none(decision.appointment_id)
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

    def _use_recorded_mode(self, recorded: str | None) -> None:
        """Hand the storage how earlier polls found the server best asked (once per record).

        A storage that lives across polls keeps what it learns; a new one (a new
        process, a worker taking the account over) starts from the record
        instead of the provider's preset. A record that does not read is
        logged and left for the next poll to overwrite.
        """
        if recorded is None or recorded == self._mode_applied:
            return
        self._mode_applied = recorded
        try:
            mode = FetchMode.from_text(recorded)
        except ValueError as exc:
            log.warning("account %s: recorded fetch mode ignored: %s", self.account_id, exc)
            return
        self.storage.use_fetch_mode(mode)

    def _finish(self, report: PollReport, token: str | None, ctag: str | None) -> None:
        self.store.update_inbound(
            self.account_id,
            last_poll_us=int(time.time() * 1e6),
            last_requests=report.requests,
            ctag=ctag,
            last_error=None,
        )

    def _trip_breaker(self, reason: str) -> None:
        self.store.update_inbound(
            self.account_id, breaker=reason, last_poll_us=int(time.time() * 1e6)
        )
        cause = self.cause()
        apply(
            self.journal,
            CalendarLink.id_for(uuid.UUID(self.account_id)),
            lambda link: link.pause(reason=reason, cause=cause),
            CalendarLink,
        )

    def _past(self, appointment: dict[str, Any] | None) -> Callable[[int], dict[str, Any] | None]:
        """Return how to look up the appointment's state at an older sequence (read on demand)."""

        def at(sequence: int) -> dict[str, Any] | None:
            if appointment is None:
                return None
            return state_at_sequence(self.journal, uuid.UUID(appointment["id"]), sequence)

        return at

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

    def _load_or_none(self, appointment_id: str | None) -> Appointment | None:
        """Return this account's appointment, or None when it is unknown here."""
        if appointment_id is None or appointment_id in self._unknown:
            return None
        found = find(self.journal, uuid.UUID(appointment_id), Appointment)
        if found is not None and str(found.account_id) == self.account_id:
            return found
        self._unknown.add(appointment_id)
        return None


def _with_listing(delta: Delta, listing: Delta) -> Delta:
    """Return a complete delta: the full listing, the delta's deletions, token and data.

    Data the delta carried is kept only where the listing shows the same ETag.
    """
    changed = {h: e for h, e in listing.changed.items() if h not in delta.deleted}
    return Delta(
        changed=changed,
        deleted=delta.deleted,
        token=delta.token,
        complete=True,
        data={
            h: data
            for h, data in delta.data.items()
            if h in changed and changed[h] == delta.changed.get(h)
        },
    )


def _known(record: CopyRecord | Quarantined | None, etag: str | None) -> bool:
    return bool(record and etag and record.etag == etag)


def _cancelled(appointment: Appointment) -> RemoteFields:
    return RemoteFields(
        title=appointment.title,
        start=appointment.start,
        end=appointment.end,
        timezone=appointment.timezone,
        cancelled=True,
    )


__all__ = [
    "MAX_OBJECT_BYTES",
    "BreakerPolicy",
    "CheckPolicy",
    "Decision",
    "DecisionKind",
    "PollReport",
    "Poller",
    "decide",
    "imported_id",
    "remote_fields",
]
