"""Tests for imported calendar shapes in caljournal.adapters.ical and ical_expand.

Covers the remote UID, all-day and floating events, recurrence lines written
back verbatim, overrides as extra VEVENTs, VTIMEZONE coverage and expansion.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

import icalendar
import pytest
import recurring_ical_events
from hypothesis import assume, given
from hypothesis import strategies as st

from caljournal.adapters.ical import (
    AppointmentView,
    RemoteEvent,
    content_hash,
    from_ical,
    to_ical,
    vtimezone,
)
from caljournal.adapters.ical_expand import Occurrence, expand
from tests.support.samples import APPLE_BERLIN_VTIMEZONE

APPOINTMENT_ID = "0b6f3c1e-9d2a-4c59-8f1e-2f5b8a7c1d00"
DTSTAMP = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
SERIES_UID = "series-7f3a@example.org"
WIDE = (datetime(2020, 1, 1, tzinfo=UTC), datetime(2035, 1, 1, tzinfo=UTC))


def _state(**changes: Any) -> dict[str, Any]:
    state: dict[str, Any] = {
        "id": APPOINTMENT_ID,
        "account_id": "5e0f0c7a-1111-4c59-8f1e-2f5b8a7c1d00",
        "version": 1,
        "status": "booked",
        "title": "Physio",
        "start": "2026-03-13T10:00:00+01:00",
        "end": "2026-03-13T11:00:00+01:00",
        "timezone": "Europe/Berlin",
        "location": "Praxis",
        "description": "Bring the referral",
        "customer_name": None,
        "customer_email": None,
        "cancel_reason": None,
        "created_on": "2026-01-01T00:00:00+00:00",
        "modified_on": "2026-01-01T00:00:00+00:00",
    }
    state.update(changes)
    return state


def _override(rid: str, start: str, end: str, **changes: Any) -> dict[str, Any]:
    override: dict[str, Any] = {
        "recurrence_id": rid,
        "start": start,
        "end": end,
        "title": None,
        "location": None,
        "description": None,
        "status": None,
    }
    override.update(changes)
    return override


MOVED = _override(
    "RECURRENCE-ID;TZID=Europe/Berlin:20260403T100000",
    "2026-04-03T12:00:00+02:00",
    "2026-04-03T13:30:00+02:00",
    title="Physio (later)",
)
CANCELLED = _override(
    "RECURRENCE-ID;TZID=Europe/Berlin:20260410T100000",
    "2026-04-10T10:00:00+02:00",
    "2026-04-10T11:00:00+02:00",
    status="CANCELLED",
)
# Weekly on Fridays from 13 March 2026; Berlin moves to summer time on 29 March.
RULE = "RRULE:FREQ=WEEKLY;COUNT=5"
EXDATE = "EXDATE;TZID=Europe/Berlin:20260327T100000"
RDATE = "RDATE;TZID=Europe/Berlin:20260502T090000"


def _recurring(**changes: Any) -> dict[str, Any]:
    recurrence: dict[str, Any] = {
        "rrule": [RULE],
        "rdate": [RDATE],
        "exdate": [EXDATE],
        "overrides": [MOVED, CANCELLED],
    }
    recurrence.update(changes)
    return _state(calendar_uid=SERIES_UID, recurrence=recurrence)


def _ics(state: dict[str, Any]) -> bytes:
    return to_ical(AppointmentView.from_state(state), DTSTAMP)


def _lines(data: bytes | str) -> list[str]:
    text = data.decode() if isinstance(data, bytes) else data
    return [line for line in re.sub(r"\r?\n[ \t]", "", text).splitlines() if line]


def _split(events: list[RemoteEvent]) -> tuple[RemoteEvent, list[RemoteEvent]]:
    [master] = [event for event in events if event.recurrence_id is None]
    return master, [event for event in events if event.recurrence_id is not None]


def _iso(event: RemoteEvent, value: date | datetime) -> str:
    """Return a RemoteEvent time as the state writes it."""
    if event.all_day:
        return datetime.combine(value, time(), tzinfo=ZoneInfo(event.timezone or "UTC")).isoformat()
    assert isinstance(value, datetime)
    return (value.replace(tzinfo=UTC) if event.floating else value).isoformat()


def _state_from_remote(events: list[RemoteEvent]) -> dict[str, Any]:
    """Build an appointment state from the RemoteEvents of one imported object."""
    master, overrides = _split(events)
    zone = "UTC" if master.floating else master.timezone or "UTC"
    return _state(
        calendar_uid=master.uid,
        title=master.title or "",
        start=_iso(master, master.start),
        end=_iso(master, master.end),
        timezone=zone,
        location=master.location,
        description=master.description,
        sequence=master.sequence,
        status="cancelled" if master.status == "CANCELLED" else "booked",
        all_day=master.all_day,
        floating=master.floating,
        recurrence={
            "rrule": list(master.rrule),
            "rdate": list(master.rdate),
            "exdate": list(master.exdate),
            "overrides": [
                _override(
                    event.recurrence_id_line,
                    _iso(master, event.start),
                    _iso(master, event.end),
                    title=event.title,
                    location=event.location,
                    description=event.description,
                    status=event.status,
                )
                for event in overrides
            ],
        },
    )


def _shape(event: RemoteEvent, master: RemoteEvent | None = None) -> tuple[Any, ...]:
    """Return what must survive a rewrite; with ``master``, its texts fill the gaps."""
    texts = (event.title, event.location)
    if master is not None:
        texts = tuple(
            mine if mine is not None else fallback
            for mine, fallback in zip(texts, (master.title, master.location), strict=True)
        )
    return (
        event.uid,
        event.recurrence_id_line,
        event.recurrence_id,
        event.start,
        event.end,
        *texts,
    )


def _starts(occurrences: list[Occurrence]) -> list[datetime]:
    return [occurrence.start for occurrence in occurrences]


# -- writing and reading back ---------------------------------------------------------------


def test_round_trip_keeps_rule_lines_and_overrides() -> None:
    data = _ics(_recurring())
    master, overrides = _split(from_ical(data))
    assert master.uid == SERIES_UID
    assert (master.rrule, master.rdate, master.exdate) == ((RULE,), (RDATE,), (EXDATE,))
    assert master.start == datetime(2026, 3, 13, 10, tzinfo=BERLIN)
    moved, cancelled = overrides
    assert moved.uid == cancelled.uid == SERIES_UID
    assert moved.recurrence_id_line == MOVED["recurrence_id"]
    assert moved.recurrence_id == datetime(2026, 4, 3, 10, tzinfo=BERLIN)
    assert (moved.start, moved.end) == (
        datetime(2026, 4, 3, 12, tzinfo=BERLIN),
        datetime(2026, 4, 3, 13, 30, tzinfo=BERLIN),
    )
    assert moved.title == "Physio (later)"
    assert (moved.location, moved.description) == ("Praxis", "Bring the referral")  # master's
    assert (moved.status, moved.sequence) == (None, master.sequence)
    assert cancelled.recurrence_id_line == CANCELLED["recurrence_id"]
    assert (cancelled.status, cancelled.title) == ("CANCELLED", "Physio")
    assert (moved.rrule, moved.exdate, cancelled.rdate) == ((), (), ())
    lines = _lines(data)
    assert sum(line == "BEGIN:VEVENT" for line in lines) == 3
    assert sum(line == "BEGIN:VTIMEZONE" for line in lines) == 1
    assert all(len(line) <= 75 for line in data.split(b"\r\n"))


def test_uid_defaults_to_the_appointment_id() -> None:
    state = _recurring()
    del state["calendar_uid"]
    assert {event.uid for event in from_ical(_ics(state))} == {f"{APPOINTMENT_ID}@caljournal"}


def test_long_and_unusual_lines_come_back_verbatim() -> None:
    days = ",".join(f"202603{day:02d}T100000" for day in (13, 20, 27))
    exdate = f'EXDATE;TZID="Europe/Berlin":{days},20260403T100000,20260410T100000,20260417T100000'
    rule = "RRULE:FREQ=DAILY;INTERVAL=7;BYHOUR=10;BYMINUTE=0;WKST=MO;COUNT=40"
    data = _ics(_recurring(rrule=[rule], exdate=[exdate], rdate=[], overrides=[]))
    assert any(len(line) > 75 for line in _lines(data))  # it was folded ...
    master, _ = _split(from_ical(data))
    assert (master.rrule, master.exdate) == ((rule,), (exdate,))  # ... and unfolds to itself


def test_customer_block_and_identity_on_overrides() -> None:
    state = _recurring()
    state.update(customer_name="Jonas Weber", customer_email="jonas@example.org")
    for event in from_ical(_ics(state)):
        assert event.appointment_id == APPOINTMENT_ID
        assert (event.customer_name, event.customer_email) == ("Jonas Weber", "jonas@example.org")
        assert event.description == "Bring the referral"


def test_all_day_round_trip() -> None:
    state = _state(
        start="2026-03-27T00:00:00+01:00",
        end="2026-03-29T00:00:00+01:00",
        all_day=True,
        recurrence={
            "rrule": ["RRULE:FREQ=YEARLY;COUNT=3"],
            "exdate": ["EXDATE;VALUE=DATE:20270327"],
        },
    )
    data = _ics(state)
    lines = _lines(data)
    assert "DTSTART;VALUE=DATE:20260327" in lines
    assert "DTEND;VALUE=DATE:20260329" in lines
    assert "BEGIN:VTIMEZONE" not in lines
    assert not any("TZID" in line for line in lines)
    event = from_ical(data)[0]
    assert (event.all_day, event.floating) == (True, False)
    assert (event.start, event.end) == (date(2026, 3, 27), date(2026, 3, 29))
    assert event.exdate == ("EXDATE;VALUE=DATE:20270327",)


def test_floating_round_trip() -> None:
    # The offset of a floating time means nothing: only its wall clock is written.
    state = _state(
        start="2026-03-27T10:15:00+05:00",
        end="2026-03-27T11:45:00+05:00",
        timezone="UTC",
        floating=True,
    )
    data = _ics(state)
    lines = _lines(data)
    assert "DTSTART:20260327T101500" in lines
    assert "DTEND:20260327T114500" in lines
    assert "BEGIN:VTIMEZONE" not in lines
    assert not any("TZID" in line or "X-CALJOURNAL-TIMEZONE" in line for line in lines)
    [event] = from_ical(data)
    assert (event.all_day, event.floating) == (False, True)
    assert (event.start, event.end) == (
        datetime(2026, 3, 27, 10, 15),
        datetime(2026, 3, 27, 11, 45),
    )


def test_floating_overrides_stay_floating() -> None:
    state = _state(
        start="2026-03-27T10:00:00+00:00",
        end="2026-03-27T11:00:00+00:00",
        timezone="UTC",
        floating=True,
        recurrence={
            "rrule": ["RRULE:FREQ=DAILY;COUNT=3"],
            "overrides": [
                _override(
                    "RECURRENCE-ID:20260328T100000",
                    "2026-03-28T14:00:00-07:00",
                    "2026-03-28T15:00:00-07:00",
                )
            ],
        },
    )
    _, [moved] = _split(from_ical(_ics(state)))
    assert moved.floating
    assert (moved.recurrence_id, moved.start) == (
        datetime(2026, 3, 28, 10),
        datetime(2026, 3, 28, 14),
    )
    starts = _starts(expand(state, *WIDE))
    assert [s.replace(tzinfo=None) for s in starts] == [
        datetime(2026, 3, 27, 10),
        datetime(2026, 3, 28, 14),
        datetime(2026, 3, 29, 10),
    ]


def test_state_without_the_new_keys_renders_as_before() -> None:
    plain = _state()
    falsy = _state(calendar_uid=None, all_day=False, floating=False, recurrence=None)
    assert _ics(falsy) == _ics(plain)
    assert content_hash(_ics(falsy)) == content_hash(_ics(plain))


@pytest.mark.parametrize(
    "changes",
    [
        {"rrule": ["RRULE:FREQ=WEEKLY;COUNT=6"]},
        {"rdate": []},
        {"exdate": ["EXDATE;TZID=Europe/Berlin:20260320T100000"]},
        {"overrides": [MOVED]},
        {"overrides": [dict(MOVED, start="2026-04-03T12:30:00+02:00"), CANCELLED]},
        {"overrides": [MOVED, dict(CANCELLED, status=None)]},
    ],
)
def test_content_hash_sees_recurrence_changes(changes: dict[str, Any]) -> None:
    original = _ics(_recurring())
    assert content_hash(_ics(_recurring())) == content_hash(original)
    assert content_hash(_ics(_recurring(**changes))) != content_hash(original)


def _covered_years(data: bytes, tzid: str = "Europe/Berlin") -> tuple[int, int]:
    [vtz] = [
        tz for tz in icalendar.Calendar.from_ical(data).walk("VTIMEZONE") if tz["TZID"] == tzid
    ]
    years = []
    for sub in vtz.subcomponents:  # each onset is a DTSTART or an RDATE
        onset: Any = sub["DTSTART"]
        years.append(onset.dt.year)
        rdates = sub.get("RDATE", [])
        for rdate in rdates if isinstance(rdates, list) else [rdates]:
            years += [period.dt.year for period in rdate.dts]
    return min(years), max(years)


@pytest.mark.parametrize(
    ("rule", "years"),
    [
        ("RRULE:FREQ=WEEKLY;COUNT=5", (2026, 2026)),
        ("RRULE:FREQ=MONTHLY;COUNT=30", (2026, 2028)),
        ("RRULE:FREQ=YEARLY;UNTIL=20310313T090000Z", (2026, 2031)),
        ("RRULE:FREQ=WEEKLY", (2026, 2036)),  # unbounded: ten years after the start
        ("RRULE:FREQ=YEARLY;UNTIL=29991231T000000Z", (2026, 2126)),  # capped
    ],
)
def test_vtimezone_covers_the_rule(rule: str, years: tuple[int, int]) -> None:
    data = _ics(_recurring(rrule=[rule], rdate=[], overrides=[]))
    assert _covered_years(data) == years


def test_vtimezone_covers_overrides_and_rdates() -> None:
    moved_late = _override(
        "RECURRENCE-ID;TZID=Europe/Berlin:20260403T100000",
        "2028-01-05T10:00:00+01:00",
        "2028-01-05T11:00:00+01:00",
    )
    rdate = "RDATE;VALUE=PERIOD;TZID=Europe/Berlin:20250101T100000/PT1H"
    data = _ics(_recurring(rdate=[rdate], overrides=[moved_late]))
    assert _covered_years(data) == (2025, 2028)


def test_foreign_tzid_in_verbatim_lines_gets_its_own_vtimezone() -> None:
    exdate = 'EXDATE;TZID="W. Europe Standard Time":20260327T100000'
    state = _recurring(exdate=[exdate], rdate=[], overrides=[])
    data = _ics(state)
    assert _covered_years(data, "W. Europe Standard Time") == (2026, 2026)
    assert _covered_years(data) == (2026, 2026)
    assert datetime(2026, 3, 27, 10, tzinfo=BERLIN) not in _starts(expand(state, *WIDE))
    assert len(expand(state, *WIDE)) == 4


@pytest.mark.parametrize(
    "recurrence",
    [
        {"rrule": ["EXDATE:20260327T100000"]},
        {"rrule": "RRULE:FREQ=DAILY"},
        {"exdate": ["EXDATE;TZID=Europe/Berlin:20260327T100000\r\nATTENDEE:mailto:x@y.z"]},
        {"rdate": ["no colon at all"]},
        {"overrides": [dict(MOVED, recurrence_id="DTSTART:20260403T100000")]},
        {"overrides": [dict(MOVED, start="2026-04-03T12:00:00")]},
        {"overrides": [dict(MOVED, status="not a status")]},
    ],
)
def test_unusable_recurrence_is_rejected(recurrence: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        AppointmentView.from_state(_state(recurrence=recurrence))


def test_uid_with_a_line_break_and_all_day_floating_mix_are_rejected() -> None:
    with pytest.raises(ValueError, match="uid"):
        AppointmentView.from_state(_state(calendar_uid="a@b\r\nX-INJECTED:1"))
    with pytest.raises(ValueError, match="all-day"):
        AppointmentView.from_state(_state(all_day=True, floating=True))


# -- remote samples ---------------------------------------------------------------------------

APPLE = (
    """BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//Apple Inc.//macOS 15.3//EN
