"""An appointment has one representation: the same in a list and alone, as OpenAPI says.

The ``client`` fixture checks every answer against the published OpenAPI
document (tests/support/openapi.py); these tests pin what a list and a single
GET must agree on.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from fastapi.testclient import TestClient

from caljournal.bootstrap import Container
from caljournal.domain.appointment import Appointment
from caljournal.domain.cause import Cause, Origin
from caljournal.domain.values import RemoteFields
from tests.conftest import Tenant

BERLIN = ZoneInfo("Europe/Berlin")
WINDOW = {"start": "2026-03-01T00:00:00+01:00", "end": "2026-05-01T00:00:00+02:00"}
CALDAV = Cause(Origin.CALDAV, "sync:tests", "poll-tests")


def _import_weekly(container: Container, tenant: Tenant) -> str:
    start = datetime(2026, 3, 26, 10, tzinfo=BERLIN)
    moved = datetime(2026, 4, 9, 14, tzinfo=BERLIN)
    remote = RemoteFields(
        title="Team call",
        start=start,
        end=start + timedelta(hours=1),
        timezone="Europe/Berlin",
        calendar_uid="weekly@example.org",
        recurrence={
            "rrule": ["RRULE:FREQ=WEEKLY;COUNT=3"],
            "rdate": [],
            "exdate": [],
            "overrides": [
                {
                    "recurrence_id": "RECURRENCE-ID;TZID=Europe/Berlin:20260409T100000",
                    "start": moved.isoformat(),
                    "end": (moved + timedelta(hours=1)).isoformat(),
                    "title": "Team call (moved)",
                    "location": None,
                    "description": None,
                    "status": None,
                }
            ],
        },
    )
    appointment = Appointment.import_from_calendar(
        appointment_id=uuid.uuid4(), account_id=tenant.account_id, remote=remote, cause=CALDAV
    )
    container.journal.save(appointment)
    return str(appointment.id)


def _get(client: TestClient, tenant: Tenant, appointment_id: str) -> dict[str, Any]:
    response = client.get(f"/appointments/{appointment_id}", headers=tenant.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_a_listed_appointment_is_the_document_a_get_returns(
    client: TestClient, acme: Tenant
) -> None:
    booking = {
        "title": "Haircut",
        "start": "2026-03-27T10:00:00+01:00",
        "end": "2026-03-27T10:45:00+01:00",
        "timezone": "Europe/Berlin",
    }
    booked = client.post("/appointments", json=booking, headers=acme.headers).json()
    listed = client.get("/appointments", params=WINDOW, headers=acme.headers).json()
    single = _get(client, acme, booked["id"])
    assert listed == {"items": [single], "count": 1}
    assert single == booked
    assert single["occurrence"] is None and single["all_day"] is False
    assert single["created_on"].endswith("+00:00")


def test_occurrences_of_a_recurring_appointment_are_told_apart_in_a_list(
    client: TestClient, container: Container, acme: Tenant
) -> None:
    appointment_id = _import_weekly(container, acme)
    items = client.get("/appointments", params=WINDOW, headers=acme.headers).json()["items"]
    single = _get(client, acme, appointment_id)
    assert [(i["start"], i["occurrence"], i["title"]) for i in items] == [
        ("2026-03-26T10:00:00+01:00", "2026-03-26T10:00:00+01:00", "Team call"),
        ("2026-04-02T10:00:00+02:00", "2026-04-02T10:00:00+02:00", "Team call"),
        ("2026-04-09T14:00:00+02:00", "2026-04-09T10:00:00+02:00", "Team call (moved)"),
    ]
    per_occurrence = {"start", "end", "occurrence", "title"}
    for item in items:
        assert item.keys() == single.keys()
        assert {k: v for k, v in item.items() if k not in per_occurrence} == {
            k: v for k, v in single.items() if k not in per_occurrence
        }
    assert single["occurrence"] is None
    assert single["calendar_uid"] == "weekly@example.org"
    assert single["recurrence"]["rrule"] == ["RRULE:FREQ=WEEKLY;COUNT=3"]
