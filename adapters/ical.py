"""Map appointments to iCalendar and back: the one place both sync directions use.

Outbound, :func:`to_ical` turns an :class:`AppointmentView` into a calendar
object whose bytes depend only on the view and the injected DTSTAMP, so the
same appointment always yields the same bytes. Inbound, :func:`from_ical`
reads objects written by any client into :class:`RemoteEvent` values, and
:func:`content_hash` tells whether a remote object still holds what was
written even after a server reformatted it.

Times are written as local wall time with the appointment's IANA TZID plus a
VTIMEZONE generated from zoneinfo; appointments in "UTC" use the ``Z`` form.
iCalendar cannot say which of two equal wall times in a DST fall-back hour is
meant (a reader takes the first), so a time in the repeated hour is written in
UTC, and ``X-CALJOURNAL-TIMEZONE`` names the zone for :func:`from_ical`. (Not
``X-WR-TIMEZONE``: readers that apply it turn UTC back into the ambiguous wall
time and land an hour early.)

Seconds are the finest unit iCalendar keeps; microseconds are dropped. TEXT
cannot carry CR or other control characters: CR and CRLF become LF and the
rest (except TAB) are dropped.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import lru_cache
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import icalendar
from icalendar.prop import vText

from caljournal.adapters.ical_parse import (
    BLOCK_SEPARATOR,
    OWN_X,
    UID_SUFFIX,
    X_APPOINTMENT_ID,
    X_CUSTOMER_EMAIL,
    X_CUSTOMER_NAME,
    X_TIMEZONE,
    ICalendarError,
    RemoteEvent,
    customer_block,
    decode,
    from_ical,
    parse_calendar,
    unescape_text,
)

__all__ = [
    "PRODID",
    "AppointmentView",
    "ICalendarError",
    "RemoteEvent",
    "content_hash",
    "from_ical",
    "object_name",
    "to_ical",
    "vtimezone",
]

PRODID = "-//caljournal//caljournal//EN"
_STATUS = {"booked": "CONFIRMED", "cancelled": "CANCELLED"}
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# Content hashing: what servers add or rewrite without changing the appointment.
_VOLATILE = frozenset({"DTSTAMP", "LAST-MODIFIED", "CREATED", "SEQUENCE", "PRODID"})
_DEFAULTS = frozenset({("TRANSP", "OPAQUE"), ("CLASS", "PUBLIC")})
_ENUM_PROPS = frozenset({"STATUS", "TRANSP", "CLASS"})
_ENUM_PARAMS = frozenset(
    {"CUTYPE", "ENCODING", "FBTYPE", "PARTSTAT", "RANGE", "RELATED", "RELTYPE", "ROLE", "RSVP"}
)


def _zone(name: str) -> ZoneInfo:
    """Return the IANA zone ``name``.

    :raises ValueError: when there is no such zone.
    """
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError, OSError):
        raise ValueError(f"unknown time zone {name!r}") from None


@dataclass(frozen=True)
class AppointmentView:
    """What a calendar shows of an appointment; ``start``/``end`` are in ``timezone``."""

    appointment_id: str
    uid: str
    title: str
    start: datetime
    end: datetime
    timezone: str
    location: str | None
    description: str | None
    customer_name: str | None
    customer_email: str | None
    sequence: int
    status: str

    def __post_init__(self) -> None:
        """Check the fields that the mapping relies on.

        :raises ValueError: when a time is naive, the zone or status is unknown or
            the sequence is negative.
        """
        for name in ("start", "end"):
            value = getattr(self, name)
            if not isinstance(value, datetime) or value.utcoffset() is None:
                raise ValueError(f"{name} must be an aware datetime, got {value!r}")
        if self.status not in _STATUS:
            raise ValueError(f"status must be one of {sorted(_STATUS)}, got {self.status!r}")
        _zone(self.timezone)
        if self.sequence < 0:
            raise ValueError(f"sequence must not be negative, got {self.sequence}")

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> AppointmentView:
        """Build the view from ``Appointment.state()``.

        The uid is ``"<id>@caljournal"``. SEQUENCE is the state's content
        ``sequence`` (0 when booked, raised by each change a calendar shows); a
        state without one uses ``version - 1``. Either way the first push carries
        SEQUENCE:0.

        :raises ValueError: when a time lacks an offset, the zone is unknown, or the
            version or status is unusable.
        :raises KeyError: when a field is missing.
        """
        zone = _zone(state["timezone"])
        times = []
        for name in ("start", "end"):
            value = state[name]
            value = datetime.fromisoformat(value) if isinstance(value, str) else value
            if not isinstance(value, datetime) or value.utcoffset() is None:
                raise ValueError(f"{name} must carry a UTC offset, got {state[name]!r}")
            times.append(value.astimezone(zone))
        return cls(
            appointment_id=str(state["id"]),
            uid=f"{state['id']}{UID_SUFFIX}",
            title=state["title"],
            start=times[0],
            end=times[1],
            timezone=state["timezone"],
            location=state.get("location"),
            description=state.get("description"),
            customer_name=state.get("customer_name"),
            customer_email=state.get("customer_email"),
            sequence=int(state["sequence"]) if "sequence" in state else int(state["version"]) - 1,
            status=state["status"],
        )


def clean_text(value: str) -> str:
    """Return ``value`` as iCalendar TEXT can carry it: line breaks as LF, no C0 controls."""
    return _CONTROL.sub("", value.replace("\r\n", "\n").replace("\r", "\n"))


def escape_text(value: str) -> str:
    r"""Escape ``value`` per RFC 5545 TEXT rules (a literal ``\N`` stays as it is)."""
    return value.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,").replace("\n", "\\n")


def compose_description(description: str | None, name: str | None, email: str | None) -> str | None:
    """Return the description with the customer block appended after a blank line."""
    block = customer_block(name, email)
    if block is None:
        return description
    return block if description is None else description + BLOCK_SEPARATOR + block


class _Text(vText):
    r"""TEXT that keeps a literal ``\N``; icalendar 7 would write it as a line break."""

    __slots__ = ()

    def to_ical(self) -> bytes:
        """Return the value escaped per RFC 5545."""
        return escape_text(str(self)).encode("utf-8")


class _VTimezone(icalendar.Timezone):
    """VTIMEZONE whose transition search steps by days.

    icalendar starts its search with 64-day steps and so misses offset periods
    shorter than that (Recife's one-week DST in October 2000, Cairo's pause for
    Ramadan in 2010); a shortest step of one day finds them.
    """

    _from_tzinfo_skip_search = [
        timedelta(days=1),
        timedelta(hours=4),
        timedelta(hours=1),
        timedelta(minutes=20),
        timedelta(minutes=5),
        timedelta(minutes=1),
        timedelta(seconds=20),
        timedelta(seconds=5),
        timedelta(seconds=1),
    ]


class _Until(tzinfo):
    """``zone`` up to the wall time ``last``; asking for a later offset raises OverflowError.

    icalendar's search runs on until the offset changes, in a zone without DST up
    to the year 9999; OverflowError is where it stops searching.
    """

    def __init__(self, zone: ZoneInfo, last: datetime) -> None:
        self.zone = zone
        self.last = last

    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        """Return the zone's offset at ``dt``.

        :raises OverflowError: when ``dt`` is after the window.
        """
        if dt is not None and dt.replace(tzinfo=None) > self.last:
            raise OverflowError("after the window of the VTIMEZONE")
        return self.zone.utcoffset(dt)

    def dst(self, dt: datetime | None) -> timedelta | None:
        """Return the zone's DST offset at ``dt``."""
        return self.zone.dst(dt)

    def tzname(self, dt: datetime | None) -> str | None:
        """Return the zone's abbreviation at ``dt``."""
        return self.zone.tzname(dt)


