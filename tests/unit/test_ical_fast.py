"""The fast reader of calendar objects agrees with the icalendar path, or steps aside.

For any object, :func:`ical_fast.read` answers None or exactly what the icalendar
path answers: the same events (same values, same zones), the same content hash,
and so the same :func:`parse_object` result. Generated objects cover the shapes
servers and clients write, plus mutations that must make it step aside.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from caljournal.adapters import ical_fast
from caljournal.adapters.ical import (
    AppointmentView,
    Override,
    Recurrence,
    content_hash,
    to_ical,
    vtimezone,
)
from caljournal.projections.inbound_decide import Parsed, parse_object
from tests.support.samples import APPLE_BERLIN_VTIMEZONE

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import bench_import  # noqa: E402

DTSTAMP = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@contextmanager
def _reference_only() -> Iterator[None]:
    with mock.patch.object(ical_fast, "read", lambda data: None):
        yield


def reference(data: bytes) -> Parsed:
    with _reference_only():
        return parse_object(data)


def check(data: bytes) -> bool:
    """Assert the fast path agrees with the reference; return whether it was taken."""
    fast = ical_fast.read(data)
    if fast is None:
        return False
    events, digest = fast
    expected = reference(data)
    assert repr(events) == repr(expected.events)  # repr: the same zones, not only instants
    assert digest == (expected.digest or content_hash(data))
    parsed = parse_object(data)
    assert parsed == expected
    assert repr(parsed) == repr(expected)
    return True


# -- generated objects ------------------------------------------------------------

TOKENS = [
    "a", "Zoë", "日本", "🙂", " ", "  ", "\\n", "\\N", "\\,", "\\;", "\\\\", "\\:", "\\x",
    ",", ";", ":", '"', "=", "^", "%2C", "\t", "Customer: Bob <bob@example.org>",
]  # fmt: skip
TEXT = st.lists(st.sampled_from(TOKENS), max_size=6).map("".join)
GOOD_TEXT_PARAMS = ["", "", ";LANGUAGE=de", ";LANGUAGE=EN-us", ';ALTREP="http://x.example/a:b;c,d"',
                    ";X-P=a b", ';CN="Doe, John"']  # fmt: skip
ODD_TEXT_PARAMS = [";language=de", ";X-P=a,b", ";X-P= a", ';X-P=""', ";VALUE=TEXT",
                   ";X-P=a;X-P=b", ";X-P=^n", ";X-P=%41", ";VALUE=DATE"]  # fmt: skip
GOOD_ZONES = ["Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe",
              "W. Europe Standard Time", "Eastern Standard Time", '"Europe/Berlin"',
              "/mozilla.org/20050126_1/Europe/Berlin", "europe/berlin"]  # fmt: skip
ODD_ZONES = ["UTC", "Etc/UTC", "GMT Standard Time", "Foo/Bar", "Atlantic/Reykjavik"]
GOOD_OPTIONAL = [
    "SEQUENCE:0", "SEQUENCE:3", "SEQUENCE:007", "STATUS:CONFIRMED", "STATUS:cancelled",
    "STATUS: Cancelled ", "STATUS:TENTATIVE", "TRANSP:OPAQUE", "TRANSP:TRANSPARENT",
    "TRANSP:opaque", "CLASS:PUBLIC", "CLASS:PRIVATE", "CREATED:20250101T000000Z",
    "LAST-MODIFIED:20250101T000000Z",
    f"X-CALJOURNAL-APPOINTMENT-ID:{uuid.UUID(int=7)}",
    "X-CALJOURNAL-CUSTOMER-EMAIL:bob@example.org",
    "X-MOZ-GENERATION:3", "X-APPLE-TRAVEL-ADVISORY-BEHAVIOR;X-P=a,b:AUTOMATIC",
    'ORGANIZER;CN="Doe, John":mailto:john@example.org',
    "ATTENDEE;PARTSTAT=accepted;RSVP=TRUE:mailto:ann@example.org",
    "ATTENDEE;CN=Bob:mailto:bob@example.org", "URL:https://example.org/a?b=c", "PRIORITY:5",
]  # fmt: skip
ODD_OPTIONAL = [
    "SEQUENCE:+1", "SEQUENCE:x", "SEQUENCE:2147483648", "LAST-MODIFIED:garbage",
    "X-FOO;VALUE=DATE:x", "x-lower:1",
    "RRULE:FREQ=BOGUS",
    "RDATE:", "RDATE;VALUE=PERIOD:20260101T000000Z/PT1H", "PRIORITY:high", "GEO:1.5;2.5",
    "CATEGORIES:a,b", "REQUEST-STATUS:2.0;Success", "SUMMARY:second summary",
    "DTSTART:20260101T000000Z", "URL:https://example.org/a\\b",
]  # fmt: skip
REPEATED = ("ATTENDEE", "EXDATE", "RDATE", "X-")
RULES = ["RRULE:FREQ=WEEKLY;BYDAY=MO", "RRULE:BYDAY=MO,TU;FREQ=WEEKLY;COUNT=5",
         "RRULE:FREQ=DAILY;UNTIL=20270101T000000Z"]  # fmt: skip
DURATIONS = ["PT1H", "PT90M", "P1D", "PT24H", "P1W", "P1DT2H30M", "PT0S", "+PT1H"]
ODD_DURATIONS = ["-PT1H", "P", "1H", "PT1.5H"]


@st.composite
def times(draw: Any, kind: str, zone: str, clean: bool, moment: datetime | None = None) -> str:
    """Return the parameters and value of a DATE/DATE-TIME property (";TZID=…:2026…")."""
    if moment is None:
        moment = draw(
            st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2040, 1, 1))
        ).replace(microsecond=0)
    odd = "" if clean else draw(st.sampled_from(["", "", "Z", "extra", "short", "bad"]))
    params = draw(st.sampled_from(["", "", ";X-P=1", ";VALUE=DATE-TIME"]))
    if kind == "date":
        value = moment.strftime("%Y%m%d")
        params = draw(st.sampled_from(["", ";VALUE=DATE", ";VALUE=DATE", ";X-P=1"]))
        if not clean:
            params = draw(st.sampled_from([params, ";TZID=Europe/Berlin", ";VALUE=DATE-TIME"]))
    elif kind == "utc":
        value = moment.strftime("%Y%m%dT%H%M%SZ")
    elif kind == "floating":
        value = moment.strftime("%Y%m%dT%H%M%S")
    else:
        value = moment.strftime("%Y%m%dT%H%M%S")
        params = f";TZID={zone}{params}"
    if not clean and draw(st.integers(0, 3)) == 0:
        params = ";VALUE=DATE"
    if odd == "Z" and kind not in ("utc", "date"):
        value += "Z"
    elif odd == "extra":
        value += "0"
    elif odd == "short":
        value = value[:-1]
    elif odd == "bad":
        value = value[:4] + "13" + value[6:]
    return f"{params}:{value}"


def fold(text: str, draw: Any) -> str:
    """Fold long lines at drawn widths, with a space or a tab."""
    out = []
    width = draw(st.sampled_from([10, 30, 74, 1000]))
    for line in text.split("\n"):
        chunks = [line[i : i + width] for i in range(0, len(line), width)] or [""]
        out.append(("\n" + draw(st.sampled_from([" ", "\t"]))).join(chunks))
    return "\n".join(out)


@st.composite
def vevent(
    draw: Any, uid: str, override: str | None, kind: str, zone: str, clean: bool
) -> list[str]:
    """Return the lines of a VEVENT; a clean one is valid and written as icalendar would."""
    start = draw(
        st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2040, 1, 1))
    ).replace(microsecond=0)
    if kind == "date":
        start = start.replace(hour=0, minute=0, second=0)
    lines = [
        f"UID:{uid}",
        "DTSTAMP:20260101T000000Z",
        "DTSTART" + draw(times(kind, zone, clean, start)),
    ]
    ends = ["same", "same", "none", "duration"] + ([] if clean else ["utc", "date", "other"])
    end_kind = draw(st.sampled_from(ends))
    if end_kind == "duration":
        choices = DURATIONS if clean else DURATIONS + ODD_DURATIONS
        if kind == "date":
            choices = ["P1D", "P2D", "P1W"] if clean else choices
        lines.append("DURATION:" + draw(st.sampled_from(choices)))
    elif end_kind == "same":
        delta = (
            timedelta(days=draw(st.integers(0, 3)))
            if kind == "date"
            else timedelta(minutes=draw(st.integers(0, 3000)))
        )
        lines.append("DTEND" + draw(times(kind, zone, clean, start + delta)))
    elif end_kind != "none":
        other = "zoned" if end_kind == "other" else end_kind
        lines.append("DTEND" + draw(times(other, draw(st.sampled_from(GOOD_ZONES)), clean)))
    if override is not None:
        lines.append(override)
    text_params = GOOD_TEXT_PARAMS if clean else GOOD_TEXT_PARAMS + ODD_TEXT_PARAMS
    for name in ("SUMMARY", "LOCATION", "DESCRIPTION", "COMMENT"):
        if draw(st.booleans()):
            lines.append(f"{name}{draw(st.sampled_from(text_params))}:{draw(TEXT)}")
    optional = GOOD_OPTIONAL + [
        "X-CALJOURNAL-CUSTOMER-NAME:" + draw(TEXT),
        "X-CALJOURNAL-TIMEZONE:" + draw(st.sampled_from(GOOD_ZONES + ODD_ZONES)),
    ]
    if override is None:
        optional += RULES + ["EXDATE" + draw(times(kind, zone, clean)) for _ in range(2)]
        optional += ["RDATE" + draw(times(kind, zone, clean)), "RDATE;VALUE=DATE:20260101,20260102"]
    chosen = draw(
        st.lists(  # one of each property that RFC 5545 allows once
            st.sampled_from(optional),
            max_size=6,
            unique_by=lambda line: line if line.startswith(REPEATED) else line.split(":")[0],
        )
    )
    if not clean:
        chosen += draw(st.lists(st.sampled_from(ODD_OPTIONAL), max_size=2))
    lines += chosen
    lines = draw(st.permutations(lines))
    if draw(st.integers(0, 3)) == 0:
        triggers = [":-PT15M", ";RELATED=END:PT0S", ";VALUE=DATE-TIME:20260101T000000Z"]
        alarm = [
            "BEGIN:VALARM",
            "ACTION:DISPLAY",
            "TRIGGER" + draw(st.sampled_from(triggers if clean else [*triggers, ":xyz"])),
            "DESCRIPTION:Reminder",
            "END:VALARM",
        ]
        at = draw(st.integers(0, len(lines)))
        lines[at:at] = alarm
    return ["BEGIN:VEVENT", *lines, "END:VEVENT"]


@st.composite
def calendars(draw: Any, clean: bool | None = None) -> bytes:
    """Return a calendar object; a clean one is valid and in the shape the fast path reads."""
    if clean is None:
        clean = draw(st.booleans())
    uid = draw(st.sampled_from([f"{uuid.UUID(int=7)}@caljournal", "abc-123", "Zoë@日本", "a\\,b"]))
    head = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//Test//Test//EN"]
    extra = ["CALSCALE:GREGORIAN", "METHOD:PUBLISH", "X-WR-TIMEZONE:Europe/Berlin",
             "X-WR-TIMEZONE:America/New_York", "X-WR-CALNAME:Work"]  # fmt: skip
    extra += [] if clean else ["NAME:Work", "X-X;VALUE=DATE:1"]
    head += draw(st.lists(st.sampled_from(extra), max_size=3, unique=True))
    body: list[str] = []
    defined = ["Europe/Berlin", "America/New_York"] + ([] if clean else ["Foo/Bar"])
    for zone in draw(st.lists(st.sampled_from(defined), max_size=2, unique=True)):
        tzid = zone if zone == "Foo/Bar" else None
        tz = vtimezone("Europe/Berlin" if tzid else zone, 2025, 2027, tzid)
        body += tz.to_ical().decode().replace("\r\n ", "").splitlines()
    kind = draw(st.sampled_from(["zoned", "zoned", "utc", "floating", "date"]))
    zone = draw(st.sampled_from(GOOD_ZONES if clean else GOOD_ZONES + ODD_ZONES))
    body += draw(vevent(uid, None, kind, zone, clean))
    for _ in range(draw(st.integers(0, 2))):
        rid_kind = kind if clean else draw(st.sampled_from(["zoned", "utc", "date"]))
        rid = draw(times(rid_kind, zone, clean))
        other = uid if clean else draw(st.sampled_from([uid, uid, "other"]))
        body += draw(vevent(other, f"RECURRENCE-ID{rid}", kind, zone, clean))
    lines = head + body + ["END:VCALENDAR"]
    mutation = 9 if clean else draw(st.integers(0, 3))
    if mutation == 0:
        index = draw(st.integers(1, len(lines) - 2))
        lines[index] = draw(st.sampled_from(
            ["", " ", "BROKEN", "dtstart:20260101", "BEGIN:VTODO", "END:VTODO", "END:VEVENT",
             "BEGIN:VCALENDAR", "UID;:x", "SUMMARY ;X=1:a", lines[index].lower()]
        ))  # fmt: skip
    text = fold("\n".join(lines), draw)
    newline = draw(st.sampled_from(["\r\n", "\r\n", "\n"]))
    text = text.replace("\n", newline) + newline
    if mutation == 1:
        text = draw(st.sampled_from(["\ufeff", "\n", "X-COMMENT:x\r\n"])) + text
    elif mutation == 2:
        text += draw(st.sampled_from(["\r\n", "BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n", " x"]))
    return text.encode("utf-8")


@given(calendars())
def test_fast_path_equals_the_reference_or_steps_aside(data: bytes) -> None:
    check(data)


@given(calendars(clean=True))
def test_fast_path_takes_the_common_shapes(data: bytes) -> None:
    assert check(data), "the fast path stepped aside"


@given(
    st.text(alphabet=st.sampled_from(list('BEGINDVCALRT:;="\r\n \t\\,ZXY0123-')), max_size=200)
    .map(lambda body: f"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:x\r\n{body}")
    .map(str.encode)
)
def test_garbage_is_left_to_the_reference(data: bytes) -> None:
    check(data)


# -- realistic objects: the fast path takes nearly all ------------------------------


def _view(index: int) -> AppointmentView:
    zones = ["Europe/Berlin", "UTC", "America/New_York", "Asia/Kolkata", "Europe/London"]
    zone = ZoneInfo(zones[index % len(zones)])
    start = datetime(2026, 1 + index % 12, 1 + index % 28, 8 + index % 10, tzinfo=zone)
    end = start + timedelta(minutes=30 + 15 * (index % 5))
    all_day = index % 9 == 4
    floating = index % 11 == 5
    if all_day:
        start = start.replace(hour=0)
        end = start + timedelta(days=1 + index % 3)
    recurrence = None
    if index % 7 == 3:
        first = start.strftime("%Y%m%dT%H%M%S")
        rid = f"RECURRENCE-ID;TZID={zone.key}:{first}" if zone.key != "UTC" else None
        recurrence = Recurrence(
            rrule=("RRULE:FREQ=WEEKLY;COUNT=10",),
            exdate=(f"EXDATE;TZID={zone.key}:{first}",) if zone.key != "UTC" else (),
            overrides=(
                (
                    Override(
                        rid, start + timedelta(hours=1), end + timedelta(hours=1), title="Moved"
                    ),
                )
                if rid and not all_day and not floating
                else ()
            ),
        )
    return AppointmentView(
        appointment_id=str(uuid.UUID(int=index)),
        uid=f"{uuid.UUID(int=index)}@caljournal",
        title=["Haircut", "Zoë's check-up; room 2, 3rd floor", "日本語の予約"][index % 3],
        start=start,
        end=end,
        timezone=zone.key,
        location=None if index % 4 == 0 else "Salon Mitte, Berlin",
        description=None if index % 3 == 0 else "Line one\nline two: with ;,\\ escapes " * 3,
        customer_name=None if index % 5 == 0 else "Jonas Weber",
        customer_email=None if index % 6 == 0 else "jonas@example.org",
        sequence=index % 4,
        status="cancelled" if index % 13 == 0 else "booked",
        all_day=all_day,
        floating=floating and not all_day,
        recurrence=recurrence,
    )


APPLE = (
    """BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//Apple Inc.//macOS 14.0//EN
