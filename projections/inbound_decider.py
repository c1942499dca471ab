"""Decide what a poll's objects mean, chunk by chunk, with what the journal knows of them.

``decide`` (``projections.inbound_decide``) is pure; :class:`ChunkDecider`
gathers what it needs for each chunk of fetched objects (``projections.
inbound_chunks``): the copy records, the states of the appointments involved
(looked up once per poll, ``KnownAppointments``), each object's owner by
appointment id or UID, the UIDs already seen in this poll. Deletions are
decided last, once every object is, and only if they do not trip the breaker.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

from caljournal.adapters.cpu_pool import CpuPool
from caljournal.adapters.journal import Journal
from caljournal.adapters.journal_ops import state_at_sequence
from caljournal.adapters.storage import CalendarStorage
from caljournal.adapters.syncstate import CopyRecord, Quarantined, SyncStateStore
from caljournal.projections.inbound_chunks import fetch_chunks
from caljournal.projections.inbound_decide import Decision, DecisionKind, decide, imported_id
from caljournal.projections.inbound_parse import Parsed
from caljournal.projections.inbound_record import KnownAppointments, PollReport


class ChunkDecider:
    """Decides one poll's objects for an account's calendar (see the module's text).

    ``trips`` says whether so many cancellations trip the breaker; ``pause``
    trips it with the reason.
    """

    def __init__(
        self,
        journal: Journal,
        store: SyncStateStore,
        storage: CalendarStorage,
        pool: CpuPool,
        account_id: str,
        calendar_url: str,
        known: KnownAppointments,
        trips: Callable[[int, int, bool], bool],
        pause: Callable[[str], None],
    ) -> None:
        self.journal = journal
        self.store = store
        self.storage = storage
        self.pool = pool
        self.account_id = account_id
        self.calendar_url = calendar_url
        self.known = known
        self.trips = trips
        self.pause = pause

    def decisions(
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
        if self.trips(cancels, live, confirmed):
            reason = (
                f"one poll would cancel {cancels} of {live} appointments; nothing was "
                "cancelled — confirm with 'caljournal link resume ACCOUNT --confirm-deletes'"
            )
            self.pause(reason)
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
        states = self.known.states(involved)
        # By UID, once per chunk: the owner and the decision both ask.
        import_id = functools.cache(partial(imported_id, self.account_id, self.calendar_url))

        owners = {
            href: self._owner_id(parsed[href], import_id)
            for href in objects
            if copies.get(href) is None
        }
        self.known.look_up({o for o in owners.values() if o} - set(states), states)
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
        states = self.known.states(involved)
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
            states.update(self.known.states({owner}))
        state = states.get(owner)
        if state is None:
            return None, None
        record = self.store.copy_of(owner)
        if record and record.calendar_url == self.calendar_url and not record.present:
            return record, state
        return None, state

    def _past(self, appointment: dict[str, Any] | None) -> Callable[[int], dict[str, Any] | None]:
        """Return how to look up the appointment's state at an older sequence (read on demand)."""

        def at(sequence: int) -> dict[str, Any] | None:
            if appointment is None:
                return None
            return state_at_sequence(self.journal, uuid.UUID(appointment["id"]), sequence)

        return at
