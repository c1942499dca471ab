"""What the API takes at its door, and the one shape of its errors (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Tenant
from tests.integration.test_api import BOOKING, create

RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})")
BAD_TOKEN = {"Authorization": "Bearer cj_not-a-token-anyone-has"}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"start": 1774857600, "end": 1774860000}, "start"),  # a Unix timestamp
        ({"start": 1774857600.5}, "start"),
        ({"start": "2026-03-27T10:00:00"}, "start"),  # no offset
        ({"start": "2026-03-27T10:00"}, "start"),  # not RFC 3339: no seconds
        ({"start": "2026-03-27T10:00:00.5+01:00"}, "start"),
        ({"end": "2026-03-27T10:00:00.000001+01:00"}, "end"),  # a 1 µs appointment
        ({"start": "0001-01-01T00:30:00+01:00", "end": "0001-01-01T01:30:00+01:00"}, "start"),
        ({"start": "9999-12-31T22:00:00-01:00", "end": "9999-12-31T23:30:00-01:00"}, "start"),
        ({"start": "1899-12-31T10:00:00Z", "end": "1899-12-31T11:00:00Z"}, "start"),
        ({"start": "2026-03-27", "end": "2026-03-27T11:00:00+01:00"}, "end"),
        ({"start": "2026-03-27", "end": "2026-03-27"}, "end"),
        ({"timezone": "localtime"}, "timezone"),
        ({"timezone": "Factory"}, "timezone"),
        ({"timezone": "EST5EDT"}, "timezone"),
        ({"timezone": "US/Eastern"}, "timezone"),
        ({"timezone": "Etc/GMT+5"}, "timezone"),
        ({"customer_email": "a@b.co\n"}, "customer_email"),
        ({"customer_email": "Jonas <jonas@example.org>"}, "customer_email"),
        ({"title": "a\x01b"}, "title"),
        ({"title": "one\u2028two"}, "title"),
        ({"title": " \r\n "}, "title"),
        ({"customer_name": "Jonas\r\nWeber"}, "customer_name"),
        ({"description": "bell \x07"}, "description"),
        ({"location": "del \x7f"}, "location"),
        ({"location": "csi \x9b"}, "location"),
        ({"description": "\ud800"}, "description"),
        ({"description": "\uffff"}, "description"),
    ],
)
def test_unusable_input_is_a_422_naming_the_field(
    client: TestClient, acme: Tenant, changes: dict[str, Any], field: str
) -> None:
    # Sent as ASCII JSON: a lone surrogate can only travel escaped.
    body = json.dumps({**BOOKING, **changes}).encode()
    headers = {**acme.headers, "Content-Type": "application/json"}
    response = client.post("/appointments", content=body, headers=headers)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert set(response.json()) >= {"error", "message", "field"}


def test_text_is_kept_in_one_canonical_form(client: TestClient, acme: Tenant) -> None:
    created = create(
        client,
        acme,
        title="Haircut  ",
        description="From a text area\r\nsecond line \t\r\rfourth\u2028fifth\x85sixth\u2029",
        location="",
        customer_name="\ufeffJonas",
        start="2026-03-27T09:00:00.000Z",  # JavaScript's toISOString()
    )
    assert created["title"] == "Haircut"
    assert created["description"] == "From a text area\nsecond line\n\nfourth\nfifth\nsixth\n"
    assert created["location"] is None
    assert created["customer_name"] == "Jonas"
    assert created["start"] == "2026-03-27T10:00:00+01:00"
    path = f"/appointments/{created['id']}"
    patched = client.patch(path, json={"description": "a \r\nb"}, headers=acme.headers)
    assert patched.json()["description"] == "a\nb"
    cleared = client.patch(path, json={"title": None}, headers=acme.headers)
    assert cleared.status_code == 422 and cleared.json()["field"] == "title"


def _listed(client: TestClient, tenant: Tenant, start: str, end: str) -> list[dict[str, Any]]:
    response = client.get(
        "/appointments", params={"start": start, "end": end}, headers=tenant.headers
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


@pytest.mark.parametrize(
    ("zone", "start"),
    [("Europe/Amsterdam", "1900-01-01T10:00:00Z"), ("Africa/Monrovia", "1971-06-01T10:00:00Z")],
)
def test_times_in_zones_whose_offset_had_seconds_are_listed_in_rfc3339(
    client: TestClient, acme: Tenant, zone: str, start: str
) -> None:
    begin = datetime.fromisoformat(start)
    end = begin.replace(hour=11).isoformat()
    created = create(client, acme, timezone=zone, start=start, end=end)
    listed = _listed(client, acme, begin.replace(hour=0).isoformat(), end)
    shown = client.get(f"/appointments/{created['id']}", headers=acme.headers).json()
    history = client.get(f"/appointments/{created['id']}/history", headers=acme.headers).json()
    assert [item["id"] for item in listed] == [created["id"]]
    for state in (created, listed[0], shown, history["entries"][0]["changes"]):
        value = state["start"]["new"] if "new" in state["start"] else state["start"]
        assert RFC3339.fullmatch(value), value
        assert datetime.fromisoformat(value) == begin
    assert shown["timezone"] == zone


@pytest.mark.parametrize(
    ("params", "found"),
    [
        ({"start": "0001-01-01T00:00:00+01:00", "end": "2026-01-01T00:00:00Z"}, False),
        ({"start": "0001-01-01T00:00:00+01:00", "end": "2027-01-01T00:00:00Z"}, True),
        ({"start": "2026-01-01T00:00:00Z", "end": "9999-12-31T23:59:59-01:00"}, True),
        ({"start": "0001-01-01T00:00:00+14:00", "end": "0001-01-02T00:00:00+14:00"}, False),
    ],
)
def test_list_windows_at_the_ends_of_time_are_answered(
    client: TestClient, acme: Tenant, params: dict[str, str], found: bool
) -> None:
    created = create(client, acme)
    response = client.get("/appointments", params=params, headers=acme.headers)
    assert response.status_code == 200, response.text
    expected = [created["id"]] if found else []
    assert [item["id"] for item in response.json()["items"]] == expected
    as_of = client.get(
        f"/appointments/{created['id']}",
        params={"as_of": "9999-12-31T23:59:59-01:00"},
        headers=acme.headers,
    )
    assert as_of.status_code == 200 and as_of.json()["version"] == created["version"]
    before = client.get(
        f"/appointments/{created['id']}",
        params={"as_of": "0001-01-01T00:00:00+01:00"},
        headers=acme.headers,
    )
    assert before.status_code == 404


def test_an_all_day_booking_keeps_its_dates_through_moves_and_retries(
    client: TestClient, acme: Tenant
) -> None:
    body = {**BOOKING, "start": "2026-03-28", "end": "2026-03-30"}
    headers = {**acme.headers, "Idempotency-Key": "all-day-1"}
    created = client.post("/appointments", json=body, headers=headers)
    assert created.status_code == 201, created.text
    state = created.json()
    assert state["all_day"] is True
    # The DST change inside the two days does not move the midnights.
    assert (state["start"], state["end"]) == (
        "2026-03-28T00:00:00+01:00",
        "2026-03-30T00:00:00+02:00",
    )
    again = client.post("/appointments", json=body, headers=headers)
    assert again.headers.get("Idempotent-Replayed") == "true" and again.json() == state
    path = f"/appointments/{state['id']}"
    listed = _listed(client, acme, "2026-03-29T12:00:00+02:00", "2026-03-29T13:00:00+02:00")
    assert [item["id"] for item in listed] == [state["id"]]
    moved = client.post(
        f"{path}/move", json={"start": "2026-04-01", "end": "2026-04-02"}, headers=acme.headers
    ).json()
    assert moved["all_day"] is True and moved["start"] == "2026-04-01T00:00:00+02:00"
    timed = client.post(
        f"{path}/move",
        json={"start": "2026-04-01T09:00:00+02:00", "end": "2026-04-01T10:00:00+02:00"},
        headers=acme.headers,
    ).json()
    assert timed["all_day"] is False and timed["start"] == "2026-04-01T09:00:00+02:00"


def test_errors_have_one_shape(client: TestClient, acme: Tenant) -> None:
    json_headers = {**acme.headers, "Content-Type": "application/json"}
    for body in (b'{"title": ', b'\xff\xfe{"title"'):
        malformed = client.post("/appointments", content=body, headers=json_headers)
        assert malformed.status_code == 400
        assert malformed.json()["error"] == "malformed" and malformed.json()["field"] is None
    unknown = client.get("/no-such-path", headers=acme.headers)
    assert unknown.status_code == 404
    assert set(unknown.json()) == {"error", "message", "field"}
    not_allowed = client.delete("/appointments", headers=acme.headers)
    assert not_allowed.status_code == 405 and set(not_allowed.json()) == {
        "error",
        "message",
        "field",
    }
    window = client.get(
        "/appointments",
        params={"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"},
        headers=acme.headers,
    )
    assert window.status_code == 422 and window.json()["field"] == "end"


def _chunks(size: int) -> Iterator[bytes]:
    yield b'{"title": "'
    for _ in range(size // 10_000):
        yield b"x" * 10_000
    yield b'"}'


def test_a_chunked_body_over_the_limit_is_a_413(client: TestClient, acme: Tenant) -> None:
    headers = {**acme.headers, "Content-Type": "application/json"}
    response = client.post("/appointments", content=_chunks(2_000_000), headers=headers)
    assert response.status_code == 413
    assert response.json()["error"] == "too_large"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/appointments", {"title": 1}),
        ("post", "/appointments", b'{"title": '),
        ("post", "/appointments", b'\xff\xfe{"title"'),
        ("post", "/appointments", BOOKING | {"start": 12}),
        ("get", "/appointments?start=nonsense&end=2026-01-01T00:00:00Z", None),
        ("patch", "/appointments/not-a-uuid", {"title": None}),
        ("put", "/link/calendar", {"calendar_url": 5}),
        ("put", "/link/poll-interval", {"seconds": "soon"}),
    ],
)
def test_a_bad_token_is_a_401_whatever_the_body(
    client: TestClient, method: str, path: str, body: Any
) -> None:
    send = {"content": body} if isinstance(body, bytes) else {"json": body}
    headers = {**BAD_TOKEN, "Content-Type": "application/json"}
    response = client.request(method.upper(), path, headers=headers, **send)
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "unauthenticated"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("get", "/link", None),
        ("get", "/link/calendars", None),
        ("get", "/link/status", None),
        ("get", "/link/history", None),
        ("post", "/link/retry", None),
        ("post", "/link/poll", None),
        ("post", "/link/pause", None),
        ("post", "/link/resume", None),
        ("post", "/link/test", None),
        ("post", "/link/backfill", None),
        ("put", "/link/calendar", {"calendar_url": "https://cal.example.org/c/"}),
        ("put", "/link/poll-interval", {"seconds": 60}),
        ("delete", "/link", None),
    ],
)
def test_every_link_endpoint_is_a_404_without_a_link(
    client: TestClient, acme: Tenant, method: str, path: str, body: Any
) -> None:
    response = client.request(method.upper(), path, headers=acme.headers, json=body)
    assert response.status_code == 404, response.text
    assert response.json()["error"] == "not_found"


def test_times_are_answered_as_given_instants(client: TestClient, acme: Tenant) -> None:
    created = create(client, acme, start="2026-03-27T09:00:00Z", end="2026-03-27 10:00:00+00:00")
    assert datetime.fromisoformat(created["start"]) == datetime(2026, 3, 27, 9, tzinfo=UTC)
    assert created["end"] == "2026-03-27T11:00:00+01:00"