CALSCALE:GREGORIAN
"""
    + APPLE_BERLIN_VTIMEZONE
    + """BEGIN:VEVENT
CREATED:20260101T100000Z
UID:{uid}
DTEND;TZID=Europe/Berlin:20260310T110000
TRANSP:OPAQUE
X-APPLE-TRAVEL-ADVISORY-BEHAVIOR:AUTOMATIC
SUMMARY:Dentist {n}
LAST-MODIFIED:20260101T100000Z
DTSTAMP:20260101T100000Z
DTSTART;TZID=Europe/Berlin:20260310T100000
SEQUENCE:1
LOCATION:Hauptstraße 5\\, Berlin
BEGIN:VALARM
X-WR-ALARMUID:{uid}-alarm
UID:{uid}-alarm
TRIGGER:-PT15M
ATTACH;VALUE=URI:Chord
ACTION:AUDIO
END:VALARM
END:VEVENT
END:VCALENDAR
"""
)

GOOGLE = """BEGIN:VCALENDAR
PRODID:-//Google Inc//Google Calendar 70.9054//EN
VERSION:2.0
CALSCALE:GREGORIAN
METHOD:PUBLISH
X-WR-CALNAME:work@example.org
X-WR-TIMEZONE:Europe/Berlin
BEGIN:VEVENT
DTSTART:20260311T090000Z
DTEND:20260311T100000Z
DTSTAMP:20260301T120000Z
ORGANIZER;CN=work@example.org:mailto:work@example.org
UID:{uid}@google.com
ATTENDEE;CUTYPE=INDIVIDUAL;ROLE=REQ-PARTICIPANT;PARTSTAT=ACCEPTED;CN=Ann Lee;X-NUM-
 GUESTS=0:mailto:ann@example.org