@lru_cache(maxsize=256)
def vtimezone(name: str, first_year: int, last_year: int) -> icalendar.Timezone:
    """Return the VTIMEZONE of IANA zone ``name`` for the years ``first_year``–``last_year``.

    The component is cached and shared: add it to calendars, never change it.

    :raises ValueError: when icalendar cannot build the component for the zone.
    """
    last = date(last_year + 1, 1, 1) if last_year < 9999 else date(9999, 12, 30)
    bounded = _Until(ZoneInfo(name), datetime.combine(last, time()) + timedelta(days=1))
    return _VTimezone.from_tzinfo(bounded, name, date(first_year, 1, 1), last)


def object_name(appointment_id: str | UUID) -> str:
    """Return the calendar object's resource name, ``"<appointment_id>.ics"``.

    :raises ValueError: when the id is not a UUID (the name must be a safe path segment).
    """
    return f"{UUID(str(appointment_id))}.ics"


def _repeated(value: datetime) -> bool:
    """Tell whether ``value`` is the second of two equal wall times (DST fall-back)."""
    return value.fold == 1 and value.replace(fold=0).utcoffset() != value.utcoffset()


def _text(event: icalendar.Component, name: str, value: str | None) -> None:
    """Add TEXT property ``name`` to ``event`` unless ``value`` is None."""
    if value is not None:
        event.add(name, _Text(clean_text(value)))


