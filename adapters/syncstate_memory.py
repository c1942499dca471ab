"""The sync-state store in memory: dicts, for unit and property tests.

The twin of ``adapters.syncstate_sql.SQLSyncState``, held to the same contract
suite (``tests/contract/test_sync_state_store.py``). What it needs to know of
appointments (account, status, sequence, journal position) it reads from the
journal itself: it follows the notification log for the position of each
appointment's latest event and loads the appointments it is asked about. Every
question is answered by a scan (O(n)); it is meant for small test worlds.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import Any
from uuid import UUID

from caljournal.adapters.journal import Journal
from caljournal.adapters.syncstate import (
    INBOUND_FIELDS,
    STATUS_FIELDS,
    CalendarCheck,
    CopyRecord,
    InboundState,
    Lease,
    PendingPush,
    Quarantined,
    StateWrites,
    SyncStatus,
    check_fields,
)

APPOINTMENT_TOPIC = "caljournal:Appointment."


class MemorySyncState:
    """The sync state of every account, in dicts (see the module's docstring)."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self._lock = threading.RLock()
        self._copies: dict[str, CopyRecord] = {}
        self._inbound: dict[str, InboundState] = {}
        self._checks: dict[str, CalendarCheck] = {}
        self._quarantine: dict[str, dict[str, Quarantined]] = {}
        self._leases: dict[str, Lease] = {}
        self._workers: dict[str, int] = {}
        self._status: dict[str, SyncStatus] = {}
        self._positions: dict[str, int] = {}
        self._states: dict[str, tuple[int, dict[str, Any]]] = {}
        self._read_to = 0

    # -- appointments, as the journal has them -----------------------------------

    def _appointments(self) -> list[tuple[int, dict[str, Any]]]:
        """Return (position, state) of every appointment, following the journal's log."""
        recorder = self.journal.recorder
        while True:
            batch = recorder.select_notifications(
                start=self._read_to, limit=500, inclusive_of_start=False
            )
            if not batch:
                break
            for notification in batch:
                if notification.topic.startswith(APPOINTMENT_TOPIC):
                    self._positions[str(notification.originator_id)] = notification.id
            self._read_to = batch[-1].id
        found = []
        for appointment_id, position in self._positions.items():
            cached = self._states.get(appointment_id)
            if cached is None or cached[0] != position:
                state: dict[str, Any] = self.journal.repository.get(UUID(appointment_id)).state()
                cached = (position, state)
                self._states[appointment_id] = cached
            found.append(cached)
        return found

    # -- copies -----------------------------------------------------------------

    def pending_pushes(
        self, account_id: str, calendar_url: str, after_position: int, limit: int
    ) -> list[PendingPush]:
        """Return appointments whose calendar copy is missing or behind (see the port)."""
        with self._lock:
            found = []
            for position, state in sorted(self._appointments(), key=lambda p: p[0]):
                if state["account_id"] != account_id or position <= after_position:
                    continue
                copy = self._copies.get(state["id"])
                if copy is not None and copy.calendar_url != calendar_url:
                    copy = None
                if copy is None:
                    wanted = state["status"] == "booked"
                else:
                    wanted = state["sequence"] > copy.pushed_sequence and (
                        copy.failed_sequence is None or copy.failed_sequence < state["sequence"]
                    )
                if wanted:
                    found.append(PendingPush(dict(state), copy, position))
            return found[:limit]

    def count_pending(self, account_id: str, calendar_url: str, after_position: int) -> int:
        """Return how many appointments wait for a push."""
        return len(self.pending_pushes(account_id, calendar_url, after_position, 1_000_000))

    def record_copies(self, records: Sequence[CopyRecord]) -> None:
        """Record calendar copies; note caljournal's write per account."""
        with self._lock:
            for record in records:
                self._copies[record.appointment_id] = record
                check = self._checks.get(record.account_id) or CalendarCheck(record.account_id)
                written = max(check.written_us or 0, record.updated_us)
                self._checks[record.account_id] = replace(check, written_us=written)

    def doubt_copies(self, appointment_ids: Sequence[str]) -> None:
        """Mark the present copies of these appointments in doubt (see the port)."""
        with self._lock:
            for appointment_id in appointment_ids:
                copy = self._copies.get(appointment_id)
                if copy is not None and copy.present:
                    self._copies[appointment_id] = replace(copy, content_hash=None)

    def copy_of(self, appointment_id: str) -> CopyRecord | None:
        """Return the calendar-copy record of an appointment."""
        with self._lock:
            return self._copies.get(appointment_id)

    def copies(self, account_id: str) -> list[CopyRecord]:
        """Return every calendar-copy record of an account, by appointment id."""
        with self._lock:
            return sorted(
                (c for c in self._copies.values() if c.account_id == account_id),
                key=lambda c: c.appointment_id,
            )

    def copies_by_href(
        self, account_id: str, calendar_url: str, hrefs: set[str] | None = None
    ) -> dict[str, CopyRecord]:
        """Return the account's present copies on ``calendar_url`` by href (only ``hrefs``)."""
        return {
            c.href: c
            for c in self.copies(account_id)
            if c.calendar_url == calendar_url and c.present and (hrefs is None or c.href in hrefs)
        }

    def count_copies(self, account_id: str) -> int:
        """Return how many of an account's appointments are on its calendar now."""
        return sum(1 for c in self.copies(account_id) if c.present)

    def failed_copies(self, account_id: str) -> list[CopyRecord]:
        """Return the copies whose last push failed for good, oldest first."""
        failed = [c for c in self.copies(account_id) if c.failed_sequence is not None]
        return sorted(failed, key=lambda c: (c.updated_us, c.appointment_id))

    def clear_failure(self, appointment_id: str) -> None:
        """Forget a failure so the next pass pushes the appointment again."""
        with self._lock:
            copy = self._copies.get(appointment_id)
            if copy is not None:
                self._copies[appointment_id] = replace(copy, failed_sequence=None, failure=None)

    def absent_live_copies(self, account_id: str, calendar_url: str) -> list[CopyRecord]:
        """Return records of booked appointments absent from the calendar, no push pending."""
        with self._lock:
            states = {state["id"]: state for _, state in self._appointments()}
            return [
                c
                for c in self.copies(account_id)
                if c.calendar_url == calendar_url
                and not c.present
                and c.failed_sequence is None
                and c.appointment_id in states
                and states[c.appointment_id]["status"] == "booked"
                and states[c.appointment_id]["sequence"] <= c.pushed_sequence
            ]

    # -- inbound ----------------------------------------------------------------

    def inbound_state(self, account_id: str) -> InboundState:
        """Return where the account's inbound poll stands."""
        with self._lock:
            return self._inbound.get(account_id) or InboundState(account_id)

    def update_inbound(self, account_id: str, **values: Any) -> None:
        """Set some inbound fields.

        :raises ValueError: for a name :class:`InboundState` does not have.
        """
        check_fields(values, INBOUND_FIELDS, "the inbound state")
        if "confirm_deletes" in values:
            values["confirm_deletes"] = bool(values["confirm_deletes"])
        with self._lock:
            self._inbound[account_id] = replace(self.inbound_state(account_id), **values)

    def calendar_check(self, account_id: str) -> CalendarCheck:
        """Return the full comparisons of the account's calendar and what they found."""
        with self._lock:
            return self._checks.get(account_id) or CalendarCheck(account_id)

    def quarantined(self, account_id: str) -> dict[str, Quarantined]:
        """Return the account's quarantined remote objects by href, oldest first."""
        with self._lock:
            held = self._quarantine.get(account_id, {})
            return {q.href: q for q in sorted(held.values(), key=lambda q: (q.at_us, q.href))}

    def commit(self, aggregates: Sequence[Any], writes: StateWrites) -> None:
        """Save the aggregates, then apply the poll's writes (nothing when the save fails)."""
        if writes.inbound is not None:
            check_fields(writes.inbound, INBOUND_FIELDS, "the inbound state")
        with self._lock:
            self.journal.save(*aggregates)
            held = self._quarantine.setdefault(writes.account_id, {})
            for href in writes.released:
                held.pop(href, None)
            for q in writes.quarantine:
                self._quarantine.setdefault(q.account_id, {})[q.href] = q
            for copy in writes.copies:
                self._copies[copy.appointment_id] = copy
            if writes.inbound is not None:
                self.update_inbound(writes.account_id, **writes.inbound)
            if writes.check is not None:
                before = self.calendar_check(writes.check.account_id)
                self._checks[writes.check.account_id] = replace(
                    writes.check, written_us=before.written_us
                )

    # -- leases and workers -----------------------------------------------------

    def claim_lease(self, account_id: str, owner: str, now_us: int, ttl_us: int) -> bool:
        """Take or renew the lease on an account; return whether ``owner`` holds it."""
        with self._lock:
            lease = self._leases.get(account_id)
            if lease is None or lease.owner == owner or lease.expires_us < now_us:
                self._leases[account_id] = Lease(account_id, owner, now_us + ttl_us)
                return True
            return False

    def claim_leases(
        self, account_ids: Sequence[str], owner: str, now_us: int, ttl_us: int
    ) -> set[str]:
        """Take or renew the leases on many accounts at once; return those ``owner`` holds now."""
        with self._lock:
            held = set()
            for account_id in account_ids:
                lease = self._leases.get(account_id)
                if lease is None or lease.owner == owner or lease.expires_us < now_us:
                    self._leases[account_id] = Lease(account_id, owner, now_us + ttl_us)
                    held.add(account_id)
            return held

    def renew_leases(self, owner: str, now_us: int, ttl_us: int) -> None:
        """Extend every lease ``owner`` holds to ``now_us + ttl_us``."""
        with self._lock:
            for account_id, lease in self._leases.items():
                if lease.owner == owner:
                    self._leases[account_id] = Lease(account_id, owner, now_us + ttl_us)

    def release_lease(self, account_id: str, owner: str) -> None:
        """Give up the lease on an account (if ``owner`` holds it)."""
        with self._lock:
            lease = self._leases.get(account_id)
            if lease is not None and lease.owner == owner:
                del self._leases[account_id]

    def leases(self) -> dict[str, Lease]:
        """Return every lease by account id."""
        with self._lock:
            return dict(self._leases)

    def heartbeat(self, owner: str, now_us: int, ttl_us: int) -> int:
        """Record that ``owner`` is alive; return how many workers are alive now (at least 1)."""
        with self._lock:
            self._workers[owner] = now_us + ttl_us
            self._workers = {o: t for o, t in self._workers.items() if t >= now_us}
            return max(len(self._workers), 1)

    def retire(self, owner: str) -> None:
        """Remove a stopping worker from the live workers."""
        with self._lock:
            self._workers.pop(owner, None)

    # -- status -----------------------------------------------------------------

    def update_sync_status(self, account_id: str, **values: Any) -> None:
        """Set some :class:`SyncStatus` fields.

        :raises ValueError: for a name :class:`SyncStatus` does not have.
        """
        check_fields(values, STATUS_FIELDS, "the sync status")
        with self._lock:
            self._status[account_id] = replace(self.sync_status(account_id), **values)

    def sync_status(self, account_id: str) -> SyncStatus:
        """Return an account's outbound progress and last error."""
        with self._lock:
            return self._status.get(account_id) or SyncStatus(account_id)


__all__ = ["MemorySyncState"]
