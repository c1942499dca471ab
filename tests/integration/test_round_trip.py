"""Whatever the API accepts survives push, another client's edit and the next poll.

Against real Radicale and Xandikos: an appointment booked through the API is
pushed, another client adds CATEGORIES to the calendar object (re-serialising
all of it, as clients do), and the next poll must record no event and leave
the appointment as it was. Field values are generated (hypothesis); the cases
seen in the field are pinned as explicit examples.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

import caldav
import icalendar
import pytest
from fastapi.testclient import TestClient
from hypothesis import example, given, settings
from hypothesis import strategies as st

from caljournal.adapters.secrets import Credentials
from caljournal.api.app import create_app
from caljournal.bootstrap import Container, bootstrap
from caljournal.domain.values import canonical_text, email_problem, is_region_zone
from caljournal.settings import load_settings
from tests.conftest import Tenant, open_tenant, operator, sqlite_url
from tests.integration.test_inbound import Linked

# A fraction of the profile's example count: each example costs several requests.
EXAMPLES = max(5, settings().max_examples // 8)
ZONES = sorted(z for z in available_timezones() if is_region_zone(z))
# Text the door normalises (line breaks of every kind, trailing blanks) or that
# iCalendar escapes (; , \ and a literal \n), plus characters servers trip on.
SPECIALS = ["\r\n", "\r", "\n", "\x85", "\u2028", "\u2029", "\t", "  ", " \n", "\t\r\n"]
ESCAPED = [";", ",", "\\", "\\n", ":", '"', "<", ">", "Customer: x <a@b.co>"]
ODD = ["\u00e9", "\u00df", "\U0001f600", "\u200b", "\ufeff", "\u0301", "\ue000", "\u4e2d"]
CHARS = st.characters(codec="utf-8", exclude_categories=("Cs", "Cc"))


def texts(*, lines: bool, min_size: int = 0) -> st.SearchStrategy[str]:
    pieces = [CHARS, st.sampled_from(ESCAPED), st.sampled_from(ODD), st.just(" ")]
    if lines:
        pieces.append(st.sampled_from(SPECIALS))
    # No literal backslash-N: the other client here (icalendar 7, through caldav)
    # writes it back as an escaped line break, so that client really changes
    # the text (caljournal itself writes it as \\N and reads it back).
    joined = st.lists(st.one_of(*pieces), min_size=min_size, max_size=12).map("".join)
    return joined.filter(lambda text: "\\N" not in text)


def stamp(value: datetime) -> str:
    """Return ``value`` as RFC 3339 (in UTC when its offset has seconds)."""
    offset = value.utcoffset() or timedelta(0)
    return (value.astimezone(UTC) if offset.seconds % 60 else value).isoformat()


@st.composite
def bookings(draw: st.DrawFn) -> dict[str, Any]:
    zone = draw(st.sampled_from(["UTC", "Europe/Berlin", *ZONES]))
    body: dict[str, Any] = {
        "title": draw(texts(lines=False, min_size=1).filter(lambda t: canonical_text(t).strip())),
        "timezone": zone,
    }
    if draw(st.booleans()) and draw(st.booleans()):  # a quarter all-day
        first = draw(st.dates(min_value=date(1900, 1, 2), max_value=date(2199, 12, 1)))
        days = draw(st.integers(min_value=1, max_value=30))
        body["start"], body["end"] = first.isoformat(), (first + timedelta(days=days)).isoformat()
    else:
        start = draw(
            st.datetimes(
                min_value=datetime(1900, 1, 2),
                max_value=datetime(2199, 12, 1),
                timezones=st.just(UTC),
            )
        ).replace(microsecond=0)
        length = draw(
            st.one_of(
                st.integers(min_value=1, max_value=120),
                st.integers(min_value=1, max_value=366 * 86_400),
            )
        )
        local = draw(st.booleans())
        ends = (start, start + timedelta(seconds=length))
        shown = [e.astimezone(ZoneInfo(zone)) if local else e for e in ends]
        body["start"], body["end"] = (stamp(e) for e in shown)
    for name, lines in (("location", True), ("description", True), ("customer_name", False)):
        if draw(st.booleans()):
            body[name] = draw(texts(lines=lines))
    if draw(st.booleans()):
        body["customer_email"] = draw(st.emails().filter(lambda e: email_problem(e) is None))
    return body


class RoundTrip:
    """An API client of an account linked to a fresh calendar of a real server."""

    def __init__(self, container: Container, tenant: Tenant, linked: Linked) -> None:
        self.container = container
        self.tenant = tenant
        self.linked = linked
        self.client = TestClient(create_app(container))

    def book(self, body: dict[str, Any]) -> dict[str, Any]:
        response = self.client.post("/appointments", json=body, headers=self.tenant.headers)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    def get(self, appointment_id: str) -> dict[str, Any]:
        response = self.client.get(f"/appointments/{appointment_id}", headers=self.tenant.headers)
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found

    def add_categories(self, uid: str) -> None:
        """Change another property, as another client would: the whole object is rewritten."""
        obj = self.linked.calendar.get_object_by_uid(uid)
        # Parsed from the bytes the server sent: caldav's own fix-ups of ``data``
        # (trailing blanks, backslashes before quotes) would change the texts.
        calendar = icalendar.Calendar.from_ical(obj.raw_data)
        next(iter(calendar.walk("VEVENT"))).add("CATEGORIES", ["Work", "Other client"])
        obj.save(raw_data=calendar.to_ical())

    def round_trip(self, body: dict[str, Any]) -> None:
        booked = self.book(body)
        assert self.linked.push() >= 1
        self.add_categories(f"{booked['id']}@caljournal")
        before = self.container.journal.recorder.max_notification_id()
        report = self.linked.poll()
        assert report.counts.get("quarantine", 0) == 0, report
        after = self.container.journal.recorder.max_notification_id()
        history = [e["type"] for e in self.history(booked["id"])]
        assert after == before, f"the poll recorded {history[1:]} for {body!r}"
        assert self.get(booked["id"]) == booked

    def history(self, appointment_id: str) -> list[dict[str, Any]]:
        path = f"/appointments/{appointment_id}/history"
        entries: list[dict[str, Any]] = self.client.get(path, headers=self.tenant.headers).json()[
            "entries"
        ]
        return entries


def _container(tmp_path: Path) -> Container:
    return bootstrap(
        load_settings(
            database_url=sqlite_url(tmp_path),
            secret_key_file=tmp_path / "caljournal.key",
            allow_private_addresses=True,
            caldav_timeout=30,
        )
    )


def _setup(
    container: Container, calendar: caldav.Calendar, url: str, credentials: Credentials
) -> RoundTrip:
    tenant = open_tenant(container, "acme")
    result = container.links.link(tenant.account_id, url, credentials, operator())
    linked = Linked(container, tenant, calendar, None, str(result.state["calendar_url"]))  # type: ignore[arg-type]
    linked.poll()  # the first poll imports nothing and sets the sync token
    return RoundTrip(container, tenant, linked)


@pytest.fixture(params=["radicale", "xandikos"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RoundTrip]:
    """Return an account linked to a fresh calendar on Radicale, then on Xandikos."""
    container = _container(tmp_path)
    cal_id = f"rt-{uuid.uuid4().hex[:8]}"
    if request.param == "radicale":
        radicale = request.getfixturevalue("radicale")
        calendar = radicale.make_calendar("alice", "secret", cal_id, cal_id=cal_id)
        url, credentials = f"{radicale.url}alice/{cal_id}/", Credentials("alice", "secret")
    else:
        xandikos = request.getfixturevalue("xandikos")
        calendar = xandikos.make_calendar(cal_id, cal_id=cal_id)
        # Xandikos here runs without authentication and ignores what is sent.
        url, credentials = str(calendar.url), Credentials("user", "unused")
    try:
        yield _setup(container, calendar, url, credentials)
    finally:
        container.close()


BERLIN_DAY = {"title": "Haircut", "timezone": "Europe/Berlin"}


def test_what_the_api_accepts_survives_another_clients_edit_and_the_next_poll(
    server: RoundTrip,
) -> None:
    @settings(deadline=None, max_examples=EXAMPLES)
    @given(body=bookings())
    # Observed: CRLF from a browser's text area, trailing blanks, other line breaks.
    @example(
        body={
            **BERLIN_DAY,
            "start": "2026-03-30T10:00:00+02:00",
            "end": "2026-03-30T10:45:00+02:00",
            "description": "Line one\r\nLine two  \r\n\r\nend\t",
            "location": "Room 1 \u2028Floor 2\x85Wing\r",
            "customer_name": "Anna ",
            "customer_email": "anna@example.org",
        }
    )
    # Observed: a one-second appointment (sub-second ones are refused at the door).
    @example(body={**BERLIN_DAY, "start": "2026-03-30T10:00:00Z", "end": "2026-03-30T10:00:01Z"})
    # Observed: zones whose offset had seconds (local mean time).
    @example(
        body={
            "title": "LMT",
            "timezone": "Europe/Amsterdam",
            "start": "1900-01-01T10:00:00Z",
            "end": "1900-01-01T11:00:00Z",
        }
    )
    @example(
        body={
            "title": "LMT",
            "timezone": "Africa/Monrovia",
            "start": "1971-06-01T10:00:00Z",
            "end": "1971-06-01T11:00:00Z",
        }
    )
    # All-day, as imported all-day events are kept; the DST change inside it.
    @example(body={**BERLIN_DAY, "start": "2026-03-28", "end": "2026-03-30"})
    # The repeated hour of a fall-back change.
    @example(
        body={**BERLIN_DAY, "start": "2026-10-25T02:30:00+01:00", "end": "2026-10-25T03:10:00Z"}
    )
    def check(body: dict[str, Any]) -> None:
        server.round_trip(body)

    check()


def test_an_all_day_booking_is_rendered_and_listed_like_an_imported_one(
    server: RoundTrip,
) -> None:
    booked = server.book({**BERLIN_DAY, "start": "2026-04-13", "end": "2026-04-15"})
    assert booked["all_day"] is True
    assert (booked["start"], booked["end"]) == (
        "2026-04-13T00:00:00+02:00",
        "2026-04-15T00:00:00+02:00",
    )
    server.linked.push()
    event = server.linked.calendar.get_object_by_uid(f"{booked['id']}@caljournal")
    component = event.icalendar_component
    assert component.decoded("DTSTART") == date(2026, 4, 13)
    assert component.decoded("DTEND") == date(2026, 4, 15)
    # An all-day event another client put in the same calendar, imported by a poll.
    server.linked.calendar.save_event(
        dtstart=date(2026, 4, 13), dtend=date(2026, 4, 15), summary="Imported", uid="imp-1"
    )
    server.linked.poll()
    listed = server.client.get(
        "/appointments",
        params={"start": "2026-04-14T12:00:00+02:00", "end": "2026-04-14T13:00:00+02:00"},
        headers=server.tenant.headers,
    ).json()["items"]
    assert {item["title"] for item in listed} == {"Haircut", "Imported"}
    ours, theirs = (
        server.get(next(i["id"] for i in listed if i["title"] == title))
        for title in ("Haircut", "Imported")
    )
    assert ours["all_day"] is theirs["all_day"] is True
    assert ours == server.get(booked["id"]) and ours["end"] == booked["end"]
    assert datetime.fromisoformat(theirs["start"]).date() == date(2026, 4, 13)
    assert datetime.fromisoformat(theirs["end"]).date() == date(2026, 4, 15)