def to_ical(view: AppointmentView, dtstamp: datetime) -> bytes:
    """Return the calendar object for ``view``: a VCALENDAR with one VEVENT.

    The output is byte-identical for equal inputs; the clock is never read.

    :raises ValueError: when ``dtstamp`` is naive or the zone is unknown.
    """
    if dtstamp.utcoffset() is None:
        raise ValueError("dtstamp must be an aware datetime")
    zone = _zone(view.timezone)
    start = view.start.astimezone(zone).replace(microsecond=0)
    end = view.end.astimezone(zone).replace(microsecond=0)
    calendar = icalendar.Calendar()
    calendar.add("PRODID", PRODID)
    calendar.add("VERSION", "2.0")
    calendar.add("CALSCALE", "GREGORIAN")
    event = icalendar.Event()
    event.add("UID", _Text(view.uid))
    event.add("DTSTAMP", dtstamp.astimezone(UTC).replace(microsecond=0))
    # Both times in UTC when either is in a repeated hour: readers that subtract a
    # UTC DTEND from a zoned DTSTART and add the difference on the wall clock
    # (recurring_ical_events does) would otherwise be an hour off.
    zoned = view.timezone != "UTC" and not (_repeated(start) or _repeated(end))
    for name, value in (("DTSTART", start), ("DTEND", end)):
        if zoned:
            event.add(name, value.replace(tzinfo=None), parameters={"TZID": view.timezone})
        else:
            event.add(name, value.astimezone(UTC))
    if view.timezone != "UTC" and not zoned:
        event.add(X_TIMEZONE, _Text(view.timezone))
    _text(event, "SUMMARY", view.title)
    _text(event, "LOCATION", view.location)
    customer = clean_text(view.customer_name) if view.customer_name is not None else None
    email = clean_text(view.customer_email) if view.customer_email is not None else None
    description = clean_text(view.description) if view.description is not None else None
    _text(event, "DESCRIPTION", compose_description(description, customer, email))
    _text(event, X_CUSTOMER_NAME, customer)
    _text(event, X_CUSTOMER_EMAIL, email)
    _text(event, X_APPOINTMENT_ID, view.appointment_id)
    event.add("SEQUENCE", view.sequence)
    event.add("STATUS", _STATUS[view.status])
    if zoned:
        calendar.add_component(vtimezone(view.timezone, start.year, end.year))
    calendar.add_component(event)
    return calendar.to_ical()


def _canonical(name: str, value: Any) -> str | None:
    """Return one property as a canonical string, or None when it carries no content."""
    if name.startswith("X-") and name not in OWN_X:
        return None
    if isinstance(value, vText):
        text = str(value)
    elif name in OWN_X:
        text = unescape_text(str(value))
    else:
        text = value.to_ical().decode("utf-8") if hasattr(value, "to_ical") else str(value)
    if name in _ENUM_PROPS:
        text = text.strip().upper()
    if (name, text) in _DEFAULTS:
        return None
    params = []
    for key, param in sorted(getattr(value, "params", {}).items()):
        if key.upper() == "VALUE":
            continue
        param = ",".join(param) if isinstance(param, list) else str(param)
        if key.upper() in _ENUM_PARAMS:
            param = param.upper()
        elif key.upper() == "LANGUAGE":
            param = param.lower()
        params.append([key.upper(), param])
    return json.dumps([name, params, text], ensure_ascii=False)


def content_hash(data: bytes | str) -> str:
    """Return a sha256 hex digest of the appointment content of a calendar object.

    Only VEVENT properties count. Ignored: folding, property and parameter order,
    parameter-name case, DTSTAMP, LAST-MODIFIED, CREATED, SEQUENCE, PRODID, foreign
    ``X-`` properties, VTIMEZONE and VALARM components, and TRANSP:OPAQUE /
    CLASS:PUBLIC (RFC defaults that some servers spell out).

    :raises ICalendarError: when the data is not one parseable VCALENDAR.
    """
    events = []
    for event in parse_calendar(decode(data)).walk("VEVENT"):
        lines = []
        for name, values in event.items():
            for value in values if isinstance(values, list) else [values]:
                if name.upper() not in _VOLATILE:
                    line = _canonical(name.upper(), value)
                    if line is not None:
                        lines.append(line)
        events.append(sorted(lines))
    canonical = json.dumps(sorted(events), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
