"""What one remote calendar object (or its deletion) means for the journal (pure).

``decide`` takes the object, caljournal's record of its calendar copy and the
state of the appointment it belongs to, and returns a :class:`Decision`;
``Poller`` (``projections.inbound``) performs it. Nothing here does I/O.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from caljournal.adapters.ical_parse import RemoteEvent
from caljournal.adapters.syncstate import CopyRecord
from caljournal.domain.cause import Origin
from caljournal.domain.values import RemoteFields
from caljournal.projections.inbound_parse import (
    MAX_OBJECT_BYTES,
    Parsed,
    parse_object,
    remote_fields,
)
from caljournal.projections.push import render

IMPORT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://caljournal.invalid/imported")
_IMPORT_NAMESPACE_BYTES = IMPORT_NAMESPACE.bytes
RESTORED = "restored in the calendar"


class DecisionKind(StrEnum):
    """What a remote object (or its deletion) means for the journal."""

    IMPORT = "import"  # a foreign object: a new appointment
    APPLY = "apply"  # a change made in the calendar: apply it
    ADOPT = "adopt"  # our own write whose record was lost: record it
    REINSTATE = "reinstate"  # a cancellation the calendar made, taken back there
    ECHO = "echo"  # our own write read back: only its ETag is new
    CONFLICT = "conflict"  # changed on both sides: the booking system wins
    CANCEL = "cancel"  # deleted (or cancelled) in the calendar
    FORGET = "forget"  # gone, and nothing to do in the journal
    QUARANTINE = "quarantine"  # unusable: kept aside with the reason
    REPUSH = "repush"  # a live appointment missing from the calendar: push it again


@dataclass(frozen=True)
class Decision:
    """What one remote object (or its deletion) means for the journal.

    ``sequence`` is the appointment sequence the calendar copy is recorded at,
    when the decision fixes one (``adopt``, and ``conflict`` on a restored object).
    """

    kind: DecisionKind
    href: str
    appointment_id: str | None = None
    fields: RemoteFields | None = None
    etag: str | None = None
    digest: str | None = None
    reason: str | None = None
    sequence: int | None = None


def imported_id(account_id: str, calendar_url: str, uid: str) -> str:
    """Return the appointment id of a foreign calendar object (the same on every import).

    It is ``str(uuid.uuid5(IMPORT_NAMESPACE, name))``, written out without the
    two ``UUID`` objects that costs: an import asks for it twice per object.
    """
    name = f"{account_id}|{calendar_url.rstrip('/')}|{uid}".encode()
    digest = bytearray(hashlib.sha1(_IMPORT_NAMESPACE_BYTES + name, usedforsecurity=False).digest())
    digest[6] = digest[6] & 0x0F | 0x50  # version 5
    digest[8] = digest[8] & 0x3F | 0x80  # RFC 4122 variant
    h = digest[:16].hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def decide(
    href: str,
    etag: str | None,
    data: bytes | None,
    copy: CopyRecord | None,
    appointment: dict[str, Any] | None,
    new_id: Callable[[str], str],
    past: Callable[[int], dict[str, Any] | None] | None = None,
    parsed: Parsed | None = None,
) -> Decision:
    """Decide what a remote object (``data``; None when deleted) means (pure).

    ``copy`` is caljournal's record of the calendar copy: the record of ``href``
    when it says the calendar holds that object, otherwise the record of the
    appointment the object belongs to when that record says the calendar holds
    no copy (the object was deleted and has been restored). ``appointment`` is
    the state of the appointment the object belongs to, ``new_id`` maps a
    foreign UID to an id. ``parsed`` is :func:`parse_object` of ``data`` when
    the caller has it already.
    """
    local_newer = (
        copy is not None
        and appointment is not None
        and appointment["sequence"] > copy.pushed_sequence
    )
    restored = copy is not None and not copy.present
    if data is None:
        if restored or copy is None or appointment is None or appointment["status"] == "cancelled":
            return Decision(DecisionKind.FORGET, href, copy.appointment_id if copy else None)
        if local_newer:
            return Decision(
                DecisionKind.CONFLICT, href, appointment["id"], reason="deleted in the calendar"
            )
        return Decision(DecisionKind.CANCEL, href, appointment["id"])
    if parsed is None:
        parsed = parse_object(data)
    if parsed.fields is None or parsed.digest is None:
        reason = parsed.reason or "unusable calendar object"
        return Decision(DecisionKind.QUARANTINE, href, etag=etag, reason=reason)
    events, fields, digest = parsed.events, parsed.fields, parsed.digest
    if copy is not None and not restored and digest == copy.content_hash:
        return Decision(DecisionKind.ECHO, href, copy.appointment_id, etag=etag, digest=digest)
    if copy is not None and copy.present and copy.content_hash is None and appointment is not None:
        adopted = _own_write(
            href, etag, events, fields, digest, appointment, past, copy.pushed_sequence
        )
        if adopted is not None:
            return adopted
    if copy is not None and appointment is not None:
        uncancelled = appointment["status"] == "cancelled" and not fields.cancelled
        if restored or uncancelled:
            return _back(href, etag, fields, digest, copy, appointment)
    if copy is not None:
        if local_newer:
            return Decision(DecisionKind.CONFLICT, href, copy.appointment_id, fields, etag, digest)
        return Decision(DecisionKind.APPLY, href, copy.appointment_id, fields, etag, digest)
    ours = next((e.appointment_id for e in events if e.appointment_id), None)
    if ours is not None and appointment is not None and appointment["id"] == ours:
        remote_sequence = max(e.sequence or 0 for e in events)
        sequence = int(appointment["sequence"])
        if remote_sequence <= sequence:
            # Our own write whose record was lost (a crash between the server's
            # answer and the record): adopt it; the push brings it up to date.
            # At the appointment's own SEQUENCE it is up to date only with the
            # journal's exact content: another client raises SEQUENCE too (a
            # restore from the trash), and a cancellation or change made in the
            # booking system since must still reach the calendar.
            if remote_sequence == sequence and digest != render(appointment)[1]:
                remote_sequence = sequence - 1
            return Decision(
                DecisionKind.ADOPT, href, ours, fields, etag, digest, sequence=remote_sequence
            )
        # A newer SEQUENCE: our write whose answer was lost, edited since by
        # another client. Without a record nothing tells whether a local change
        # waited when it was edited; as over a record in doubt, the booking
        # system wins (recorded as a conflict) and the push overwrites it.
        return Decision(
            DecisionKind.CONFLICT, href, ours, fields, etag, digest, sequence=sequence - 1
        )
    return Decision(
        DecisionKind.IMPORT, href, new_id(fields.calendar_uid or href), fields, etag, digest
    )


def _own_write(
    href: str,
    etag: str | None,
    events: Sequence[RemoteEvent],
    fields: RemoteFields,
    digest: str,
    appointment: dict[str, Any],
    past: Callable[[int], dict[str, Any] | None] | None,
    floor: int,
) -> Decision | None:
    """Adopt an object over a record in doubt when it is our own write, else return None.

    A record is in doubt while a write over it is under way (see
    ``SyncStateStore.doubt_copies``); after a crash the calendar may hold our
    write, whose answer was never recorded. It is ours when it carries the
    appointment's id, a SEQUENCE no newer than the appointment's, and exactly
    the content the journal showed at that SEQUENCE (``past`` returns the
    appointment's state at an older sequence; without it an older SEQUENCE
    alone counts). Anything else is someone else's edit and is decided as one:
    another client raises SEQUENCE by one, which may still be older than the
    appointment's when local changes were pushed without a write (an undo).
    Nor is an object with a SEQUENCE below ``floor``, the sequence the record
    names: every write begun since it was recorded renders a state at least
    that new, so an older SEQUENCE is another client's edit even when its
    content happens to equal an older state of the journal.
    """
    ours = {e.appointment_id for e in events}
    if ours != {appointment["id"]}:
        return None
    remote_sequence = max(e.sequence or 0 for e in events)
    sequence = int(appointment["sequence"])
    if remote_sequence > sequence or remote_sequence < floor:
        return None
    then = appointment if remote_sequence == sequence else None
    if then is None and past is not None:
        then = past(remote_sequence)
        if then is None:
            return None
    if then is not None and digest != render(then)[1]:
        return None
    return Decision(
        DecisionKind.ADOPT,
        href,
        appointment["id"],
        fields,
        etag,
        digest,
        sequence=remote_sequence,
    )


def _back(
    href: str,
    etag: str | None,
    fields: RemoteFields,
    digest: str,
    copy: CopyRecord,
    appointment: dict[str, Any],
) -> Decision:
    """Decide on an object the calendar shows again (restored, or no longer cancelled).

    A cancellation the calendar caused (a deletion or a STATUS:CANCELLED, polled)
    is the calendar's to take back, as long as nothing happened in the booking
    system since. A cancellation made in the booking system, or a local change
    not pushed yet, wins: the copy is recorded as present but behind, so the
    next push deletes or overwrites it. Never adopted: a restored object's
    SEQUENCE says nothing about whether it holds the journal's latest change
    (other clients raise it too).
    """
    appointment_id = appointment["id"]
    pushed = copy.pushed_sequence
    local_newer = appointment["sequence"] > pushed
    if appointment["status"] == "cancelled":
        calendars_own = appointment.get("cancel_origin") == Origin.CALDAV.value
        if calendars_own and not local_newer:
            if fields.cancelled:  # back, but cancelled: the calendar agrees with the journal
                return Decision(DecisionKind.APPLY, href, appointment_id, fields, etag, digest)
            return Decision(DecisionKind.REINSTATE, href, appointment_id, fields, etag, digest)
        behind = min(pushed, appointment["sequence"] - 1)
        return Decision(
            DecisionKind.CONFLICT,
            href,
            appointment_id,
            fields,
            etag,
            digest,
            RESTORED,
            sequence=behind,
        )
    if local_newer:
        return Decision(
            DecisionKind.CONFLICT,
            href,
            appointment_id,
            fields,
            etag,
            digest,
            RESTORED,
            sequence=pushed,
        )
    return Decision(DecisionKind.APPLY, href, appointment_id, fields, etag, digest)


__all__ = [
    "IMPORT_NAMESPACE",
    "MAX_OBJECT_BYTES",
    "Decision",
    "DecisionKind",
    "Parsed",
    "decide",
    "imported_id",
    "parse_object",
    "remote_fields",
]
