"""What the sync state machine expects of an appointment, and how it reads calendar objects."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import icalendar

BASE = datetime(2026, 3, 26, tzinfo=UTC)  # the span covers the spring DST change in Europe


def slot(number: int) -> datetime:
    """Return the start of half hour ``number`` after :data:`BASE`."""
    return BASE + timedelta(minutes=30 * number)


@dataclass(frozen=True)
class Expected:
    """What the journal must show of one appointment once everything settled."""

    status: str  # "booked" | "gone" (cancelled, or a foreign event never imported)
    title: str | None = None
    start: datetime | None = None
    end: datetime | None = None


def expected_of(state: dict[str, Any], present: bool = True) -> Expected:
    """Return what an appointment state shows (``gone`` when cancelled or not ``present``)."""
    if state["status"] == "cancelled" or not present:
        return Expected("gone")
    return Expected(
        "booked",
        state["title"],
        datetime.fromisoformat(state["start"]),
        datetime.fromisoformat(state["end"]),
    )


def master_event(calendar: icalendar.Calendar) -> icalendar.Event:
    """Return the event of a calendar object that is not an override."""
    return next(e for e in calendar.walk("VEVENT") if "RECURRENCE-ID" not in e)


@lru_cache(maxsize=4096)
def shown(data: bytes) -> tuple[str, str, datetime, datetime]:
    """Return UID, SUMMARY, DTSTART and DTEND of an object, read by icalendar."""
    event = master_event(icalendar.Calendar.from_ical(data))
    return (
        str(event["UID"]),
        str(event.get("SUMMARY", "")),
        event.decoded("DTSTART"),
        event.decoded("DTEND"),
    )


def replace(event: icalendar.Event, name: str, value: Any) -> None:
    """Set a property of an event, dropping what it had."""
    event.pop(name, None)
    event.add(name, value)
