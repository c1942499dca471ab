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

Appointments imported from a customer's calendar keep its shape: the remote
UID, all-day dates (``VALUE=DATE``), floating wall times, and a recurrence
whose RRULE/RDATE/EXDATE and RECURRENCE-ID lines are written back verbatim,
each override as one more VEVENT with the same UID. The VTIMEZONE covers the
years of DTSTART/DTEND, the overrides, the RDATEs and the end of a bounded
RRULE (UNTIL, or the last instance a COUNT gives); an unbounded RRULE is
covered from its start year through ten years later, and no VTIMEZONE reaches
more than a hundred years from DTSTART. Readers that know the IANA TZID (all
common clients) need none of it; the rest see correct offsets inside that span.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import lru_cache
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import icalendar
from dateutil.rrule import rrulestr
from icalendar.parser import Contentline, Parameters
from icalendar.prop import vDDDLists, vDDDTypes, vText

from caljournal.adapters.ical_hash import calendar_hash, content_hash
from caljournal.adapters.ical_parse import (
    BLOCK_SEPARATOR,
    UID_SUFFIX,
    X_APPOINTMENT_ID,
    X_CUSTOMER_EMAIL,
    X_CUSTOMER_NAME,
    X_TIMEZONE,
    ICalendarError,
    RemoteEvent,
    customer_block,
    from_ical,
    iana_name,
)

__all__ = [
    "PRODID",
    "AppointmentView",
    "ICalendarError",
    "Override",
    "Recurrence",
    "RemoteEvent",
    "calendar_hash",
    "content_hash",
    "from_ical",
    "object_name",
    "to_ical",
    "vtimezone",
]

PRODID = "-//caljournal//caljournal//EN"
#: What a calendar shows as the title of an appointment whose personal data was erased.
ERASED_SUMMARY = "Appointment"
_STATUS = {"booked": "CONFIRMED", "cancelled": "CANCELLED"}
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_LINE_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # no line breaks in one content line
_TOKEN = re.compile(r"[A-Z][A-Z0-9-]*")
_RULE_HORIZON = 10  # years after DTSTART that the VTIMEZONE of an unbounded RRULE covers
_MAX_YEARS = 100  # no VTIMEZONE reaches further from DTSTART than this
_RULE_SCAN = 100_000  # the largest COUNT whose instances are walked to find the last one


def _zone(name: str) -> ZoneInfo:
    """Return the IANA zone ``name``.

    :raises ValueError: when there is no such zone.
    """
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError, OSError):
        raise ValueError(f"unknown time zone {name!r}") from None


def _parts(line: str, name: str) -> tuple[Parameters, str]:
    """Return the parameters and value of the content line ``line`` of property ``name``.

    :raises ValueError: when ``line`` is not one unfolded line of property ``name``.
    """
    if not isinstance(line, str) or _LINE_CONTROL.search(line):
        raise ValueError(f"{name} must be one unfolded content line, got {line!r}")
    try:
        found, params, value = Contentline(line).parts()
    except ValueError as exc:
        raise ValueError(f"unreadable {name} line {line!r}: {exc}") from None
    if found.upper() != name:
        raise ValueError(f"expected a {name} line, got {line!r}")
    return params, value


def _aware(name: str, value: Any) -> None:
    """Raise ValueError unless ``value`` is an aware datetime."""
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime, got {value!r}")


def _status(value: str) -> str:
    """Return the iCalendar STATUS for an appointment status or STATUS value.

    :raises ValueError: when ``value`` is no STATUS token.
    """
    status = _STATUS.get(value, value).strip().upper() if isinstance(value, str) else ""
    if not _TOKEN.fullmatch(status):
        raise ValueError(f"unusable STATUS {value!r}")
    return status


@dataclass(frozen=True)
class Override:
    """One instance of a recurring appointment that differs from the rule: an extra VEVENT.

    ``recurrence_id`` is the whole unfolded RECURRENCE-ID line, written verbatim.
    ``start``/``end`` are written like the master's (zoned, all-day or floating).
    Texts that are None fall back to the master's; ``status`` ("CANCELLED", or an
    appointment status such as "cancelled") is written only when given.
    """

    recurrence_id: str
    start: datetime
    end: datetime
    title: str | None = None
    location: str | None = None
    description: str | None = None
    status: str | None = None

    def __post_init__(self) -> None:
        """Check the RECURRENCE-ID line, the times and the status.

        :raises ValueError: when one of them is unusable.
        """
        _parts(self.recurrence_id, "RECURRENCE-ID")
        _aware("override start", self.start)
        _aware("override end", self.end)
        if self.status is not None:
            _status(self.status)


