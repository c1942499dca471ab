"""Expand an appointment into the occurrences a calendar shows.

The state is rendered with :func:`caljournal.adapters.ical.to_ical` and the
result expanded with ``recurring_ical_events``, so the occurrences are those
a client reading the pushed object computes: EXDATEs removed, RDATEs added,
overrides at their own times, and overrides with STATUS:CANCELLED left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import icalendar
import recurring_ical_events

from caljournal.adapters.ical import AppointmentView, to_ical
from caljournal.domain.values import rfc3339

__all__ = ["Occurrence", "expand"]

_DTSTAMP = datetime(2000, 1, 1, tzinfo=UTC)  # expansion never reads DTSTAMP
_FIRST_SPAN = timedelta(days=1)
_EMPTY_SPAN = timedelta(days=64)  # longest piece expanded while nothing has been found yet


@dataclass(frozen=True)
class Occurrence:
    """One occurrence of an appointment.

    ``start``/``end`` are aware datetimes in the appointment's zone: all-day
    occurrences start and end at midnight there, floating ones keep their wall
    time in the zone the state names. ``recurrence_id`` is the ISO form (same
    style) of the occurrence's original start, None for an appointment that does
    not recur. ``status`` is the iCalendar STATUS ("CONFIRMED", "CANCELLED"), None
    for an override that does not set one.
    """

    start: datetime
    end: datetime
    recurrence_id: str | None
    title: str | None
    location: str | None
    status: str | None


def _moment(value: date | datetime, zone: tzinfo) -> datetime:
    """Return ``value`` as an aware datetime in ``zone`` (dates at midnight, naive as wall time)."""
    if not isinstance(value, datetime):
        return datetime.combine(value, time(), tzinfo=zone)
    return value.replace(tzinfo=zone) if value.tzinfo is None else value.astimezone(zone)


def _time(component: icalendar.Component, name: str, zone: tzinfo) -> datetime | None:
    """Return DATE/DATE-TIME property ``name`` in ``zone`` (see :func:`_moment`), or None."""
    prop: Any = component.get(name)  # a vDDDTypes; icalendar types it as any property
    return None if prop is None else _moment(prop.dt, zone)


def _text(component: icalendar.Component, name: str) -> str | None:
    """Return TEXT property ``name`` of ``component``, or None."""
    value = component.get(name)
    return None if value is None else str(value)


def _occurrence(component: icalendar.Component, zone: tzinfo, recurring: bool) -> Occurrence:
    """Map one expanded VEVENT."""
    status = _text(component, "STATUS")
    start, end = _time(component, "DTSTART", zone), _time(component, "DTEND", zone)
    rid = _time(component, "RECURRENCE-ID", zone) if recurring else None
    assert start is not None and end is not None  # to_ical writes both
    return Occurrence(
        start=start,
        end=end,
        recurrence_id=None if rid is None else rfc3339(rid),
        title=_text(component, "SUMMARY"),
        location=_text(component, "LOCATION"),
        status=status.strip().upper() if status else None,
    )


def expand(
    state: Mapping[str, Any], window_start: datetime, window_end: datetime, limit: int = 1000
) -> list[Occurrence]:
    """Return the occurrences of the appointment ``state`` that overlap the window.

    The window (``window_start`` inclusive, ``window_end`` exclusive) is read in the
    appointment's zone, which is also where all-day dates and floating times are
    placed. The result is sorted by start and holds at most ``limit`` occurrences,
    the earliest ones. The window is expanded piece by piece (a day, then twice as
    long each time, at most 64 days until something is found) so that an endless
    rule over a wide window stops after about ``limit`` occurrences instead of
    expanding the whole window. A window that is empty gives an empty list.

    :raises ValueError: when a window bound is naive, the window ends before it
        starts, ``limit`` is negative or the state cannot be rendered.
    :raises KeyError: when the state lacks a field.
    """
    for name, value in (("window_start", window_start), ("window_end", window_end)):
        if not isinstance(value, datetime) or value.utcoffset() is None:
            raise ValueError(f"{name} must be an aware datetime, got {value!r}")
    if window_end < window_start:
        raise ValueError(f"window ends ({window_end}) before it starts ({window_start})")
    if limit < 0:
        raise ValueError(f"limit must not be negative, got {limit}")
    view = AppointmentView.from_state(state)
    zone = ZoneInfo(view.timezone)
    recurrence = view.recurrence
    recurring = recurrence is not None and bool(
        recurrence.rrule or recurrence.rdate or recurrence.overrides
    )
    calendar = icalendar.Calendar.from_ical(to_ical(view, _DTSTAMP))
    cancelled = {
        _time(event, "RECURRENCE-ID", zone)
        for event in calendar.walk("VEVENT")
        if "RECURRENCE-ID" in event and _text(event, "STATUS") == "CANCELLED"
    }
    query = recurring_ical_events.of(calendar)
    found: set[Occurrence] = set()
    low, end, span = window_start.astimezone(zone), window_end.astimezone(zone), _FIRST_SPAN
    while low < end and len(found) < limit:
        try:
            high = min(low + span, end)
        except OverflowError:
            high = end
        for component in query.between(low, high):
            occurrence = _occurrence(component, zone, recurring)
            rid = _time(component, "RECURRENCE-ID", zone)
            if occurrence.status == "CANCELLED" and rid is not None and rid in cancelled:
                continue
            found.add(occurrence)
        low, span = high, span * 2 if found else min(span * 2, _EMPTY_SPAN)
    return sorted(found, key=lambda o: (o.start, o.end, o.recurrence_id or ""))[:limit]
