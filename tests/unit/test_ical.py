"""Tests for the iCalendar mapping in caljournal.adapters.ical."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

import icalendar
import pytest
import recurring_ical_events
from hypothesis import assume, given
from hypothesis import strategies as st

from caljournal.adapters.ical import (
    AppointmentView,
    ICalendarError,
    RemoteEvent,
    content_hash,
    from_ical,
    object_name,
    to_ical,
    vtimezone,
)

APPOINTMENT_ID = "0b6f3c1e-9d2a-4c59-8f1e-2f5b8a7c1d00"
DTSTAMP = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
BERLIN = ZoneInfo("Europe/Berlin")


def _state(**changes: Any) -> dict[str, Any]:
    state: dict[str, Any] = {
        "id": APPOINTMENT_ID,
        "account_id": "5e0f0c7a-1111-4c59-8f1e-2f5b8a7c1d00",
        "version": 1,
        "status": "booked",
        "title": "Haircut",
        "start": "2026-03-27T10:00:00+01:00",
        "end": "2026-03-27T11:00:00+01:00",
        "timezone": "Europe/Berlin",
        "location": "Salon Mitte",
        "description": "Wash and cut",
        "customer_name": "Jonas Weber",
        "customer_email": "jonas@example.org",
        "cancel_reason": None,
        "created_on": "2026-01-01T00:00:00+00:00",
        "modified_on": "2026-01-01T00:00:00+00:00",
    }
    state.update(changes)
    return state


def _ics(state: dict[str, Any] | None = None, dtstamp: datetime = DTSTAMP) -> bytes:
    return to_ical(AppointmentView.from_state(state or _state()), dtstamp)


def _lines(data: bytes | str) -> list[str]:
    text = data.decode() if isinstance(data, bytes) else data
    return [line for line in re.sub(r"\r?\n[ \t]", "", text).splitlines() if line]


def _fold(lines: list[str], width: int) -> bytes:
    folded = []
    for line in lines:
        chunks = [line[i : i + width] for i in range(0, len(line), width)]
        folded.append("\r\n ".join(chunks))
    return ("\r\n".join(folded) + "\r\n").encode()


def _only(data: bytes | str) -> RemoteEvent:
    [event] = from_ical(data)
    return event


def _calendar(*body: str, head: tuple[str, ...] = ()) -> str:
    return "\r\n".join(
        ("BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//Test//Test//EN", *head, *body)
        + ("END:VCALENDAR", "")
    )


def _event(*props: str, uid: str = "remote-1@example.org") -> tuple[str, ...]:
    return ("BEGIN:VEVENT", f"UID:{uid}", "DTSTAMP:20260101T000000Z", *props, "END:VEVENT")


# -- outbound ---------------------------------------------------------------------------


def test_view_from_state_derives_uid_sequence_and_zone() -> None:
    view = AppointmentView.from_state(_state(version=3, start="2026-03-27T09:00:00+00:00"))
    assert view.uid == f"{APPOINTMENT_ID}@caljournal"
    assert view.appointment_id == APPOINTMENT_ID
    assert view.sequence == 2
    assert view.start == datetime(2026, 3, 27, 10, tzinfo=BERLIN)
    assert view.start.tzinfo == BERLIN
    assert view.timezone == "Europe/Berlin"


def test_view_rejects_naive_times_and_unknown_zones() -> None:
    with pytest.raises(ValueError, match="offset"):
        AppointmentView.from_state(_state(start="2026-03-27T10:00:00"))
    with pytest.raises(ValueError, match="Mars/Olympus"):
        AppointmentView.from_state(_state(timezone="Mars/Olympus"))


def test_sequence_comes_from_the_content_sequence_or_the_version() -> None:
    assert "SEQUENCE:0" in _lines(_ics(_state(version=1)))
    assert "SEQUENCE:4" in _lines(_ics(_state(version=5)))
    assert "SEQUENCE:0" in _lines(_ics(_state(version=3, sequence=0)))
    assert "SEQUENCE:2" in _lines(_ics(_state(version=7, sequence=2)))


def test_output_is_deterministic() -> None:
    first = _ics()
    assert _ics() == first
    same_instant = _state(start="2026-03-27T09:00:00Z", end="2026-03-27T10:00:00+00:00")
    assert _ics(same_instant) == first
    assert _ics(dtstamp=DTSTAMP.astimezone(ZoneInfo("Asia/Tokyo"))) == first


def test_dtstamp_is_the_injected_utc_value_only() -> None:
    lines = _lines(_ics(dtstamp=datetime(2030, 5, 6, 7, 8, 9, 123, tzinfo=UTC)))
    assert "DTSTAMP:20300506T070809Z" in lines
    with pytest.raises(ValueError, match="dtstamp"):
        _ics(dtstamp=datetime(2030, 5, 6))


def test_calendar_envelope_and_event_properties() -> None:
    lines = _lines(_ics())
    assert lines[0] == "BEGIN:VCALENDAR"
    assert "PRODID:-//caljournal//caljournal//EN" in lines
    assert "VERSION:2.0" in lines
    assert f"UID:{APPOINTMENT_ID}@caljournal" in lines
    assert "SUMMARY:Haircut" in lines
    assert "LOCATION:Salon Mitte" in lines
    assert "STATUS:CONFIRMED" in lines
    assert f"X-CALJOURNAL-APPOINTMENT-ID:{APPOINTMENT_ID}" in lines
    assert "X-CALJOURNAL-CUSTOMER-NAME:Jonas Weber" in lines
    assert "X-CALJOURNAL-CUSTOMER-EMAIL:jonas@example.org" in lines
    assert "DESCRIPTION:Wash and cut\\n\\nCustomer: Jonas Weber <jonas@example.org>" in lines
    assert sum(line == "BEGIN:VEVENT" for line in lines) == 1
    assert sum(line == "BEGIN:VTIMEZONE" for line in lines) == 1


def test_cancelled_appointment_is_marked_cancelled() -> None:
    assert "STATUS:CANCELLED" in _lines(_ics(_state(status="cancelled")))


@pytest.mark.parametrize(("day", "utc_hour"), [(27, 9), (3, 8)])
def test_dst_neighbours_keep_local_wall_time(day: int, utc_hour: int) -> None:
    month = 3 if day == 27 else 4
    start = datetime(2026, month, day, 10, tzinfo=BERLIN)
    state = _state(start=start.isoformat(), end=(start + timedelta(hours=1)).isoformat())
    data = _ics(state)
    lines = _lines(data)
    assert f"DTSTART;TZID=Europe/Berlin:2026{month:02d}{day:02d}T100000" in lines
    assert f"DTEND;TZID=Europe/Berlin:2026{month:02d}{day:02d}T110000" in lines
    [vtz] = icalendar.Calendar.from_ical(data).walk("VTIMEZONE")
    assert vtz.standard
    assert vtz.daylight
    event = _only(data)
    assert event.start.astimezone(UTC) == datetime(2026, month, day, utc_hour, tzinfo=UTC)
    own_rules = vtz.to_tz(lookup_tzid=False)
    assert datetime(2026, month, day, 10, tzinfo=own_rules).utcoffset() == start.utcoffset()


def test_utc_appointment_uses_z_form_without_vtimezone() -> None:
    data = _ics(_state(timezone="UTC", start="2026-03-27T09:00:00Z", end="2026-03-27T10:00Z"))
    lines = _lines(data)
    assert "DTSTART:20260327T090000Z" in lines
    assert "DTEND:20260327T100000Z" in lines
    assert "BEGIN:VTIMEZONE" not in lines
    event = _only(data)
    assert event.timezone == "UTC"
    assert event.start == datetime(2026, 3, 27, 9, tzinfo=UTC)


def test_zone_equivalent_to_utc_keeps_its_own_tzid() -> None:
    data = _ics(
        _state(
            timezone="Atlantic/Reykjavik", start="2026-03-27T09:00:00Z", end="2026-03-27T10:00:00Z"
        )
    )
    assert "DTSTART;TZID=Atlantic/Reykjavik:20260327T090000" in _lines(data)
    assert _only(data).timezone == "Atlantic/Reykjavik"


def test_second_of_two_equal_wall_times_keeps_its_instant() -> None:
    start = datetime(2026, 10, 25, 1, 30, tzinfo=UTC).astimezone(BERLIN)
    assert (start.hour, start.fold) == (2, 1)
    end = datetime(2026, 10, 25, 1, 50, tzinfo=UTC).astimezone(BERLIN)
    data = _ics(_state(start=start.isoformat(), end=end.isoformat()))
    lines = _lines(data)
    assert "DTSTART:20261025T013000Z" in lines
    assert "DTEND:20261025T015000Z" in lines
    assert "BEGIN:VTIMEZONE" not in lines
    assert "X-CALJOURNAL-TIMEZONE:Europe/Berlin" in lines
    event = _only(data)
    assert event.timezone == "Europe/Berlin"
    assert event.start.astimezone(UTC) == start.astimezone(UTC)
    assert (event.start.hour, event.start.fold) == (2, 1)


def test_vtimezone_has_short_offset_periods() -> None:
    # Recife kept DST for one week in October 2000.
    vtz = vtimezone("America/Recife", 2000, 2000)
    wall = datetime(2000, 10, 10, 12, tzinfo=vtz.to_tz(lookup_tzid=False))
    assert wall.utcoffset() == timedelta(hours=-2)


def test_text_escaping_and_normalisation() -> None:
    state = _state(
        title="C:\\Notes; a, b",
        location=None,
        description="one\r\ntwo\rthree\x07",
        customer_name=None,
        customer_email=None,
    )
    data = _ics(state)
    assert "SUMMARY:C:\\\\Notes\\; a\\, b" in _lines(data)
    event = _only(data)
    assert event.title == "C:\\Notes; a, b"
    assert event.description == "one\ntwo\nthree"
    assert event.location is None
    assert (event.customer_name, event.customer_email) == (None, None)


def test_object_name() -> None:
    assert object_name(APPOINTMENT_ID) == f"{APPOINTMENT_ID}.ics"
    assert object_name(APPOINTMENT_ID.upper()) == f"{APPOINTMENT_ID}.ics"
    with pytest.raises(ValueError):
        object_name("../../etc/passwd")


# -- round trip ---------------------------------------------------------------------------

ZONES = sorted(
    name
    for name in available_timezones()
    if "/" in name and not name.startswith(("Etc/", "SystemV/"))
)
SAFE_CHARS = st.characters(
    exclude_categories=("Cs",),
    exclude_characters=[chr(c) for c in range(0x20) if c not in (0x09, 0x0A)] + ["\x7f"],
)
SPECIALS = st.sampled_from(
    [
        "",
        ",",
        ";",
        "\\",
        "\\N",
        "\\n",
        "a,b;c\\d",
        "line\nbreak",
        "\n\n",
        "Customer: x",
        "ümlaut 名前 😀",
        "<x@y.z>",
        ":",
        '"quoted"',
        "\t",
    ]
)
TEXT = st.one_of(
    st.text(SAFE_CHARS, max_size=60),
    SPECIALS,
    st.lists(st.one_of(SPECIALS, st.text(SAFE_CHARS, max_size=10)), max_size=8).map("".join),
    st.builds(
        lambda part, n: part * n, st.text(SAFE_CHARS, min_size=1, max_size=8), st.integers(20, 150)
    ),
)


@cache
def _transitions(zone: str, year: int) -> tuple[datetime, ...]:
    """Return the UTC instants in ``year`` at which ``zone`` changes its offset."""
    tz = ZoneInfo(zone)
    found = []
    step = datetime(year, 1, 1, tzinfo=UTC)
    while step.year == year:
        later = step + timedelta(hours=6)
        if step.astimezone(tz).utcoffset() != later.astimezone(tz).utcoffset():
            low, high = step, later
            while high - low > timedelta(seconds=1):
                mid = low + (high - low) / 2
                if mid.astimezone(tz).utcoffset() == low.astimezone(tz).utcoffset():
                    low = mid
                else:
                    high = mid
            found.append(high.replace(microsecond=0))
        step = later
    return tuple(found)


@st.composite
def periods(draw: st.DrawFn) -> tuple[str, datetime, datetime]:
    zone = draw(st.sampled_from(ZONES))
    year = draw(st.integers(2000, 2037))
    transitions = _transitions(zone, year)
    if transitions and draw(st.booleans()):
        base = draw(st.sampled_from(transitions))
        start = base + timedelta(seconds=draw(st.integers(-4 * 3600, 4 * 3600)))
    else:
        start = datetime(year, 1, 1, tzinfo=UTC) + timedelta(
            seconds=draw(st.integers(0, 365 * 86400))
        )
    length = draw(st.one_of(st.integers(1, 6 * 3600), st.integers(1, 366 * 86400)))
    tz = ZoneInfo(zone)
    return zone, start.astimezone(tz), (start + timedelta(seconds=length)).astimezone(tz)


def _same_moment(got: datetime, expected: datetime) -> None:
    assert got.replace(tzinfo=None) == expected.replace(tzinfo=None)
    assert got.fold == expected.fold
    assert got.astimezone(UTC) == expected.astimezone(UTC)


@given(
    period=periods(),
    title=TEXT,
    location=st.none() | TEXT,
    description=st.none() | TEXT,
    customer_name=st.none() | TEXT,
    customer_email=st.none() | TEXT,
    version=st.integers(1, 10_000),
)
def test_round_trip(
    period: tuple[str, datetime, datetime],
    title: str,
    location: str | None,
    description: str | None,
    customer_name: str | None,
    customer_email: str | None,
    version: int,
) -> None:
    zone, start, end = period
    try:
        vtimezone(zone, start.year, end.year)
        generated = True
    except (ValueError, OverflowError):
        generated = False
    assume(generated)
    view = AppointmentView.from_state(
        _state(
            timezone=zone,
            start=start.isoformat(),
            end=end.isoformat(),
            title=title,
            location=location,
            description=description,
            customer_name=customer_name,
            customer_email=customer_email,
            version=version,
        )
    )
    data = to_ical(view, DTSTAMP)
    assert to_ical(view, DTSTAMP) == data

    event = _only(data)
    assert event.uid == view.uid
    assert event.appointment_id == APPOINTMENT_ID
    assert event.timezone == zone
    _same_moment(event.start, start)
    _same_moment(event.end, end)
    assert (event.title, event.location, event.description) == (title, location, description)
    assert (event.customer_name, event.customer_email) == (customer_name, customer_email)
    assert event.sequence == version - 1
    assert (event.all_day, event.floating, event.rrule, event.recurrence_id) == (
        False,
        False,
        (),
        None,
    )

    calendar = icalendar.Calendar.from_ical(data)
    [occurrence] = list(recurring_ical_events.of(calendar).all())
    assert occurrence.start.astimezone(UTC) == start.astimezone(UTC)
    assert occurrence.end.astimezone(UTC) == end.astimezone(UTC)

    # The VTIMEZONE alone (without the reader's own zone data) gives the same offsets.
    vevent = calendar.walk("VEVENT")[0]
    for name, expected in (("DTSTART", start), ("DTEND", end)):
        if "TZID" in vevent[name].params:
            [vtz] = calendar.walk("VTIMEZONE")
            own = vevent[name].dt.replace(tzinfo=vtz.to_tz(lookup_tzid=False))
            assert own.utcoffset() == expected.utcoffset(), (name, expected)
    assert all(len(line) <= 75 for line in data.split(b"\r\n"))


# -- content hash -------------------------------------------------------------------------


def test_content_hash_ignores_reformatting() -> None:
    original = _ics()
    lines = _lines(original)
    begin, end = lines.index("BEGIN:VEVENT"), lines.index("END:VEVENT")
    props = [line for line in lines[begin + 1 : end] if not line.startswith("DTSTAMP")]
    props = [re.sub(r"^DTSTART;TZID=", "DTSTART;tzid=", line) for line in props]
    props = [line.replace("SEQUENCE:0", "SEQUENCE:7") for line in props]
    reformatted = (
        [
            "BEGIN:VCALENDAR",
            "PRODID:-//Apple Inc.//macOS 15.0//EN",
            "VERSION:2.0",
            "BEGIN:VEVENT",
            "X-MOZ-GENERATION:3",
            "DTSTAMP:20991231T235959Z",
            "LAST-MODIFIED:20991231T235959Z",
            "CREATED:20991231T235959Z",
            "TRANSP:OPAQUE",
        ]
        + list(reversed(props))
        + ["BEGIN:VALARM", "ACTION:DISPLAY", "TRIGGER:-PT15M", "END:VALARM"]
        + ["END:VEVENT", "END:VCALENDAR"]
    )
    assert content_hash(_fold(reformatted, 30)) == content_hash(original)
    assert content_hash(original.decode()) == content_hash(original)
    assert content_hash(_ics(dtstamp=DTSTAMP + timedelta(days=3))) == content_hash(original)
    assert content_hash(_ics(_state(version=9))) == content_hash(original)


@pytest.mark.parametrize(
    "changes",
    [
        {"title": "Haircut and beard"},
        {"start": "2026-03-27T10:30:00+01:00"},
        {"customer_email": "other@example.org"},
        {"status": "cancelled"},
    ],
)
def test_content_hash_sees_content_changes(changes: dict[str, str]) -> None:
    assert content_hash(_ics(_state(**changes))) != content_hash(_ics())


def test_content_hash_rejects_garbage() -> None:
    with pytest.raises(ICalendarError):
        content_hash(b"not a calendar")


# -- inbound samples ----------------------------------------------------------------------

BERLIN_VTIMEZONE = (
    "BEGIN:VTIMEZONE",
    "TZID:Europe/Berlin",
    "BEGIN:DAYLIGHT",
    "TZOFFSETFROM:+0100",
    "RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU",
    "DTSTART:19810329T020000",
    "TZNAME:CEST",
    "TZOFFSETTO:+0200",
    "END:DAYLIGHT",
    "BEGIN:STANDARD",
    "TZOFFSETFROM:+0200",
    "RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU",
    "DTSTART:19961027T030000",
    "TZNAME:CET",
    "TZOFFSETTO:+0100",
    "END:STANDARD",
    "END:VTIMEZONE",
)


def test_apple_style_event() -> None:
    data = _calendar(
        *BERLIN_VTIMEZONE,
        *_event(
            "CREATED:20260320T120000Z",
            "DTSTART;TZID=Europe/Berlin:20260327T100000",
            "DTEND;TZID=Europe/Berlin:20260327T113000",
            "SUMMARY:Dentist",
            "LOCATION:Hauptstr. 1\\, Berlin",
            "DESCRIPTION:Bring the card",
            "SEQUENCE:1",
            "X-APPLE-TRAVEL-ADVISORY-BEHAVIOR:AUTOMATIC",
            "TRANSP:OPAQUE",
            uid="A1B2C3D4-E5F6-4711-8899-001122334455",
        ),
        head=("CALSCALE:GREGORIAN",),
    )
    event = _only(data.encode())
    assert event.uid == "A1B2C3D4-E5F6-4711-8899-001122334455"
    assert event.start == datetime(2026, 3, 27, 10, tzinfo=BERLIN)
    assert event.end == datetime(2026, 3, 27, 11, 30, tzinfo=BERLIN)
    assert event.timezone == "Europe/Berlin"
    assert (event.title, event.location) == ("Dentist", "Hauptstr. 1, Berlin")
    assert event.description == "Bring the card"
    assert (event.customer_name, event.customer_email, event.appointment_id) == (None,) * 3
    assert (event.sequence, event.status, event.all_day, event.floating) == (1, None, False, False)


def test_google_style_utc_event() -> None:
    body = _event(
        "DTSTART:20260327T090000Z", "DTEND:20260327T100000Z", "SUMMARY:Call", "STATUS:confirmed"
    )
    event = _only(_calendar(*body))
    assert event.timezone == "UTC"
    assert event.start == datetime(2026, 3, 27, 9, tzinfo=UTC)
    assert event.status == "CONFIRMED"
    hinted = _only(_calendar(*body, head=("X-WR-TIMEZONE:Europe/Berlin",)))
    assert hinted.timezone == "Europe/Berlin"
    assert hinted.start.replace(tzinfo=None) == datetime(2026, 3, 27, 10)
    assert hinted.start == event.start


@pytest.mark.parametrize("with_vtimezone", [True, False])
def test_outlook_windows_tzid_maps_to_iana(with_vtimezone: bool) -> None:
    vtz = (
        "BEGIN:VTIMEZONE",
        "TZID:W. Europe Standard Time",
        "BEGIN:STANDARD",
        "DTSTART:16010101T030000",
        "TZOFFSETFROM:+0200",
        "TZOFFSETTO:+0100",
        "RRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=10",
        "END:STANDARD",
        "BEGIN:DAYLIGHT",
        "DTSTART:16010101T020000",
        "TZOFFSETFROM:+0100",
        "TZOFFSETTO:+0200",
        "RRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=3",
        "END:DAYLIGHT",
        "END:VTIMEZONE",
    )
    data = _calendar(
        *(vtz if with_vtimezone else ()),
        *_event(
            'DTSTART;TZID="W. Europe Standard Time":20260403T100000',
            'DTEND;TZID="W. Europe Standard Time":20260403T110000',
            "SUMMARY:Sync",
        ),
    )
    event = _only(data)
    assert event.timezone == "Europe/Berlin"
    assert event.start == datetime(2026, 4, 3, 10, tzinfo=BERLIN)
    assert event.start.astimezone(UTC).hour == 8


@pytest.mark.filterwarnings("ignore::icalendar.error.GloballyUniqueTZIDGuessed")
def test_globally_unique_tzid_maps_to_iana() -> None:
    event = _only(
        _calendar(
            *_event(
                "DTSTART;TZID=/freeassociation.sourceforge.net/Europe/Berlin:20260403T100000",
                "DTEND;TZID=/freeassociation.sourceforge.net/Europe/Berlin:20260403T110000",
            )
        )
    )
    assert event.timezone == "Europe/Berlin"


def test_unknown_tzid_without_vtimezone_is_an_error() -> None:
    data = _calendar(
        *_event(
            "DTSTART;TZID=Mars/Olympus_Mons:20260403T100000",
            "DTEND;TZID=Mars/Olympus_Mons:20260403T110000",
        )
    )
    with pytest.raises(ICalendarError, match="Mars/Olympus_Mons"):
        from_ical(data)


@pytest.mark.parametrize(("offset", "utc_hour"), [("+0100", 9), ("+0500", 5)])
def test_custom_tzid_uses_the_objects_own_vtimezone(offset: str, utc_hour: int) -> None:
    # Both objects define "Customized Time Zone"; each must use its own definition.
    vtz = (
        "BEGIN:VTIMEZONE",
        "TZID:Customized Time Zone",
        "BEGIN:STANDARD",
        "DTSTART:16010101T000000",
        f"TZOFFSETFROM:{offset}",
        f"TZOFFSETTO:{offset}",
        "END:STANDARD",
        "END:VTIMEZONE",
    )
    data = _calendar(
        *vtz,
        *_event(
            "DTSTART;TZID=Customized Time Zone:20260403T100000",
            "DTEND;TZID=Customized Time Zone:20260403T110000",
        ),
    )
    event = _only(data)
    assert event.timezone is None
    assert event.start.astimezone(UTC) == datetime(2026, 4, 3, utc_hour, tzinfo=UTC)
    assert event.end - event.start == timedelta(hours=1)


def test_all_day_events() -> None:
    event = _only(
        _calendar(
            *_event("DTSTART;VALUE=DATE:20260327", "DTEND;VALUE=DATE:20260329", "SUMMARY:Trip")
        )
    )
    assert (event.all_day, event.floating) == (True, False)
    assert (event.start, event.end) == (date(2026, 3, 27), date(2026, 3, 29))
    assert event.timezone is None
    one_day = _only(_calendar(*_event("DTSTART;VALUE=DATE:20260327")))
    assert (one_day.start, one_day.end) == (date(2026, 3, 27), date(2026, 3, 28))
    two_days = _only(_calendar(*_event("DTSTART;VALUE=DATE:20260327", "DURATION:P2D")))
    assert two_days.end == date(2026, 3, 29)


def test_floating_event_stays_naive() -> None:
    event = _only(_calendar(*_event("DTSTART:20260327T100000", "DTEND:20260327T110000")))
    assert event.floating
    assert event.start == datetime(2026, 3, 27, 10)
    assert event.start.tzinfo is None and event.end.tzinfo is None
    assert event.timezone is None
    hinted = _only(
        _calendar(*_event("DTSTART:20260327T100000"), head=("X-WR-TIMEZONE:Europe/Berlin",))
    )
    assert (hinted.floating, hinted.timezone) == (True, "Europe/Berlin")
    assert hinted.end == hinted.start  # no DTEND, no DURATION: zero length


def test_duration_days_follow_wall_clock_and_hours_are_exact() -> None:
    start = "DTSTART;TZID=Europe/Berlin:20260328T100000"
    days = _only(_calendar(*_event(start, "DURATION:P1D")))
    hours = _only(_calendar(*_event(start, "DURATION:PT24H")))
    assert days.end == datetime(2026, 3, 29, 10, tzinfo=BERLIN)
    assert hours.end == datetime(2026, 3, 29, 11, tzinfo=BERLIN)


def test_recurring_event_with_exdate_and_override() -> None:
    data = _calendar(
        *BERLIN_VTIMEZONE,
        *_event(
            "DTSTART;TZID=Europe/Berlin:20260403T100000",
            "DTEND;TZID=Europe/Berlin:20260403T110000",
            "SUMMARY:Weekly",
            "RRULE:FREQ=WEEKLY;COUNT=4",
            "EXDATE;TZID=Europe/Berlin:20260410T100000",
            uid="series@example.org",
        ),
        *_event(
            "RECURRENCE-ID;TZID=Europe/Berlin:20260417T100000",
            "DTSTART;TZID=Europe/Berlin:20260417T120000",
            "DTEND;TZID=Europe/Berlin:20260417T130000",
            "SUMMARY:Weekly (moved)",
            "SEQUENCE:2",
            uid="series@example.org",
        ),
    )
    master, moved = from_ical(data)
    assert master.uid == moved.uid == "series@example.org"
    assert master.rrule == ("RRULE:FREQ=WEEKLY;COUNT=4",)
    assert master.exdate == ("EXDATE;TZID=Europe/Berlin:20260410T100000",)
    assert (master.rdate, master.recurrence_id) == ((), None)
    assert moved.recurrence_id == datetime(2026, 4, 17, 10, tzinfo=BERLIN)
    assert moved.start == datetime(2026, 4, 17, 12, tzinfo=BERLIN)
    assert (moved.rrule, moved.sequence, moved.title) == ((), 2, "Weekly (moved)")
    starts = [o.start for o in recurring_ical_events.of(icalendar.Calendar.from_ical(data)).all()]
    assert [s.astimezone(UTC).hour for s in starts] == [8, 10, 8]


def test_cancelled_remote_event() -> None:
    event = _only(_calendar(*_event("DTSTART:20260327T090000Z", "STATUS:CANCELLED")))
    assert event.status == "CANCELLED"


def test_customer_block_is_stripped_when_our_properties_are_gone() -> None:
    data = _calendar(
        *_event(
            "DTSTART:20260327T090000Z",
            "DTEND:20260327T100000Z",
            "DESCRIPTION:Wash and cut\\n\\nCustomer: Jonas Weber <jonas@example.org>",
            uid=f"{APPOINTMENT_ID}@caljournal",
        )
    )
    event = _only(data)
    assert event.appointment_id == APPOINTMENT_ID
    assert event.description == "Wash and cut"
    assert (event.customer_name, event.customer_email) == ("Jonas Weber", "jonas@example.org")


def test_customer_block_is_stripped_after_a_remote_edit() -> None:
    edited = _lines(_ics())
    edited = [
        "DESCRIPTION:Please be on time\\n\\nCustomer: J. Weber <jonas@example.org>"
        if line.startswith("DESCRIPTION")
        else line
        for line in edited
    ]
    event = _only(_fold(edited, 70))
    assert event.description == "Please be on time"
    assert (event.customer_name, event.customer_email) == ("Jonas Weber", "jonas@example.org")


def test_foreign_description_keeps_a_customer_line() -> None:
    data = _calendar(*_event("DTSTART:20260327T090000Z", "DESCRIPTION:Customer: ACME"))
    event = _only(data)
    assert (event.description, event.customer_name) == ("Customer: ACME", None)


def test_vtodo_only_object_is_an_error() -> None:
    data = _calendar(
        "BEGIN:VTODO", "UID:todo-1", "DTSTAMP:20260101T000000Z", "SUMMARY:Buy milk", "END:VTODO"
    )
    with pytest.raises(ICalendarError, match="VTODO"):
        from_ical(data)


@pytest.mark.parametrize(
    "data",
    [
        b"garbage",
        b"",
        b"\xff\xfe\x00B\x00E",
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\n",
        "BEGIN:VEVENT\r\nUID:x\r\nEND:VEVENT\r\n",
    ],
)
def test_unparseable_data_is_an_error(data: bytes | str) -> None:
    with pytest.raises(ICalendarError):
        from_ical(data)


@pytest.mark.parametrize(
    ("props", "reason"),
    [
        (("DTSTART:20260327T100000Z", "DTEND:20260327T090000Z"), "before DTSTART"),
        (("DTSTART:20260327T100000Z", "DURATION:-PT1H"), "negative DURATION"),
        (("DTSTART:not-a-date",), "DTSTART"),
        (("SUMMARY:no start",), "no DTSTART"),
        (("DTSTART;VALUE=DATE:20260327", "DTEND:20260327T100000Z"), "mixes DATE"),
        (("DTSTART:20260327T100000", "DTEND:20260327T110000Z"), "floating"),
    ],
)
def test_broken_event_is_an_error(props: tuple[str, ...], reason: str) -> None:
    with pytest.raises(ICalendarError, match=reason):
        from_ical(_calendar(*_event(*props)))


def test_huge_description_is_an_error() -> None:
    data = _calendar(*_event("DTSTART:20260327T100000Z", "DESCRIPTION:" + "x" * 1_000_001))
    with pytest.raises(ICalendarError, match="1000000"):
        from_ical(data)
    assert _only(
        _calendar(*_event("DTSTART:20260327T100000Z", "DESCRIPTION:" + "x" * 1_000_000))
    ).description


def test_more_than_one_uid_is_an_error() -> None:
    data = _calendar(
        *_event("DTSTART:20260327T100000Z", uid="a@example.org"),
        *_event("DTSTART:20260328T100000Z", uid="b@example.org"),
    )
    with pytest.raises(ICalendarError, match="more than one UID"):
        from_ical(data)
