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

The poll's parts: this module asks the server and plans the poll;
``inbound_decider.ChunkDecider`` decides each chunk with what the journal knows
(through ``decide``); ``inbound_record.DecisionRecorder`` records the decisions,
a transaction per batch; ``inbound_parse`` reads each object once (in a helper
process for a large poll).

No server's delta is trusted alone (Xandikos, for one, never reports an object
created and deleted after the client's token): on a schedule, and after our own
writes, a poll also compares the calendar's full href → ETag listing with the
copy records (:class:`CheckPolicy`). Whatever differs goes through the same
``decide`` as a delta, and is counted in the account's status.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from caljournal.adapters.cpu_pool import INLINE, CpuPool
from caljournal.adapters.journal import Journal
from caljournal.adapters.journal_ops import apply
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
    SyncStateStore,
)
from caljournal.domain.cause import Cause
from caljournal.domain.link import CalendarLink
from caljournal.projections.inbound_decide import (
    MAX_OBJECT_BYTES,
    Decision,
    DecisionKind,
    decide,
    imported_id,
    remote_fields,
)
from caljournal.projections.inbound_decider import ChunkDecider
from caljournal.projections.inbound_record import DecisionRecorder, KnownAppointments, PollReport

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
        self._known = KnownAppointments(journal, account_id)  # anew for every poll
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
        self._known = KnownAppointments(self.journal, self.account_id)
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
        decider = ChunkDecider(
            self.journal,
            self.store,
            self.storage,
            self.pool,
            self.account_id,
            self.calendar_url,
            self._known,
            self._trips,
            self._trip_breaker,
        )
        batches = decider.decisions(
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
        recorder = DecisionRecorder(
            self.journal,
            self.store,
            self.storage,
            self.account_id,
            self.calendar_url,
            self._known,
            lambda: self._poll_cause or self.cause(),
        )
        recorder.record(batches, report, delta.token, ctag, mentioned, quarantine, checks, now_us)
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