CALSCALE:GREGORIAN
"""
    + APPLE_BERLIN_VTIMEZONE
    + """BEGIN:VEVENT
CREATED:20260301T101500Z
UID:6BE2C2D8-3F5A-4C1E-9A57-1D2E3F405162
RRULE:FREQ=WEEKLY;UNTIL=20260424T075959Z
DTEND;TZID=Europe/Berlin:20260320T110000
TRANSP:OPAQUE
X-APPLE-TRAVEL-ADVISORY-BEHAVIOR:AUTOMATIC
SUMMARY:Physio
LAST-MODIFIED:20260305T090000Z
DTSTAMP:20260305T090000Z
DTSTART;TZID=Europe/Berlin:20260320T100000
SEQUENCE:2
EXDATE;TZID=Europe/Berlin:20260327T100000
BEGIN:VALARM
X-WR-ALARMUID:0D1C2B3A-4F5E-6D7C-8B9A-0A1B2C3D4E5F
UID:0D1C2B3A-4F5E-6D7C-8B9A-0A1B2C3D4E5F
TRIGGER:-PT15M
ACTION:DISPLAY
DESCRIPTION:Reminder
END:VALARM
END:VEVENT
BEGIN:VEVENT
CREATED:20260301T101500Z
UID:6BE2C2D8-3F5A-4C1E-9A57-1D2E3F405162
DTEND;TZID=Europe/Berlin:20260403T130000
TRANSP:OPAQUE
SUMMARY:Physio (later)
DTSTART;TZID=Europe/Berlin:20260403T120000
DTSTAMP:20260305T090000Z
SEQUENCE:3
RECURRENCE-ID;TZID=Europe/Berlin:20260403T100000
LOCATION:Praxis am Markt
END:VEVENT
END:VCALENDAR
"""
).replace("\n", "\r\n")

GOOGLE = """BEGIN:VCALENDAR
PRODID:-//Google Inc//Google Calendar 70.9054//EN
VERSION:2.0
CALSCALE:GREGORIAN
METHOD:PUBLISH
X-WR-CALNAME:Studio
X-WR-TIMEZONE:America/New_York
BEGIN:VTIMEZONE
TZID:America/New_York
X-LIC-LOCATION:America/New_York
BEGIN:DAYLIGHT
TZOFFSETFROM:-0500
TZOFFSETTO:-0400
TZNAME:EDT
DTSTART:19700308T020000
RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=2SU
END:DAYLIGHT
BEGIN:STANDARD
TZOFFSETFROM:-0400
TZOFFSETTO:-0500
TZNAME:EST
DTSTART:19701101T020000
RRULE:FREQ=YEARLY;BYMONTH=11;BYDAY=1SU
END:STANDARD
END:VTIMEZONE
BEGIN:VEVENT
DTSTART;TZID=America/New_York:20260302T090000
DTEND;TZID=America/New_York:20260302T093000
RRULE:FREQ=WEEKLY;WKST=SU;COUNT=6;BYDAY=MO,WE
EXDATE;TZID=America/New_York:20260304T090000
DTSTAMP:20260301T120000Z
UID:4q2l8m0c1n7f5s3k9d6h2j1p0r@google.com
CREATED:20260215T170000Z
DESCRIPTION:Weekly check-in\\, bring notes
LAST-MODIFIED:20260301T115900Z
LOCATION:
SEQUENCE:0
STATUS:CONFIRMED
SUMMARY:Check-in
TRANSP:OPAQUE
END:VEVENT
BEGIN:VEVENT
DTSTART;TZID=America/New_York:20260309T110000
DTEND;TZID=America/New_York:20260309T113000
DTSTAMP:20260301T120000Z
UID:4q2l8m0c1n7f5s3k9d6h2j1p0r@google.com
RECURRENCE-ID;TZID=America/New_York:20260309T090000
CREATED:20260215T170000Z
LAST-MODIFIED:20260301T115900Z
SEQUENCE:1
STATUS:CONFIRMED
SUMMARY:Check-in (moved)
TRANSP:OPAQUE
END:VEVENT
BEGIN:VEVENT
DTSTART;TZID=America/New_York:20260311T090000
DTEND;TZID=America/New_York:20260311T093000
DTSTAMP:20260301T120000Z
UID:4q2l8m0c1n7f5s3k9d6h2j1p0r@google.com
RECURRENCE-ID;TZID=America/New_York:20260311T090000
SEQUENCE:1
STATUS:CANCELLED
SUMMARY:Check-in
TRANSP:OPAQUE
END:VEVENT
END:VCALENDAR
""".replace("\n", "\r\n")


@pytest.mark.parametrize(
    ("sample", "expected"),
    [
        (
            APPLE,
            [
                datetime(2026, 3, 20, 10, tzinfo=BERLIN),
                datetime(2026, 4, 3, 12, tzinfo=BERLIN),
                datetime(2026, 4, 10, 10, tzinfo=BERLIN),
                datetime(2026, 4, 17, 10, tzinfo=BERLIN),
            ],
        ),
        (
            GOOGLE,
            [
                datetime(2026, 3, 2, 9, tzinfo=NEW_YORK),
                datetime(2026, 3, 9, 11, tzinfo=NEW_YORK),
                datetime(2026, 3, 16, 9, tzinfo=NEW_YORK),
                datetime(2026, 3, 18, 9, tzinfo=NEW_YORK),
            ],
        ),
    ],
    ids=["apple", "google"],
)
def test_remote_recurring_object_survives_import_and_rewrite(
    sample: str, expected: list[datetime]
) -> None:
    original = from_ical(sample)
    state = _state_from_remote(original)
    rewritten = from_ical(_ics(state))
    master, overrides = _split(original)
    again, overrides_again = _split(rewritten)
    assert (again.rrule, again.rdate, again.exdate) == (master.rrule, master.rdate, master.exdate)
    assert _shape(again) == _shape(master)
    assert again.description == master.description
    assert again.status == (master.status or "CONFIRMED")  # a booked appointment says so
    assert [_shape(event) for event in overrides_again] == [
        _shape(event, master) for event in overrides
    ]
    assert [event.status for event in overrides_again] == [event.status for event in overrides]
    # The rewritten object expands to what the remote one does.
    remote = [
        component["DTSTART"].dt
        for component in recurring_ical_events.of(icalendar.Calendar.from_ical(sample)).all()
        if component.get("STATUS") != "CANCELLED"
    ]
    assert sorted(remote) == expected
    assert _starts(expand(state, *WIDE)) == expected


# -- expansion --------------------------------------------------------------------------------


def _weekly(**recurrence: Any) -> dict[str, Any]:
    return _state(calendar_uid=SERIES_UID, recurrence={"rrule": [RULE], **recurrence})


FRIDAYS = [datetime(2026, 3, 13, 10, tzinfo=BERLIN) + timedelta(weeks=n) for n in range(5)]


def test_weekly_keeps_local_time_across_the_dst_change() -> None:
    occurrences = expand(_weekly(), *WIDE)
    assert _starts(occurrences) == FRIDAYS
    assert all((o.start.hour, o.start.minute) == (10, 0) for o in occurrences)
    assert [o.start.astimezone(UTC).hour for o in occurrences] == [9, 9, 9, 8, 8]
    assert all(o.end - o.start == timedelta(hours=1) for o in occurrences)
    assert [o.recurrence_id for o in occurrences] == [s.isoformat() for s in FRIDAYS]
    first = occurrences[0]
    assert (first.title, first.location, first.status) == ("Physio", "Praxis", "CONFIRMED")


def test_exdate_removes_an_occurrence() -> None:
    assert _starts(expand(_weekly(exdate=[EXDATE]), *WIDE)) == FRIDAYS[:2] + FRIDAYS[3:]


def test_rdate_adds_an_occurrence() -> None:
    starts = _starts(expand(_weekly(rdate=[RDATE]), *WIDE))
    assert starts == [*FRIDAYS, datetime(2026, 5, 2, 9, tzinfo=BERLIN)]


def test_moved_override_appears_at_its_new_time_and_cancelled_one_is_gone() -> None:
    occurrences = expand(_weekly(overrides=[MOVED, CANCELLED]), *WIDE)
    assert _starts(occurrences) == [*FRIDAYS[:3], datetime(2026, 4, 3, 12, tzinfo=BERLIN)]
    moved = occurrences[-1]
    assert moved.end == datetime(2026, 4, 3, 13, 30, tzinfo=BERLIN)
    assert moved.recurrence_id == "2026-04-03T10:00:00+02:00"
    assert (moved.title, moved.location, moved.status) == ("Physio (later)", "Praxis", None)


def test_everything_together() -> None:
    starts = _starts(expand(_recurring(), *WIDE))
    assert starts == [
        FRIDAYS[0],
        FRIDAYS[1],
        datetime(2026, 4, 3, 12, tzinfo=BERLIN),
        datetime(2026, 5, 2, 9, tzinfo=BERLIN),
    ]


def test_window_clipping() -> None:
    state = _weekly()
    assert _starts(expand(state, FRIDAYS[1], FRIDAYS[3])) == FRIDAYS[1:3]  # end exclusive
    inside = FRIDAYS[1] + timedelta(minutes=30)  # overlaps the running occurrence
    assert _starts(expand(state, inside, inside + timedelta(minutes=1))) == [FRIDAYS[1]]
    after = FRIDAYS[1] + timedelta(hours=1)  # it has ended
    assert _starts(expand(state, after, FRIDAYS[2])) == []
    assert expand(state, datetime(2027, 1, 1, tzinfo=UTC), datetime(2028, 1, 1, tzinfo=UTC)) == []
    assert _starts(expand(state, *WIDE, limit=2)) == FRIDAYS[:2]
    tokyo = ZoneInfo("Asia/Tokyo")  # the window may be given in any zone
    window = (FRIDAYS[2].astimezone(tokyo), (FRIDAYS[2] + timedelta(minutes=1)).astimezone(tokyo))
    [only] = expand(state, *window)
    assert only.start == FRIDAYS[2] and only.start.tzinfo == BERLIN


def test_endless_rule_stops_at_the_limit() -> None:
    state = _state(recurrence={"rrule": ["RRULE:FREQ=HOURLY"]})
    occurrences = expand(state, datetime(1990, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC))
    assert len(occurrences) == 1000
    assert occurrences[0].start == datetime(2026, 3, 13, 10, tzinfo=BERLIN)
    assert occurrences[-1].start == occurrences[0].start + timedelta(hours=999)


def test_single_appointment_expands_to_itself_when_it_overlaps() -> None:
    [only] = expand(_state(), *WIDE)
    assert (only.start, only.end, only.recurrence_id) == (
        FRIDAYS[0],
        FRIDAYS[0] + timedelta(hours=1),
        None,
    )
    assert expand(_state(), FRIDAYS[1], FRIDAYS[2]) == []


def test_all_day_expands_to_midnights_in_the_zone() -> None:
    state = _state(
        start="2026-03-27T00:00:00+01:00",
        end="2026-03-28T00:00:00+01:00",
        all_day=True,
        recurrence={
            "rrule": ["RRULE:FREQ=WEEKLY;COUNT=3"],
            "exdate": ["EXDATE;VALUE=DATE:20260403"],
            "overrides": [
                _override(
                    "RECURRENCE-ID;VALUE=DATE:20260410",
                    "2026-04-11T00:00:00+02:00",
                    "2026-04-13T00:00:00+02:00",
                    title="Long weekend",
                )
            ],
        },
    )
    first, moved = expand(state, *WIDE)
    assert (first.start, first.end) == (
        datetime(2026, 3, 27, tzinfo=BERLIN),
        datetime(2026, 3, 28, tzinfo=BERLIN),
    )
    assert (moved.start, moved.end) == (
        datetime(2026, 4, 11, tzinfo=BERLIN),
        datetime(2026, 4, 13, tzinfo=BERLIN),
    )
    assert moved.recurrence_id == "2026-04-10T00:00:00+02:00"
    assert moved.title == "Long weekend"


def test_floating_event_renders_without_tzid_and_expands_in_utc() -> None:
    state = _state(
        start="2026-03-27T10:00:00+01:00",
        end="2026-03-27T11:00:00+01:00",
        timezone="UTC",
        floating=True,
        recurrence={"rrule": ["RRULE:FREQ=WEEKLY;COUNT=2"]},
    )
    lines = _lines(_ics(state))
    assert "DTSTART:20260327T100000" in lines
    assert not any("TZID" in line for line in lines)
    assert _starts(expand(state, *WIDE)) == [
        datetime(2026, 3, 27, 10, tzinfo=UTC),
        datetime(2026, 4, 3, 10, tzinfo=UTC),
    ]


def test_bad_windows_are_rejected() -> None:
    with pytest.raises(ValueError, match="aware"):
        expand(_state(), datetime(2026, 1, 1), datetime(2027, 1, 1, tzinfo=UTC))
    with pytest.raises(ValueError, match="before"):
        expand(_state(), WIDE[1], WIDE[0])


# -- property: any zone, any rule -------------------------------------------------------------

ZONES = sorted(
    name
    for name in available_timezones()
    if "/" in name and not name.startswith(("Etc/", "SystemV/"))
)


def _plain(wall: datetime, zone: ZoneInfo) -> bool:
    """Tell whether ``wall`` exists exactly once in ``zone``."""
    first = wall.replace(tzinfo=zone)
    second = wall.replace(tzinfo=zone, fold=1)
    exists = first.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == wall
    return exists and first.utcoffset() == second.utcoffset()


@given(
    zone_name=st.sampled_from(ZONES),
    day=st.dates(date(2000, 1, 1), date(2037, 12, 1)),
    minute_of_day=st.integers(0, 24 * 60 - 1),
    weekly=st.booleans(),
    count=st.integers(1, 20),
    length=st.integers(1, 6 * 60),
    excluded=st.sets(st.integers(0, 19), max_size=5),
)
def test_any_daily_or_weekly_rule_expands_to_its_count(
    zone_name: str,
    day: date,
    minute_of_day: int,
    weekly: bool,
    count: int,
    length: int,
    excluded: set[int],
) -> None:
    zone = ZoneInfo(zone_name)
    wall = datetime.combine(day, time(minute_of_day // 60, minute_of_day % 60))
    step = timedelta(weeks=1) if weekly else timedelta(days=1)
    walls = [wall + step * n for n in range(count)]
    assume(all(_plain(w, zone) for w in walls))
    try:
        vtimezone(zone_name, walls[0].year, walls[-1].year)
        generated = True
    except (ValueError, OverflowError):
        generated = False
    assume(generated)
    excluded = {n for n in excluded if n < count}
    exdates = sorted(walls[n] for n in excluded)
    start = wall.replace(tzinfo=zone)
    state = _state(
        timezone=zone_name,
        start=start.isoformat(),
        end=(start + timedelta(minutes=length)).isoformat(),
        recurrence={
            "rrule": [f"RRULE:FREQ={'WEEKLY' if weekly else 'DAILY'};COUNT={count}"],
            "exdate": [f"EXDATE;TZID={zone_name}:{w:%Y%m%dT%H%M%S}" for w in exdates],
        },
    )
    window = (datetime(day.year - 1, 1, 1, tzinfo=UTC), datetime(day.year + 2, 1, 1, tzinfo=UTC))
    occurrences = expand(state, *window)
    expected = [w for n, w in enumerate(walls) if n not in excluded]
    assert len(occurrences) == count - len(excluded)
    assert [o.start.replace(tzinfo=None) for o in occurrences] == expected
    assert all(o.start.tzinfo == zone for o in occurrences)
    assert all(o.start.utcoffset() == zone.utcoffset(o.start) for o in occurrences)
    for occurrence in occurrences:
        assert (occurrence.start.hour, occurrence.start.minute) == (wall.hour, wall.minute)
        assert occurrence.recurrence_id == occurrence.start.isoformat()
