"""Every zone's VTIMEZONE names each change where RFC 5545 §3.6.5 puts it.

An observance's DTSTART (and each RDATE) is the local time *before* the change,
in TZOFFSETFROM: DTSTART - TZOFFSETFROM is the UTC instant of the change.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from caljournal.adapters.ical import vtimezone
from caljournal.domain.values import known_zones

# Years with changes of many kinds: the end of local mean time, war time, the
# 1970s, Recife's one-week DST (2000), Cairo's Ramadan pause (2010), today.
YEARS = (1900, 1942, 1970, 2000, 2010, 2026)
SECOND = timedelta(seconds=1)


def offset_at(zone: ZoneInfo, instant: datetime) -> timedelta | None:
    return instant.replace(tzinfo=UTC).astimezone(zone).utcoffset()


def real_changes(zone: ZoneInfo, year: int) -> set[datetime]:
    """Return the naive UTC instants from 2 January to 30 December where the offset changes.

    (A day off either end of the year keeps clear of the component's window,
    which runs from local midnight to local midnight.)
    """
    found = set()
    step, last = datetime(year, 1, 2), datetime(year, 12, 30)
    offset = offset_at(zone, step)
    while step < last:
        nxt = step + timedelta(days=1)
        next_offset = offset_at(zone, nxt)
        if offset != next_offset:
            low, high = step, nxt
            while high - low > SECOND:
                middle = low + (high - low) / 2
                middle = middle.replace(microsecond=0)
                if offset_at(zone, middle) == offset_at(zone, low):
                    low = middle
                else:
                    high = middle
            found.add(high)
        step, offset = nxt, next_offset
    return found


def onsets(component: object) -> list[tuple[datetime, timedelta, timedelta]]:
    """Return (written onset, TZOFFSETFROM, TZOFFSETTO) of every change in the VTIMEZONE."""
    found = []
    for observance in component.subcomponents:  # type: ignore[attr-defined]
        before, after = observance["TZOFFSETFROM"].td, observance["TZOFFSETTO"].td
        if before == after:  # the span the component starts with: no change
            continue
        values = [observance["DTSTART"].dt]
        rdates = observance.get("RDATE")
        for item in rdates if isinstance(rdates, list) else [rdates] if rdates else []:
            values += [value.dt for value in item.dts]
        found += [(value, before, after) for value in values]
    return found


@pytest.mark.parametrize("year", YEARS)
def test_every_zones_changes_start_at_the_local_time_before_the_change(year: int) -> None:
    wrong = []
    for name in sorted(known_zones()):
        zone = ZoneInfo(name)
        written = set()
        for onset, before, after in onsets(vtimezone(name, year, year)):
            instant = onset - before
            written.add(instant)
            if (offset_at(zone, instant - SECOND), offset_at(zone, instant)) != (before, after):
                wrong.append(f"{name}: onset {onset} {before}->{after} is no change at {instant}Z")
        missing = real_changes(zone, year) - written
        wrong += [f"{name}: the change at {c}Z is missing" for c in sorted(missing)]
    assert not wrong, "\n".join(wrong[:20])


def test_berlin_springs_forward_at_two_in_the_morning() -> None:
    component = vtimezone("Europe/Berlin", 2026, 2026)
    daylight = next(c for c in component.subcomponents if c.name == "DAYLIGHT")
    assert daylight["DTSTART"].dt == datetime(2026, 3, 29, 2, 0)
    standard = [c for c in component.subcomponents if c.name == "STANDARD"]
    assert datetime(2026, 10, 25, 3, 0) in [c["DTSTART"].dt for c in standard]