CREATED:20260301T120000Z
DESCRIPTION:Agenda: budget\\, hiring\\nSee you there {n}
LAST-MODIFIED:20260301T120000Z
LOCATION:
SEQUENCE:0
STATUS:CONFIRMED
SUMMARY:Team sync
TRANSP:OPAQUE
END:VEVENT
END:VCALENDAR
"""

NEXTCLOUD = """BEGIN:VCALENDAR
PRODID:-//IDN nextcloud.com//Calendar app 4.6.0//EN
CALSCALE:GREGORIAN
VERSION:2.0
BEGIN:VEVENT
CREATED:20260301T120000Z
DTSTAMP:20260301T120000Z
LAST-MODIFIED:20260301T120000Z
SEQUENCE:2
UID:{uid}
DTSTART;VALUE=DATE:20260320
DTEND;VALUE=DATE:20260321
STATUS:CONFIRMED
SUMMARY:Holiday {n}
RRULE:FREQ=YEARLY
END:VEVENT
BEGIN:VTIMEZONE
TZID:America/New_York
BEGIN:STANDARD
DTSTART:19701101T020000
RRULE:FREQ=YEARLY;BYMONTH=11;BYDAY=1SU
TZOFFSETFROM:-0400
TZOFFSETTO:-0500
TZNAME:EST
END:STANDARD
END:VTIMEZONE
END:VCALENDAR
"""


def corpus() -> list[bytes]:
    objects = [to_ical(_view(index), DTSTAMP) for index in range(120)]
    objects += [text.encode() for _, text in bench_import.events(60)]
    for template in (APPLE, GOOGLE, NEXTCLOUD):
        for n in range(10):
            text = template.format(uid=uuid.UUID(int=n + 1000), n=n)
            objects.append(text.replace("\n", "\r\n" if n % 2 else "\n").encode())
    return objects


def test_the_fast_path_takes_nearly_all_realistic_objects() -> None:
    objects = corpus()
    taken = [check(data) for data in objects]
    assert sum(taken) >= 0.9 * len(objects), f"{sum(taken)} of {len(objects)}"
    for template in (APPLE, GOOGLE, NEXTCLOUD):  # each shape on its own
        assert ical_fast.read(template.format(uid="u", n=1).encode()) is not None


def _one_event(*lines: str, head: tuple[str, ...] = ()) -> bytes:
    body = ["BEGIN:VEVENT", "UID:u", "DTSTAMP:20260101T000000Z", *lines, "END:VEVENT"]
    return "\r\n".join(
        ["BEGIN:VCALENDAR", "VERSION:2.0", *head, *body, "END:VCALENDAR", ""]
    ).encode()


UTC_10 = "DTSTART:20260101T100000Z"
EDGES = [  # (object, whether the fast path takes it)
    (_one_event("DTSTART;TZID=Europe/Berlin:20260329T023000", "DURATION:PT1H"), True),  # gap
    (_one_event("DTSTART;TZID=Europe/Berlin:20261025T023000", "DURATION:PT30M"), True),  # fold
    (_one_event("DTSTART;TZID=Asia/Tokyo:99991231T230000", "DURATION:PT30M"), True),
    (_one_event("DTSTART;TZID=America/New_York:00010101T000000", "DURATION:PT1H"), True),
    (_one_event("DTSTART:99991231T230000Z", "DURATION:P1D"), False),
    (_one_event(UTC_10, "DURATION:P99999999D"), False),
    (_one_event(UTC_10, "SUMMARY:a\x00b\x0bc\u2028d\u0085e"), True),
    (_one_event(UTC_10, "DESCRIPTION:" + "x" * 1_000_001), False),
    (
        _one_event(
            "DTSTART:20260101T100000",
            "X-CALJOURNAL-TIMEZONE:Asia/Tokyo",
            head=("X-WR-TIMEZONE:Europe/Berlin",),
        ),
        True,
    ),
    (_one_event(UTC_10, "DTEND;TZID=Asia/Tokyo:20260101T200000"), True),
    (_one_event(UTC_10, "RECURRENCE-ID;RANGE=thisandfuture:20260101T100000Z"), True),
    (_one_event(UTC_10, "SEQUENCE:2147483648"), False),
    (_one_event(UTC_10, "SEQUENCE:999999999"), True),
    (_one_event("DTSTART;TZID=Atlantic/Reykjavik:20260101T100000"), False),
]


@pytest.mark.parametrize(("data", "taken"), EDGES)
def test_edge_cases_agree_with_the_reference(data: bytes, taken: bool) -> None:
    assert check(data) is taken


def test_errors_keep_the_reference_messages() -> None:
    bad = bench_import.EVENT.format(
        uid="u", start="20260102T100000Z", end="20260101T100000Z", n=1, room=1
    ).encode()
    assert ical_fast.read(bad) is None
    assert parse_object(bad).reason is not None
    assert parse_object(bad) == reference(bad)
    no_event = b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nEND:VCALENDAR\r\n"
    assert ical_fast.read(no_event) is None
    assert (
        parse_object(no_event).reason
        == "calendar object holds no VEVENT (found no components at all)"
    )


def test_a_repeated_vtimezone_is_checked_once() -> None:
    data = APPLE.format(uid="u", n=1).encode()
    ical_fast._checked_blocks.clear()
    with mock.patch.object(ical_fast, "_check_block", wraps=ical_fast._check_block) as checked:
        assert ical_fast.read(data) is not None
        assert ical_fast.read(data.replace(b"Dentist", b"Doctor")) is not None
    assert checked.call_count == 2  # the VTIMEZONE once, the VALARM once (same in both)


def test_the_content_hash_is_the_one_stored_before_the_fast_path() -> None:
    # Hashes are stored and compared across polls: this value was computed by
    # calendar_hash before the fast path and the shared canonical_line existed.
    data = GOOGLE.format(uid="g", n=1).encode()
    stored = "c1bd9e1a4fe744ed66b88f2949ff5dc52d2ea1578eec69719604b6828d69f7c9"
    assert content_hash(data) == stored
    fast = ical_fast.read(data)
    assert fast is not None and fast[1] == stored