@dataclass(frozen=True)
class Recurrence:
    """The recurrence of an appointment as remote calendars wrote it.

    ``rrule``/``rdate``/``exdate`` hold whole unfolded content lines, e.g.
    ``"RRULE:FREQ=WEEKLY;COUNT=5"``; they are written verbatim (folded when long).
    """

    rrule: tuple[str, ...] = ()
    rdate: tuple[str, ...] = ()
    exdate: tuple[str, ...] = ()
    overrides: tuple[Override, ...] = ()

    def __post_init__(self) -> None:
        """Check that each line is one line of its property.

        :raises ValueError: when one is not.
        """
        for name in ("rrule", "rdate", "exdate"):
            for line in getattr(self, name):
                _parts(line, name.upper())

    @classmethod
    def from_state(
        cls, value: Mapping[str, Any], moment: Callable[[str, Any], datetime]
    ) -> Recurrence:
        """Build the recurrence from the state's ``"recurrence"`` dict.

        ``moment(name, value)`` turns an override's time into the view's datetime.

        :raises ValueError: when a line, time or status is unusable.
        :raises KeyError: when an override lacks a field.
        """
        lines = {name: value.get(name) or () for name in ("rrule", "rdate", "exdate")}
        for name, found in lines.items():
            if isinstance(found, str):
                raise ValueError(f"recurrence {name!r} must be a list of lines, got {found!r}")
        overrides = tuple(
            Override(
                recurrence_id=item["recurrence_id"],
                start=moment("override start", item["start"]),
                end=moment("override end", item["end"]),
                title=item.get("title"),
                location=item.get("location"),
                description=item.get("description"),
                status=item.get("status"),
            )
            for item in value.get("overrides") or ()
        )
        return cls(**{name: tuple(found) for name, found in lines.items()}, overrides=overrides)


