"""One remote calendar object read once: its events, fields and content hash (pure).

Kept apart from the decisions (``projections.inbound_decide``) so that a parsing
helper process (``adapters.cpu_pool``) imports only the calendar readers, not
the journal, the push path or the caldav library: it starts in about half the
time and holds less memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from datetime import time as dtime
from zoneinfo import ZoneInfo

from caljournal.adapters import ical_fast
from caljournal.adapters.ical import ICalendarError, calendar_hash
from caljournal.adapters.ical_parse import RemoteEvent, decode, events_of, parse_calendar
from caljournal.domain.errors import DomainError
from caljournal.domain.values import RemoteFields, remote_text, rfc3339

MAX_OBJECT_BYTES = 5_000_000


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
            "start": rfc3339(_moment(e.start, zone, floating)),
            "end": rfc3339(_moment(e.end, zone, floating)),
            "title": remote_text(e.title),
            "location": remote_text(e.location),
            "description": remote_text(e.description),
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
    # Texts in the journal's canonical form, as the API takes them: a server or
    # another client that turned CRLF into LF or dropped trailing blanks changed
    # nothing the journal holds.
    return RemoteFields(
        title=remote_text(master.title) or "",
        start=_moment(master.start, zone, floating),
        end=_moment(master.end, zone, floating),
        timezone=zone,
        location=remote_text(master.location),
        description=remote_text(master.description),
        customer_name=remote_text(master.customer_name),
        customer_email=remote_text(master.customer_email),
        calendar_uid=master.uid,
        all_day=master.all_day,
        floating=floating,
        recurrence=recurrence,
        cancelled=(master.status or "").upper() == "CANCELLED",
    )


@dataclass(frozen=True)
class Parsed:
    """One remote object read once: its events, fields and content hash, or why it is unusable."""

    events: tuple[RemoteEvent, ...] = ()
    fields: RemoteFields | None = None
    digest: str | None = None
    reason: str | None = None


def parse_object(data: bytes) -> Parsed:
    """Parse a remote object once, for :func:`decide` and for finding its owner (pure).

    Unusable data is no error here: the result carries the reason instead.
    """
    if len(data) > MAX_OBJECT_BYTES:
        return Parsed(reason="object larger than 5 MB")
    fast = ical_fast.read(data)
    if fast is not None:  # the common shape, read without icalendar's generic parser
        events, digest = fast
        return _with_fields(events, lambda: digest)
    try:
        text = decode(data)
        calendar = parse_calendar(text)
        events = tuple(events_of(calendar, text))
    except ICalendarError as exc:
        return Parsed(reason=(getattr(exc, "message", None) or str(exc))[:500])
    return _with_fields(events, lambda: calendar_hash(calendar))


def _with_fields(events: tuple[RemoteEvent, ...], digest: Callable[[], str]) -> Parsed:
    """Return the parse of an object whose events were read: its fields and ``digest()``."""
    try:
        fields = remote_fields(events)
        fields.check()
    except (ICalendarError, DomainError) as exc:
        reason = getattr(exc, "message", None) or str(exc)
        return Parsed(events, reason=reason[:500])
    except OverflowError:  # a date near year 1 or 9999 moved into its zone
        return Parsed(events, reason="a time lies too close to year 1 or 9999")
    return Parsed(events, fields, digest())


__all__ = ["MAX_OBJECT_BYTES", "Parsed", "parse_object", "remote_fields"]
