"""Read remote iCalendar objects: the inbound half of :mod:`caljournal.adapters.ical`.

Import the public names from :mod:`caljournal.adapters.ical`; this module only
keeps that one under its size budget. It also holds what both directions
share: the error type, the ``X-`` property names and the customer block.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from functools import lru_cache
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import icalendar
from icalendar.prop import vText

from caljournal.domain.values import known_zones

try:  # CLDR's Windows → IANA table, shipped with icalendar ≥ 6
    from icalendar.timezone.windows_to_olson import WINDOWS_TO_OLSON
except ImportError:  # pragma: no cover - older icalendar
    WINDOWS_TO_OLSON = {}

MAX_DESCRIPTION_CHARS = 1_000_000
X_APPOINTMENT_ID = "X-CALJOURNAL-APPOINTMENT-ID"
X_CUSTOMER_NAME = "X-CALJOURNAL-CUSTOMER-NAME"
X_CUSTOMER_EMAIL = "X-CALJOURNAL-CUSTOMER-EMAIL"
X_TIMEZONE = "X-CALJOURNAL-TIMEZONE"
UID_SUFFIX = "@caljournal"
BLOCK_SEPARATOR = "\n\n"

OWN_X = frozenset({X_APPOINTMENT_ID, X_CUSTOMER_NAME, X_CUSTOMER_EMAIL, X_TIMEZONE})
_ESCAPED = re.compile(r"\\([\\;,nN])")
_UNFOLD = re.compile(r"\r?\n[ \t]")
_NEWLINE = re.compile(r"\r?\n")
_BLOCK = re.compile(r"(?:\A|\n\n)Customer: (?P<body>[^\n]*)\Z")
_BLOCK_BODY = re.compile(r"(?P<name>.*?)\s*<(?P<email>[^<>\s]*)>")
_CHECKED = ("DTSTART", "DTEND", "DURATION", "RECURRENCE-ID", "SEQUENCE", "RRULE", "RDATE", "EXDATE")
#: Properties a VEVENT may hold once (RFC 5545 §3.6.1) that caljournal reads.
_SINGLE = ("DTSTART", "DTEND", "DURATION", "RECURRENCE-ID", "SEQUENCE")
_RAW = ("RRULE", "RDATE", "EXDATE", "DURATION", "RECURRENCE-ID")
_DURATION = re.compile(
    r"P(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?"
    r"(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+)S)?)?"
)


class ICalendarError(ValueError):
    """Raised when iCalendar data cannot be read or mapped; the message says why."""


@dataclass(frozen=True)
class RemoteEvent:
    """One VEVENT of a remote calendar object, as plain values.

    ``start``/``end`` are dates when ``all_day``; naive datetimes when ``floating``;
    otherwise aware datetimes, both in the zone named by ``timezone``. ``timezone``
    is an IANA name ("UTC" for UTC times), ``None`` when the object defines its own
    zone under a non-IANA TZID (the datetimes then carry that VTIMEZONE's rules),
    and the calendar's ``X-WR-TIMEZONE`` hint (or ``None``) for all-day and
    floating events. Without DTEND, ``end`` is ``start`` + DURATION, else one day
    later for dates and equal to ``start`` (zero length, as RFC 5545 says) for
    datetimes. ``rrule``/``rdate``/``exdate`` are the unfolded content lines exactly
    as the producer wrote them, e.g. ``"EXDATE;TZID=Europe/Berlin:20260410T100000"``;
    ``recurrence_id_line`` is the RECURRENCE-ID line kept the same way (None without one).
    """

    uid: str
    title: str | None
    start: date | datetime
    end: date | datetime
    timezone: str | None
    location: str | None
    description: str | None
    customer_name: str | None
    customer_email: str | None
    all_day: bool
    floating: bool
    rrule: tuple[str, ...]
    rdate: tuple[str, ...]
    exdate: tuple[str, ...]
    recurrence_id: date | datetime | None
    status: str | None
    sequence: int
    appointment_id: str | None
    recurrence_id_line: str | None = None


# -- text ---------------------------------------------------------------------------


def unescape_text(value: str) -> str:
    """Undo RFC 5545 TEXT escaping of a value icalendar kept verbatim (``X-`` props)."""
    return _ESCAPED.sub(lambda m: "\n" if m[1] in "nN" else m[1], value)


def customer_block(name: str | None, email: str | None) -> str | None:
    """Return the line naming the customer in the description, or None without one."""
    if name and email:
        return f"Customer: {name} <{email}>"
    if name:
        return f"Customer: {name}"
    return f"Customer: <{email}>" if email else None


def _split_description(
    text: str | None, name: str | None, email: str | None, props_lost: bool
) -> tuple[str | None, str | None, str | None]:
    """Return (description, customer name, customer email) with the block stripped.

    With our X- properties the block is known exactly; a remotely edited one is
    still stripped when it is the last line. Without them (``props_lost``) a final
    "Customer: …" line is taken as the block and read back.
    """
    if text is None:
        return None, name, email
    block = customer_block(name, email)
    if block is not None:
        if text == block:
            return None, name, email
        if text.endswith(BLOCK_SEPARATOR + block):
            return text[: -len(BLOCK_SEPARATOR + block)], name, email
    found = _BLOCK.search(text) if props_lost or block is not None else None
    if found is None:
        return text, name, email
    if name is None and email is None:
        body = _BLOCK_BODY.fullmatch(found["body"])
        name, email = (body["name"], body["email"]) if body else (found["body"], None)
        name, email = name or None, email or None
    return (text[: found.start()] if found.start() else None), name, email


# -- time zones ---------------------------------------------------------------------


@lru_cache(maxsize=1)
def _zones() -> dict[str, str]:
    """Return the IANA zone names keyed by their lower-case form.

    Without ``localtime`` and the like: a calendar object's TZID must not mean
    whatever zone this machine is set to.
    """
    return {name.lower(): name for name in known_zones()}


def iana_name(tzid: str) -> str | None:
    """Return the IANA zone a TZID means (IANA, Windows or '/vendor/Area/City'), or None."""
    zones = _zones()
    cleaned = tzid.strip().strip("/")
    found = zones.get(cleaned.lower()) or zones.get(WINDOWS_TO_OLSON.get(cleaned, "").lower())
    if found is None and tzid.strip().startswith("/"):
        parts = cleaned.split("/")
        found = next(
            (zones[c] for i in range(1, len(parts)) if (c := "/".join(parts[i:]).lower()) in zones),
            None,
        )
    return found


# -- parsing --------------------------------------------------------------------------


def decode(data: bytes | str) -> str:
    """Return ``data`` as text.

    :raises ICalendarError: when the data is neither str nor UTF-8 bytes.
    """
    try:
        text = data.decode("utf-8-sig") if isinstance(data, bytes) else data
    except UnicodeDecodeError as exc:
        raise ICalendarError(f"iCalendar data is not UTF-8: {exc}") from None
    if not isinstance(text, str):
        raise ICalendarError(f"iCalendar data must be bytes or str, not {type(data).__name__}")
    return text


def parse_calendar(text: str) -> icalendar.Calendar:
    """Return the VCALENDAR in ``text``.

    :raises ICalendarError: when the text is not one parseable VCALENDAR.
    """
    try:
        calendar = icalendar.Calendar.from_ical(text)
    except Exception as exc:  # the parser raises ValueError, KeyError, AssertionError …
        raise ICalendarError(f"unparseable iCalendar data: {exc}") from None
    if calendar.name != "VCALENDAR":
        raise ICalendarError(f"expected a VCALENDAR object, found {calendar.name}")
    return calendar


def _raw_lines(text: str) -> list[dict[str, list[str]]]:
    """Return the RRULE, RDATE, EXDATE, DURATION, RECURRENCE-ID lines of each VEVENT, in order."""
    found: list[dict[str, list[str]]] = []
    stack: list[str] = []
    for line in _NEWLINE.split(_UNFOLD.sub("", text)):
        name = re.split(r"[;:]", line, maxsplit=1)[0].strip().upper()
        value = line.partition(":")[2].strip().upper()
        if name == "BEGIN":
            stack.append(value)
            if value == "VEVENT":
                found.append({key: [] for key in _RAW})
        elif name == "END" and stack:
            stack.pop()
        elif name in _RAW and stack and stack[-1] == "VEVENT" and found:
            found[-1][name].append(line)
    return found


def _text(component: icalendar.Component, name: str) -> str | None:
    """Return the (first) value of TEXT property ``name``, unescaped, or None."""
    value = component.get(name)
    if isinstance(value, list):
        value = value[0] if value else None
    if value is None:
        return None
    return str(value) if isinstance(value, vText) else unescape_text(str(value))


def _time(
    component: icalendar.Component, name: str, uid: str, vtimezones: dict[str, icalendar.Timezone]
) -> tuple[date | datetime, str | None]:
    """Return the value of a DATE/DATE-TIME property and the IANA name of its zone.

    :raises ICalendarError: when the TZID is neither known nor defined by a VTIMEZONE.
    """
    prop: Any = component[name]  # a vDDDTypes; icalendar types it as any property
    value = prop.dt
    if not isinstance(value, datetime):
        return value, None
    tzid = prop.params.get("TZID")
    if tzid is None:
        return (value, None) if value.tzinfo is None else (value.astimezone(UTC), "UTC")
    wall = value.replace(tzinfo=None)
    zone = iana_name(str(tzid))
    if zone is not None:
        return wall.replace(tzinfo=ZoneInfo(zone)), zone
    if tzid in vtimezones:
        try:  # this object's own definition; icalendar's process-wide cache may hold another
            own: tzinfo = vtimezones[tzid].to_tz(lookup_tzid=False)
        except Exception as exc:  # any failure means an unusable VTIMEZONE
            raise ICalendarError(f"VTIMEZONE {tzid!r} is unusable: {exc}") from None
        return wall.replace(tzinfo=own), None
    raise ICalendarError(
        f"unknown TZID {tzid!r} on {name} of event {uid!r}: not an IANA or Windows zone "
        "name, and no VTIMEZONE in the object defines it"
    )


def _plus(start: date | datetime, duration: timedelta, raw: list[str]) -> date | datetime:
    """Return ``start`` + DURATION: days and weeks on the wall clock, the rest exactly.

    icalendar folds PT24H into one day, so the written value decides when it is there.
    """
    days, rest = duration.days, duration - timedelta(days=duration.days)
    found = _DURATION.fullmatch(raw[0].partition(":")[2].strip().upper()) if raw else None
    if found is not None:
        days = int(found["w"] or 0) * 7 + int(found["d"] or 0)
        rest = timedelta(
            hours=int(found["h"] or 0), minutes=int(found["m"] or 0), seconds=int(found["s"] or 0)
        )
    if not isinstance(start, datetime):
        return start + timedelta(days=days)
    nominal = start + timedelta(days=days)
    if start.tzinfo is None:
        return nominal + rest
    return (nominal.astimezone(UTC) + rest).astimezone(start.tzinfo)


def _instant(value: date | datetime) -> date | datetime:
    """Return an aware datetime in UTC (for comparing instants), anything else as it is."""
    return value.astimezone(UTC) if isinstance(value, datetime) and value.tzinfo else value


def _period(
    event: icalendar.Component,
    uid: str,
    vtimezones: dict[str, icalendar.Timezone],
    hint: str | None,
    raw_duration: list[str],
) -> tuple[date | datetime, date | datetime, str | None]:
    """Return start, end and zone name of ``event``.

    :raises ICalendarError: when DTSTART is missing, kinds mix or the event ends early.
    """
    if "DTSTART" not in event:
        raise ICalendarError(f"event {uid!r} has no DTSTART")
    start, zone = _time(event, "DTSTART", uid, vtimezones)
    end_zone = None
    if "DTEND" in event:
        end, end_zone = _time(event, "DTEND", uid, vtimezones)
    elif "DURATION" in event:
        duration_prop: Any = event["DURATION"]
        duration: timedelta = duration_prop.dt
        if duration < timedelta(0):
            raise ICalendarError(f"event {uid!r} has a negative DURATION")
        end = _plus(start, duration, raw_duration)
    else:
        end = start if isinstance(start, datetime) else start + timedelta(days=1)
    if isinstance(start, datetime) != isinstance(end, datetime):
        raise ICalendarError(f"event {uid!r} mixes DATE and DATE-TIME in DTSTART and DTEND")
    if not isinstance(start, datetime) or not isinstance(end, datetime):
        own = _text(event, X_TIMEZONE)
        zone = (iana_name(own) if own else None) or hint
    elif (start.tzinfo is None) != (end.tzinfo is None):
        raise ICalendarError(f"event {uid!r} mixes floating and zoned times")
    elif start.tzinfo is None:
        zone = hint
    else:
        if zone in (None, "UTC"):  # UTC or a private VTIMEZONE: look for an IANA name
            own = _text(event, X_TIMEZONE)
            zone = (
                (iana_name(own) if own else None)
                or (end_zone if end_zone != "UTC" else None)
                or (hint if zone == "UTC" else None)
                or zone
            )
        target = ZoneInfo(zone) if zone is not None else start.tzinfo
        start, end = start.astimezone(target), end.astimezone(target)
    # Aware datetimes in one zone compare by wall time, ignoring fold: compare in UTC.
    if _instant(end) < _instant(start):
        raise ICalendarError(f"event {uid!r}: DTEND {end} is before DTSTART {start}")
    return start, end, zone


def _event(
    event: icalendar.Component,
    raw: dict[str, list[str]],
    vtimezones: dict[str, icalendar.Timezone],
    hint: str | None,
) -> RemoteEvent:
    """Map one VEVENT; raise ICalendarError naming what makes it unusable."""
    uid = _text(event, "UID") or ""
    broken = [(name, why) for name, why in event.errors if name in _CHECKED]
    if broken:
        raise ICalendarError(f"event {uid!r}: unreadable {broken[0][0]}: {broken[0][1]}")
    repeated = [name for name in _SINGLE if isinstance(event.get(name), list)]
    if repeated:
        raise ICalendarError(f"event {uid!r} has more than one {repeated[0]}")
    start, end, zone = _period(event, uid, vtimezones, hint, raw["DURATION"])
    recurrence_id = None
    if "RECURRENCE-ID" in event:
        recurrence_id, _ = _time(event, "RECURRENCE-ID", uid, vtimezones)
        if (
            isinstance(recurrence_id, datetime)
            and isinstance(start, datetime)
            and recurrence_id.tzinfo is not None
            and start.tzinfo is not None
        ):
            recurrence_id = recurrence_id.astimezone(start.tzinfo)
    description = _text(event, "DESCRIPTION")
    if description is not None and len(description) > MAX_DESCRIPTION_CHARS:
        raise ICalendarError(
            f"event {uid!r}: DESCRIPTION has {len(description)} characters, "
            f"more than {MAX_DESCRIPTION_CHARS}"
        )
    x_id = appointment_id = _text(event, X_APPOINTMENT_ID)
    if appointment_id is None and uid.endswith(UID_SUFFIX):
        try:
            appointment_id = str(UUID(uid[: -len(UID_SUFFIX)]))
        except ValueError:
            appointment_id = None
    description, name, email = _split_description(
        description,
        _text(event, X_CUSTOMER_NAME),
        _text(event, X_CUSTOMER_EMAIL),
        x_id is None and appointment_id is not None,  # ours, but the server dropped X- props
    )
    status = _text(event, "STATUS")
    return RemoteEvent(
        uid=uid,
        title=_text(event, "SUMMARY"),
        start=start,
        end=end,
        timezone=zone,
        location=_text(event, "LOCATION"),
        description=description,
        customer_name=name,
        customer_email=email,
        all_day=not isinstance(start, datetime),
        floating=isinstance(start, datetime) and start.tzinfo is None,
        rrule=tuple(raw["RRULE"]),
        rdate=tuple(raw["RDATE"]),
        exdate=tuple(raw["EXDATE"]),
        recurrence_id=recurrence_id,
        status=status.strip().upper() if status else None,
        sequence=int(event.get("SEQUENCE", 0)),
        appointment_id=appointment_id,
        recurrence_id_line=raw["RECURRENCE-ID"][0] if raw["RECURRENCE-ID"] else None,
    )


def from_ical(data: bytes | str) -> list[RemoteEvent]:
    """Parse a remote calendar object into one RemoteEvent per VEVENT, in document order.

    A recurring event with overrides yields the master and each RECURRENCE-ID
    instance, all with the same uid.

    :raises ICalendarError: for unparseable data, no VEVENT, a missing UID or more
        than one UID, an unknown TZID, a broken date/time, a time too close to year 1
        or 9999, DTEND before DTSTART or a description over 1,000,000 characters.
    """
    text = decode(data)
    return events_of(parse_calendar(text), text)


def events_of(calendar: icalendar.Calendar, text: str) -> list[RemoteEvent]:
    """Return the RemoteEvents of a VCALENDAR parsed from ``text`` (see :func:`from_ical`).

    :raises ICalendarError: as :func:`from_ical` does, for everything but unparseable data.
    """
    events = calendar.walk("VEVENT")
    if not events:
        names = sorted({str(c.name) for c in calendar.walk() if c.name != "VCALENDAR"})
        others = ", ".join(names) if names else "no components at all"
        raise ICalendarError(f"calendar object holds no VEVENT (found {others})")
    uids = {_text(event, "UID") or "" for event in events}
    if "" in uids:
        raise ICalendarError("a VEVENT has no UID")
    if len(uids) > 1:
        raise ICalendarError(f"calendar object holds more than one UID: {sorted(uids)}")
    raw = _raw_lines(text)
    if len(raw) != len(events):  # pragma: no cover - both follow document order
        raw = [{key: [] for key in _RAW} for _ in events]
    vtimezones = {
        str(tz["TZID"]): tz
        for tz in calendar.walk("VTIMEZONE")
        if isinstance(tz, icalendar.Timezone) and "TZID" in tz
    }
    hint_value = _text(calendar, "X-WR-TIMEZONE")
    hint = iana_name(hint_value) if hint_value else None
    try:
        return [
            _event(event, lines, vtimezones, hint) for event, lines in zip(events, raw, strict=True)
        ]
    except OverflowError:  # a zone's offset pushed a time past year 1 or 9999
        raise ICalendarError(
            f"event {sorted(uids)[0]!r} has a time too close to year 1 or 9999"
        ) from None