@dataclass(frozen=True)
class AppointmentView:
    """What a calendar shows of an appointment; ``start``/``end`` are in ``timezone``.

    When ``all_day``, ``start``/``end`` are midnights in ``timezone`` and only their
    dates are written (``end`` exclusive). When ``floating``, only their wall-clock
    times are written, without a zone.
    """

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
    all_day: bool = False
    floating: bool = False
    recurrence: Recurrence | None = None

    def __post_init__(self) -> None:
        """Check the fields that the mapping relies on.

        :raises ValueError: when a time is naive, the zone or status is unknown, the
            sequence is negative, the uid is empty or holds a line break, or the
            event is both all-day and floating.
        """
        for name in ("start", "end"):
            _aware(name, getattr(self, name))
        if not self.uid or _LINE_CONTROL.search(self.uid):
            raise ValueError(f"uid must be one line of text, got {self.uid!r}")
        if self.all_day and self.floating:
            raise ValueError("an event cannot be both all-day and floating")
        if self.status not in _STATUS:
            raise ValueError(f"status must be one of {sorted(_STATUS)}, got {self.status!r}")
        _zone(self.timezone)
        if self.sequence < 0:
            raise ValueError(f"sequence must not be negative, got {self.sequence}")

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> AppointmentView:
        """Build the view from ``Appointment.state()``.

        The uid is the state's ``calendar_uid`` when set, else ``"<id>@caljournal"``.
        SEQUENCE is the state's content ``sequence`` (0 when booked, raised by each
        change a calendar shows); a state without one uses ``version - 1``. Either
        way the first push carries SEQUENCE:0. The optional ``all_day``,
        ``floating`` and ``recurrence`` keys (see :class:`Recurrence`) describe
        imported events; a floating time keeps the wall clock of its ISO string.
        A state with ``erased_on`` (personal data erased) shows ``ERASED_SUMMARY``
        and no location, description or customer, in its instances neither.

        :raises ValueError: when a time lacks an offset, the zone is unknown, or the
            version, status or recurrence is unusable.
        :raises KeyError: when a field is missing.
        """
        zone = _zone(state["timezone"])
        floating = bool(state.get("floating"))

        def moment(name: str, raw: Any) -> datetime:
            value = datetime.fromisoformat(raw) if isinstance(raw, str) else raw
            if not isinstance(value, datetime) or value.utcoffset() is None:
                raise ValueError(f"{name} must carry a UTC offset, got {raw!r}")
            return value.replace(tzinfo=zone) if floating else value.astimezone(zone)

        recurrence = state.get("recurrence")
        erased = bool(state.get("erased_on"))
        if erased and recurrence and recurrence.get("overrides"):
            # An erased appointment's instances show only their times.
            recurrence = {
                **recurrence,
                "overrides": [
                    {k: v for k, v in o.items() if k not in ("title", "location", "description")}
                    for o in recurrence["overrides"]
                ],
            }
        return cls(
            appointment_id=str(state["id"]),
            uid=state.get("calendar_uid") or f"{state['id']}{UID_SUFFIX}",
            title=ERASED_SUMMARY if erased else state["title"],
            start=moment("start", state["start"]),
            end=moment("end", state["end"]),
            timezone=state["timezone"],
            location=None if erased else state.get("location"),
            description=None if erased else state.get("description"),
            customer_name=None if erased else state.get("customer_name"),
            customer_email=None if erased else state.get("customer_email"),
            sequence=int(state["sequence"]) if "sequence" in state else int(state["version"]) - 1,
            status=state["status"],
            all_day=bool(state.get("all_day")),
            floating=floating,
            recurrence=Recurrence.from_state(recurrence, moment) if recurrence else None,
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
def vtimezone(
    name: str, first_year: int, last_year: int, tzid: str | None = None
) -> icalendar.Timezone:
    """Return the VTIMEZONE of IANA zone ``name`` for the years ``first_year``–``last_year``.

    Its TZID is ``tzid`` when given (another name for the zone, as a remote line
    used it), else ``name``. The component is cached and shared: add it to
    calendars, never change it.

    :raises ValueError: when icalendar cannot build the component for the zone.
    """
    last = date(last_year + 1, 1, 1) if last_year < 9999 else date(9999, 12, 30)
    zone = ZoneInfo(name)
    bounded = _Until(zone, datetime.combine(last, time()) + timedelta(days=1))
    component = _VTimezone.from_tzinfo(bounded, tzid or name, date(first_year, 1, 1), last)
    for observance in component.subcomponents:
        if not isinstance(observance, icalendar.TimezoneStandard | icalendar.TimezoneDaylight):
            raise ValueError(f"icalendar built a {observance.name} inside the VTIMEZONE of {name}")
        _start_before_change(observance, zone)
    _drop_overtaken_span(component)
    return component


def _drop_overtaken_span(component: icalendar.Timezone) -> None:
    """Leave out the span the component starts with when a change begins no later.

    When the clocks jump over local midnight of the first day (Asia/Khandyga
    went from +09 to +10 at 2004-01-01 00:00), icalendar reads the offset of
    that wall time, which does not exist, as the one before the jump, and
    starts the component with a span in that offset at midnight. The change
    begins at the local time before the jump, at or before midnight, and
    readers take the observance with the latest onset (of equal ones, the
    first written): the old offset would hold for the whole window. The change
    alone already gives every wall time of the window its offset.
    """
    changes: list[datetime] = []
    spans: list[icalendar.TimezoneStandard | icalendar.TimezoneDaylight] = []
    for observance in component.subcomponents:
        if not isinstance(observance, icalendar.TimezoneStandard | icalendar.TimezoneDaylight):
            continue
        if observance.TZOFFSETFROM == observance.TZOFFSETTO:
            spans.append(observance)
        else:
            changes += _onsets(observance)
    for span in spans:
        if changes and min(changes) <= span.DTSTART:
            component.subcomponents.remove(span)


def _onsets(observance: icalendar.TimezoneStandard | icalendar.TimezoneDaylight) -> list[datetime]:
    """Return the wall times an observance begins at: its DTSTART and RDATEs."""
    rdates = observance.get("RDATE")
    items = rdates if isinstance(rdates, list) else [rdates] if rdates is not None else []
    return [observance.DTSTART, *(v.dt for item in items for v in item.dts)]


def _start_before_change(
    observance: icalendar.TimezoneStandard | icalendar.TimezoneDaylight, zone: ZoneInfo
) -> None:
    """Rewrite the onsets of a STANDARD/DAYLIGHT as the local time before each change.

    RFC 5545 §3.6.5: DTSTART (and RDATE) of an observance is the wall time in
    the offset *before* the change, TZOFFSETFROM. icalendar writes the first
    wall time that has the new offset, which for a spring change is an hour
    late (Europe/Berlin 2026: 03:00 instead of 02:00). The onset of the span
    the component starts with (TZOFFSETFROM equals TZOFFSETTO) is no change
    and stays.
    """
    before: timedelta = observance.TZOFFSETFROM
    after: timedelta = observance.TZOFFSETTO
    if before == after:
        return
    first, *values = _onsets(observance)
    observance["DTSTART"] = vDDDTypes(_onset(zone, first, before, after))
    if values:
        observance["RDATE"] = vDDDLists([_onset(zone, v, before, after) for v in values])


def _offset_at(zone: ZoneInfo, instant: datetime) -> timedelta | None:
    """Return ``zone``'s offset at the naive UTC ``instant``."""
    return instant.replace(tzinfo=UTC).astimezone(zone).utcoffset()


def _onset(zone: ZoneInfo, written: datetime, before: timedelta, after: timedelta) -> datetime:
    """Return the local time before the change from ``before`` to ``after`` near ``written``.

    ``written`` is a naive wall time at the change in either offset; the change
    happens at the UTC instant where the zone's offset turns from ``before``
    to ``after``.
    """
    try:
        for candidate in (written - before, written - after):
            if _offset_at(zone, candidate - timedelta(seconds=1)) == before and (
                _offset_at(zone, candidate) == after
            ):
                return candidate + before
    except OverflowError:  # at the ends of the years datetime can hold
        pass
    return written


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


class _Raw(str):
    """A whole content line that is written as it is (folded when long)."""

    __slots__ = ()


class _Calendar(icalendar.Calendar):
    """VCALENDAR that writes :class:`_Raw` property values verbatim."""

    def content_line(self, name: str, value: Any, sorted: bool = True) -> Contentline:
        """Return the content line of one property."""
        if isinstance(value, _Raw):
            return Contentline(str(value))
        return super().content_line(name, value, sorted=sorted)


def _wall(view: AppointmentView, zone: ZoneInfo, value: datetime) -> datetime:
    """Return the naive wall time that ``value`` is written as (before dropping seconds)."""
    return (value if view.floating else value.astimezone(zone)).replace(tzinfo=None)


def _add_times(
    event: icalendar.Component, view: AppointmentView, start: datetime, end: datetime
) -> bool:
    """Add DTSTART and DTEND in the view's style; tell whether they use the view's TZID."""
    zone = _zone(view.timezone)
    if view.all_day or view.floating:
        for name, value in (("DTSTART", start), ("DTEND", end)):
            wall = _wall(view, zone, value).replace(microsecond=0)
            event.add(name, wall.date() if view.all_day else wall)
        if view.all_day and view.timezone != "UTC":
            # Dates carry no zone; the journal keeps whose midnights bound the day.
            event.add(X_TIMEZONE, _Text(view.timezone))
        return False
    start = start.astimezone(zone).replace(microsecond=0)
    end = end.astimezone(zone).replace(microsecond=0)
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
    return zoned


def _vevent(
    view: AppointmentView,
    stamp: datetime,
    times: tuple[datetime, datetime],
    texts: tuple[str | None, str | None, str | None],
) -> tuple[icalendar.Event, bool]:
    """Return a VEVENT of the view with the given times and (title, location, description)."""
    event = icalendar.Event()
    event.add("UID", _Text(view.uid))
    event.add("DTSTAMP", stamp)
    zoned = _add_times(event, view, *times)
    title, location, description = texts
    _text(event, "SUMMARY", title)
    _text(event, "LOCATION", location)
    customer = clean_text(view.customer_name) if view.customer_name is not None else None
    email = clean_text(view.customer_email) if view.customer_email is not None else None
    description = clean_text(description) if description is not None else None
    _text(event, "DESCRIPTION", compose_description(description, customer, email))
    _text(event, X_CUSTOMER_NAME, customer)
    _text(event, X_CUSTOMER_EMAIL, email)
    _text(event, X_APPOINTMENT_ID, view.appointment_id)
    event.add("SEQUENCE", view.sequence)
    return event, zoned


def _rule_end(line: str, start: datetime) -> int | None:
    """Return the year of the last instance of RRULE ``line``, None when it has no end.

    ``start`` is the naive DTSTART. A rule dateutil cannot read counts as endless;
    one with a COUNT above ``_RULE_SCAN`` is not walked and ends at the VTIMEZONE's limit.
    """
    value = _parts(line, "RRULE")[1]
    parts = dict(part.partition("=")[::2] for part in value.upper().split(";"))
    until, count = parts.get("UNTIL", ""), parts.get("COUNT", "")
    if until[:4].isdigit():
        return int(until[:4])
    if not count.isdigit():
        return None
    if int(count) > _RULE_SCAN:
        return start.year + _MAX_YEARS
    try:
        instances = list(rrulestr(value, dtstart=start))
    except (ValueError, TypeError, OverflowError):
        return None
    return instances[-1].year if instances else start.year


def _years(view: AppointmentView) -> tuple[int, int]:
    """Return the first and last year the VTIMEZONEs of ``view`` must cover."""
    zone = _zone(view.timezone)
    start = _wall(view, zone, view.start)
    years = {start.year, _wall(view, zone, view.end).year}
    recurrence = view.recurrence or Recurrence()
    for override in recurrence.overrides:
        years |= {_wall(view, zone, override.start).year, _wall(view, zone, override.end).year}
    for line in recurrence.rdate:
        for item in _parts(line, "RDATE")[1].split(","):
            years |= {int(part[:4]) for part in item.split("/") if part[:4].isdigit()}
    for line in recurrence.rrule:
        end = _rule_end(line, start)
        years.add(start.year + _RULE_HORIZON if end is None else end)
    first = max(min(years), start.year - _MAX_YEARS, 1)
    return first, max(min(max(years), start.year + _MAX_YEARS, 9999), first)


def _tzids(view: AppointmentView, zoned: bool) -> dict[str, str]:
    """Return the TZIDs the calendar object uses, each with its IANA zone name.

    Verbatim lines may name the zone differently (a Windows name, a ``/vendor/``
    prefix); each such TZID needs its own VTIMEZONE. One that names no known zone
    gets none.
    """
    found = {view.timezone: view.timezone} if zoned else {}
    recurrence = view.recurrence or Recurrence()
    lines = [*recurrence.rdate, *recurrence.exdate]
    lines += [override.recurrence_id for override in recurrence.overrides]
    for line in lines:
        tzid = Contentline(line).parts()[1].get("TZID")
        if tzid and str(tzid) not in found and (zone := iana_name(str(tzid))):
            found[str(tzid)] = zone
    return found


def to_ical(view: AppointmentView, dtstamp: datetime) -> bytes:
    """Return the calendar object for ``view``: a VCALENDAR with one VEVENT per instance.

    The master VEVENT comes first, then one per override in the given order. The
    output is byte-identical for equal inputs; the clock is never read.

    :raises ValueError: when ``dtstamp`` is naive or the zone is unknown.
    """
    if dtstamp.utcoffset() is None:
        raise ValueError("dtstamp must be an aware datetime")
    stamp = dtstamp.astimezone(UTC).replace(microsecond=0)
    recurrence = view.recurrence or Recurrence()
    calendar = _Calendar()
    calendar.add("PRODID", PRODID)
    calendar.add("VERSION", "2.0")
    calendar.add("CALSCALE", "GREGORIAN")
    texts = (view.title, view.location, view.description)
    master, zoned = _vevent(view, stamp, (view.start, view.end), texts)
    master.add("STATUS", _STATUS[view.status])
    for name in ("rrule", "rdate", "exdate"):
        for line in getattr(recurrence, name):
            master.add(name.upper(), _Raw(line), encode=False)
    events = [master]
    for override in recurrence.overrides:
        title, location, description = (
            mine if mine is not None else fallback
            for mine, fallback in zip(
                (override.title, override.location, override.description), texts, strict=True
            )
        )
        times = (override.start, override.end)
        event, own_zone = _vevent(view, stamp, times, (title, location, description))
        event.add("RECURRENCE-ID", _Raw(override.recurrence_id), encode=False)
        if override.status is not None:
            event.add("STATUS", _status(override.status))
        events.append(event)
        zoned = zoned or own_zone
    tzids = _tzids(view, zoned)
    if tzids:
        first, last = _years(view)
        for tzid, zone in tzids.items():
            calendar.add_component(vtimezone(zone, first, last, None if tzid == zone else tzid))
    for event in events:
        calendar.add_component(event)
    return calendar.to_ical()
