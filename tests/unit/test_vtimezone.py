"""Every zone's VTIMEZONE names each change where RFC 5545 §3.6.5 puts it.

An observance's DTSTART (and each RDATE) is the local time *before* the change,
in TZOFFSETFROM: DTSTART - TZOFFSETFROM is the UTC instant of the change. And a
reader that knows nothing but the VTIMEZONE gives each wall time caljournal
writes the offset zoneinfo gives it, also where the window of years starts or
ends at a change.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import icalendar
import pytest

from caljournal.adapters.ical import vtimezone
from caljournal.domain.values import is_region_zone, known_zones

# Years with changes of many kinds: the end of local mean time, war time, the
# 1970s, Recife's one-week DST (2000), Cairo's Ramadan pause (2010), today.
YEARS = (1900, 1942, 1970, 2000, 2010, 2026)
SECOND = timedelta(seconds=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
# The zones the API books in; "UTC" is written in the Z form, without a VTIMEZONE.
REGION_ZONES = sorted(name for name in known_zones() if is_region_zone(name) and name != "UTC")
# Years near today, each zone's whole VTIMEZONE window read back.
RECENT = (2026, 2027)
# Years scanned for a change within a day or two of New Year, where a window of
# years starts or ends (tzdata's first and last explicit changes lie inside).
BOUNDARY_SCAN = range(1850, 2101)


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


def changes_between(zone: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    """Return the aware UTC instants in [start, end) where ``zone``'s offset changes.

    Scans day by day and bisects to the second: an offset that holds for less
    than a day and then returns is not seen (the VTIMEZONE search steps by days too).
    """
    found = []
    step, offset = start, start.astimezone(zone).utcoffset()
    while step < end:
        following = step + DAY
        next_offset = following.astimezone(zone).utcoffset()
        if next_offset != offset:
            low, high = step, following
            while high - low > SECOND:
                middle = low + timedelta(seconds=(high - low).total_seconds() // 2)
                if middle.astimezone(zone).utcoffset() == offset:
                    low = middle
                else:
                    high = middle
            found.append(high)
        step, offset = following, next_offset
    return found


def written_wall_times(zone: ZoneInfo, first: int, last: int) -> list[datetime]:
    """Return sample local times in the years ``first``-``last`` as caljournal writes them.

    The samples are instants: the first and last of the window, midnight of the
    1st and 15th of each month, and each change with the second before it and an
    hour either side. Each becomes its wall time in ``zone`` (so none lies in a
    gap). The second of two equal wall times (``fold=1`` in a fall-back hour) is
    left out: caljournal writes it in UTC, without the TZID.
    """
    begin = datetime(first, 1, 1, tzinfo=zone).astimezone(UTC)
    end = datetime(last + 1, 1, 1, tzinfo=zone).astimezone(UTC)
    instants = [begin, end - SECOND]
    for year in range(first, last + 1):
        for month in range(1, 13):
            instants += [datetime(year, month, day, tzinfo=zone).astimezone(UTC) for day in (1, 15)]
    for change in changes_between(zone, begin - DAY, end + DAY):
        instants += [change - HOUR, change - SECOND, change, change + HOUR]
    walls = []
    for instant in instants:
        local = instant.astimezone(zone)
        repeated = local.fold == 1 and local.replace(fold=0).utcoffset() != local.utcoffset()
        if first <= local.year <= last and not repeated:
            walls.append(local)
    return walls


def wrong_offsets(name: str, first: int, last: int) -> list[str]:
    """Return the sample wall times whose VTIMEZONE offset differs from zoneinfo's."""
    zone = ZoneInfo(name)
    written = vtimezone(name, first, last).to_ical()
    reader = icalendar.Timezone.from_ical(written).to_tz(lookup_tzid=False)
    wrong = []
    for local in written_wall_times(zone, first, last):
        # As RFC 5545 reads a wall time: the first of two equal ones (fold=0).
        wall = local.replace(tzinfo=reader, fold=0)
        if wall.utcoffset() != local.utcoffset():
            wrong.append(
                f"{name} ({first}-{last}): {local.replace(tzinfo=None)} reads as "
                f"{wall.utcoffset()}, zoneinfo says {local.utcoffset()}"
            )
    return wrong


def new_year_changes() -> list[tuple[str, int]]:
    """Return (zone, year) for each region zone's change within a day or two of 1 January."""
    found = []
    for name in REGION_ZONES:
        zone = ZoneInfo(name)
        for year in BOUNDARY_SCAN:
            before = datetime(year - 1, 12, 30, tzinfo=UTC).astimezone(zone).utcoffset()
            after = datetime(year, 1, 3, tzinfo=UTC).astimezone(zone).utcoffset()
            if before != after:
                found.append((name, year))
    return found


def test_every_zone_reads_as_zoneinfo_in_recent_years() -> None:
    wrong = [line for name in REGION_ZONES for line in wrong_offsets(name, *RECENT)]
    assert not wrong, "\n".join(wrong[:20])


def test_windows_that_start_or_end_at_a_change_read_as_zoneinfo() -> None:
    found = new_year_changes()
    assert ("Asia/Khandyga", 2004) in found  # +09 to +10 at midnight: the window starts in a gap
    wrong = []
    for name, year in found:
        wrong += wrong_offsets(name, year, year)  # starts at the change
        wrong += wrong_offsets(name, year - 1, year - 1)  # ends at it
    assert not wrong, "\n".join(wrong[:20])


def test_a_window_starting_where_the_clocks_jump_over_midnight_keeps_the_new_offset() -> None:
    # Asia/Khandyga went from +09 to +10 at 2004-01-01 00:00: that midnight never was.
    component = icalendar.Timezone.from_ical(vtimezone("Asia/Khandyga", 2004, 2004).to_ical())
    reader = component.to_tz(lookup_tzid=False)
    assert datetime(2004, 1, 1, 10, tzinfo=reader).utcoffset() == timedelta(hours=10)
    assert datetime(2004, 3, 28, 3, tzinfo=reader).utcoffset() == timedelta(hours=11)
