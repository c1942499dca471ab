"""The account's change log: a scripted scenario read back in every format, CLI and API."""

from __future__ import annotations

import csv
import io
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from caljournal.accounts import hash_token
from caljournal.appointments import Booking
from caljournal.audit import AuditQuery, AuditService
from caljournal.bootstrap import Container
from caljournal.domain.cause import Cause, Origin
from caljournal.domain.link import CalendarLink
from caljournal.domain.quarantine import QuarantineLog
from caljournal.errors import InvalidInputError
from caljournal.maintenance import rebuild_read_models
from caljournal.projections.executor import BOOKING_SYSTEM_WINS
from caljournal.scripts.cli import app
from tests.conftest import Tenant, operator
from tests.integration.test_inbound import Linked, edit_remote
from tests.support.patience import HTTP_TIMEOUT
from tests.support.radicale import RadicaleProcess

PASSWORD = "hunter2"
SEALED_QUERY = "key=sealed-q-4f1c9e"
OPERATOR = Cause(Origin.OPERATOR, "operator:auditor-test", "corr-backfill")


@dataclass
class Scenario:
    """What the script did: the ids and values the change log must show."""

    a: str
    b: str
    link_id: str
    quarantine_id: str
    todo_href: str
    actor: str
    secrets: list[str]


def api(client: TestClient, tenant: Tenant, method: str, path: str, rid: str, **kw: Any) -> Any:
    headers = {**tenant.headers, "X-Request-ID": rid}
    response = client.request(method, path, headers=headers, **kw)
    assert response.status_code < 300, response.text
    return response.json()


@pytest.fixture
def scenario(
    container: Container, client: TestClient, acme: Tenant, radicale: RadicaleProcess
) -> Scenario:
    # Book, move and retitle through the API, with known correlation ids.
    a = api(
        client,
        acme,
        "POST",
        "/appointments",
        "req-book-a",
        json={
            "title": "Haircut",
            "start": "2026-04-06T10:00:00+02:00",
            "end": "2026-04-06T11:00:00+02:00",
            "timezone": "Europe/Berlin",
            "customer_email": "jonas@example.org",
        },
    )["id"]
    move = {"start": "2026-04-06T11:00:00+02:00", "end": "2026-04-06T12:00:00+02:00"}
    api(client, acme, "POST", f"/appointments/{a}/move", "req-move-a", json=move)
    api(client, acme, "PATCH", f"/appointments/{a}", "req-title-a", json={"title": "Haircut+"})

    # Link a real calendar (credentials and a secret URL query), then backfill A into it.
    cal_id = f"audit-{uuid.uuid4().hex[:8]}"
    calendar = radicale.make_calendar("bob", PASSWORD, cal_id, cal_id=cal_id)
    url = f"{radicale.url}bob/{cal_id}/"
    body = {"url": f"{url}?{SEALED_QUERY}", "username": "bob", "password": PASSWORD}
    api(client, acme, "POST", "/link", "req-link", json=body)
    container.resyncs.run_here(acme.account_id, "backfill", {}, OPERATOR, "audit-test")

    # Book B, push it, then edit B in the calendar and poll the edit in.
    linked = Linked(container, acme, calendar, None, url)  # type: ignore[arg-type]
    b_body = {
        "title": "Massage",
        "start": "2026-04-07T09:00:00+02:00",
        "end": "2026-04-07T10:00:00+02:00",
        "timezone": "Europe/Berlin",
    }
    b = api(client, acme, "POST", "/appointments", "req-book-b", json=b_body)["id"]
    linked.poll()
    assert linked.push() == 1
    linked.poll()
    edit_remote(calendar, f"{b}@caljournal", summary="Massage (remote)")
    assert linked.poll().counts == {"apply": 1}

    # A conflict: A changed here and in the calendar since the last sync.
    api(client, acme, "PATCH", f"/appointments/{a}", "req-local-a", json={"title": "Local"})
    edit_remote(calendar, f"{a}@caljournal", summary="Remote")
    assert linked.poll().counts == {"conflict": 1}

    # An object the poll cannot take in is quarantined.
    todo = (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\nBEGIN:VTODO\r\nUID:t1\r\n"
        "DTSTAMP:20260101T000000Z\r\nSUMMARY:Buy milk\r\nEND:VTODO\r\nEND:VCALENDAR\r\n"
    )
    with httpx.Client(auth=("bob", PASSWORD), timeout=HTTP_TIMEOUT) as raw:
        put = raw.put(
            url + "todo.ics", content=todo.encode(), headers={"Content-Type": "text/calendar"}
        )
        assert put.status_code in (200, 201, 204), put.text
    linked.poll()
    assert url + "todo.ics" in container.sync_state.quarantined(str(acme.account_id))

    principal = container.accounts.authenticate(acme.token)
    token_rows = container.journal.journal_recorder.select_tokens(str(acme.account_id))
    assert token_rows
    return Scenario(
        a=a,
        b=b,
        link_id=str(CalendarLink.id_for(acme.account_id)),
        quarantine_id=str(QuarantineLog.id_for(acme.account_id)),
        todo_href=url + "todo.ics",
        actor=principal.actor,
        secrets=[
            PASSWORD,
            "sealed-q-4f1c9e",
            acme.token,
            hash_token(acme.token),
            *(str(row["token_hash"]) for row in token_rows),
        ],
    )


# (aggregate, event type, origin, correlation id or prefix, {field: (old, new)})
def expectations(s: Scenario) -> list[tuple[str, str, str, str, dict[str, tuple[Any, Any]]]]:
    return [
        (
            s.a,
            "Booked",
            "api",
            "req-book-a",
            {
                "title": (None, "Haircut"),
                "start": (None, "2026-04-06T10:00:00+02:00"),
                "end": (None, "2026-04-06T11:00:00+02:00"),
                "customer_email": (None, "jonas@example.org"),
                "status": (None, "booked"),
            },
        ),
        (
            s.a,
            "Moved",
            "api",
            "req-move-a",
            {
                "start": ("2026-04-06T10:00:00+02:00", "2026-04-06T11:00:00+02:00"),
                "end": ("2026-04-06T11:00:00+02:00", "2026-04-06T12:00:00+02:00"),
                "sequence": (0, 1),
            },
        ),
        (s.a, "DetailsChanged", "api", "req-title-a", {"title": ("Haircut", "Haircut+")}),
        (s.link_id, "Linked", "api", "req-link", {"status": (None, "linked")}),
        (s.link_id, "ResyncRequested", "operator", "corr-backfill", {"resync_requests": (0, 1)}),
        (
            s.link_id,
            "ResyncRan",
            "operator",
            "corr-backfill",
            {"last_resync.kind": (None, "backfill")},
        ),
        (s.b, "Booked", "api", "req-book-b", {"title": (None, "Massage")}),
        (s.b, "DetailsChanged", "caldav", "poll-", {"title": ("Massage", "Massage (remote)")}),
        (s.a, "DetailsChanged", "api", "req-local-a", {"title": ("Haircut+", "Local")}),
        (
            s.a,
            "ConflictResolved",
            "caldav",
            "poll-",
            {
                "last_conflict.winner": (None, BOOKING_SYSTEM_WINS),
                "last_conflict.local.title": (None, "Local"),
                "last_conflict.remote.title": (None, "Remote"),
            },
        ),
    ]


@dataclass
class Row:
    """One record, however it was written: values as text where the format is text."""

    position: int
    aggregate_id: str
    event_type: str
    origin: str
    actor: str
    correlation_id: str
    changes: dict[str, tuple[Any, Any]]


def from_json(items: list[dict[str, Any]]) -> list[Row]:
    return [
        Row(
            i["position"],
            i["aggregate_id"],
            i["event_type"],
            i["origin"],
            i["actor"],
            i["correlation_id"],
            {c["field"]: (c["old"], c["new"]) for c in i["changes"]},
        )
        for i in items
    ]


def from_csv(text: str) -> list[Row]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows: dict[int, Row] = {}
    for line in reader:
        position = int(line["position"])
        row = rows.setdefault(
            position,
            Row(
                position,
                line["aggregate_id"],
                line["event_type"],
                line["origin"],
                line["actor"],
                line["correlation_id"],
                {},
            ),
        )
        if line["field"]:
            row.changes[line["field"]] = (line["old"], line["new"])
    return list(rows.values())


def text(value: Any) -> str:
    """Return how a value reads in CSV: empty for none, lower-case booleans."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def check(rows: list[Row], s: Scenario, *, as_text: bool) -> None:
    """Assert the scripted changes appear, in journal order, field by field."""
    positions = [r.position for r in rows]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    found = []
    for aggregate, event_type, origin, correlation, fields in expectations(s):
        matches = [
            r
            for r in rows
            if r.aggregate_id == aggregate
            and r.event_type == event_type
            and r.correlation_id.startswith(correlation)
        ]
        assert len(matches) == 1, (event_type, correlation, matches)
        row = matches[0]
        assert row.origin == origin
        if origin == "api":
            assert row.actor == s.actor
        for name, (old, new) in fields.items():
            want = (text(old), text(new)) if as_text else (old, new)
            assert row.changes.get(name) == want, (event_type, name, row.changes)
        found.append(row.position)
    assert found == sorted(found)
    (held,) = [r for r in rows if r.event_type == "ObjectQuarantined"]
    assert held.aggregate_id == s.quarantine_id and held.origin == "caldav"
    assert held.changes["event.href"] == (text(None) if as_text else None, s.todo_href)
    assert "VTODO" in held.changes["event.reason"][1]
    link_fields = {f for r in rows if r.aggregate_id == s.link_id for f in r.changes}
    assert "username" not in link_fields and not any("password" in f for f in link_fields)


def invoke(database_url: str, tmp_path: Path, *args: str) -> str:
    env = {
        "CALJOURNAL_DATABASE_URL": database_url,
        "CALJOURNAL_SECRET_KEY_FILE": str(tmp_path / "caljournal.key"),
    }
    result = CliRunner().invoke(app, ["audit", *args], env=env)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_the_change_log_shows_the_scenario_in_every_format(
    scenario: Scenario,
    container: Container,
    client: TestClient,
    acme: Tenant,
    database_url: str,
    tmp_path: Path,
) -> None:
    service = AuditService(container.journal)
    records = list(service.stream(AuditQuery(acme.account_id)))
    check(from_json([r.as_dict() for r in records]), scenario, as_text=False)
    # Forgetting every aggregate between events (rebuilt from the journal) changes nothing.
    forgetful = AuditService(container.journal, cache_size=1, page=2)
    assert list(forgetful.stream(AuditQuery(acme.account_id))) == records

    lines = invoke(database_url, tmp_path, "--account", "acme", "--format", "json")
    cli_json = [json.loads(line) for line in lines.splitlines()]
    check(from_json(cli_json), scenario, as_text=False)

    cli_csv = invoke(database_url, tmp_path, "--account", "acme", "--format", "csv")
    check(from_csv(cli_csv), scenario, as_text=True)
    assert cli_csv.splitlines()[0].startswith("position,seq,time,")

    table = invoke(database_url, tmp_path, "--account", "acme")
    for _, event_type, _, correlation, _ in expectations(scenario):
        assert event_type in table and correlation in table

    one_page = client.get("/audit?limit=5000", headers=acme.headers).json()
    assert one_page["next_after"] is None
    assert one_page["items"] == cli_json
    walked, after, pages = [], 0, 0
    while True:
        page = client.get(f"/audit?limit=3&after={after}", headers=acme.headers).json()
        walked.extend(page["items"])
        pages += 1
        if page["next_after"] is None:
            break
        after = page["next_after"]
    assert walked == cli_json and pages == -(-len(cli_json) // 3)

    as_csv = client.get("/audit", headers={**acme.headers, "Accept": "text/csv"})
    assert as_csv.status_code == 200 and as_csv.headers["content-type"].startswith("text/csv")
    assert as_csv.text.splitlines() == cli_csv.splitlines()

    for output in (lines, cli_csv, table, json.dumps(one_page), as_csv.text):
        for secret in scenario.secrets:
            assert secret not in output


def test_filters_apply_alike_in_the_service_the_cli_and_the_api(
    scenario: Scenario,
    container: Container,
    client: TestClient,
    acme: Tenant,
    database_url: str,
    tmp_path: Path,
) -> None:
    service = AuditService(container.journal)
    everything = list(service.stream(AuditQuery(acme.account_id)))
    by_time = sorted(r.time for r in everything if r.time)
    since, until = by_time[3], by_time[-3]
    cases: list[tuple[dict[str, Any], list[str], dict[str, str], Any]] = [
        (
            {"event_type": "Moved"},
            ["--type", "Moved"],
            {"type": "Moved"},
            lambda r: r.event_type == "Moved",
        ),
        (
            {"event_type": "caljournal:Appointment.DetailsChanged"},
            ["--type", "caljournal:Appointment.DetailsChanged"],
            {"type": "caljournal:Appointment.DetailsChanged"},
            lambda r: r.topic == "caljournal:Appointment.DetailsChanged",
        ),
        (
            {"origin": "caldav"},
            ["--origin", "caldav"],
            {"origin": "caldav"},
            lambda r: r.origin == "caldav",
        ),
        (
            {"actor": scenario.actor},
            ["--actor", scenario.actor],
            {"actor": scenario.actor},
            lambda r: r.actor == scenario.actor,
        ),
        (
            {"appointment_id": UUID(scenario.a)},
            ["--appointment", scenario.a],
            {"appointment": scenario.a},
            lambda r: r.aggregate_id == scenario.a,
        ),
        (
            {"since": since, "until": until},
            ["--since", since.isoformat(), "--until", until.isoformat()],
            {"since": since.isoformat(), "until": until.isoformat()},
            lambda r: r.time is not None and since <= r.time <= until,
        ),
    ]
    for query, cli_args, params, wanted in cases:
        expected = [r.as_dict() for r in everything if wanted(r)]
        assert expected, query
        got = [r.as_dict() for r in service.stream(AuditQuery(acme.account_id, **query))]
        assert got == expected, query
        lines = invoke(database_url, tmp_path, "--account", "acme", "--format", "json", *cli_args)
        assert [json.loads(line) for line in lines.splitlines()] == expected, cli_args
        page = client.get("/audit", params=params, headers=acme.headers).json()
        assert page["items"] == expected and page["next_after"] is None, params


def test_operators_name_the_account_and_bad_filters_are_refused(
    scenario: Scenario, container: Container, client: TestClient, acme: Tenant
) -> None:
    issued = container.accounts.issue_token(None, "auditor", operator())
    as_operator = {"Authorization": f"Bearer {issued.secret}"}
    own = client.get("/audit", headers=acme.headers).json()
    assert client.get("/audit?account=acme", headers=as_operator).json() == own
    missing = client.get("/audit", headers=as_operator)
    assert missing.status_code == 404 and "account" in missing.json()["message"]
    assert client.get("/audit?account=globex", headers=acme.headers).status_code == 404
    bad_type = client.get("/audit?type=Nope", headers=acme.headers)
    assert bad_type.status_code == 422 and bad_type.json()["field"] == "type"
    assert client.get("/audit?origin=email", headers=acme.headers).status_code == 422
    assert client.get("/audit?limit=5001", headers=acme.headers).status_code == 422
    with pytest.raises(InvalidInputError):
        AuditQuery(acme.account_id, event_type="Nope")


def test_a_rebuild_of_the_query_tables_is_recorded_in_every_account_log(
    container: Container, acme: Tenant, globex: Tenant
) -> None:
    cause = Cause(Origin.OPERATOR, "operator:rebuilder", "corr-rebuild")
    read, _ = rebuild_read_models(container.journal, cause=cause)
    service = AuditService(container.journal)
    for tenant in (acme, globex):
        query = AuditQuery(tenant.account_id, event_type="ReadModelsRebuilt")
        (record,) = service.stream(query)
        assert (record.aggregate_id, record.origin, record.actor, record.correlation_id) == (
            str(tenant.account_id),
            "operator",
            "operator:rebuilder",
            "corr-rebuild",
        )
        assert record.changes == [("last_rebuild.events_read", None, read)]


def test_an_erased_appointment_shows_erased_in_every_record_of_the_log(
    container: Container, client: TestClient, acme: Tenant, database_url: str, tmp_path: Path
) -> None:
    """After an erasure the log keeps every change of the appointment, its texts erased."""
    start = datetime(2027, 5, 3, 9, tzinfo=UTC)
    booked = container.appointments.book(
        acme.account_id,
        Booking(
            "Colour for Ms Example",
            start,
            start + timedelta(hours=1),
            "Europe/Berlin",
            description="allergic to ammonia",
            customer_name="Erika Example",
            customer_email="erika@example.org",
        ),
        Cause(Origin.API, "token:acme/default", "req-book"),
    )
    appointment_id = UUID(booked.state["id"])
    container.appointments.change_details(
        None, appointment_id, {"title": "Colour and cut for Ms Example"}, operator()
    )
    erasing = Cause(Origin.OPERATOR, "operator:dpo", "req-erase")
    container.erasure.erase(None, appointment_id, "erasure request 2027-05", erasing)

    records = list(
        AuditService(container.journal).stream(
            AuditQuery(acme.account_id, appointment_id=appointment_id)
        )
    )
    assert [r.event_type for r in records] == ["Booked", "DetailsChanged", "Erased"]
    shown = json.dumps([r.as_dict() for r in records])
    for secret in ("Ms Example", "ammonia", "Erika", "erika@example.org"):
        assert secret not in shown
    booked_record = records[0].as_dict()["changes"]
    titles = [c for c in booked_record if c["field"] == "title"]
    assert titles == [{"field": "title", "old": None, "new": "[erased]"}]
    erased = records[-1]
    assert (erased.origin, erased.actor, erased.correlation_id) == (
        "operator",
        "operator:dpo",
        "req-erase",
    )
    assert ("event.reason", None, "erasure request 2027-05") in erased.changes
    # Times and status stay readable.
    assert any(c[0] == "start" for c in records[0].changes)

    # Every format shows the same: the erasure, its reason, the texts erased, nothing personal.
    only = ("--account", "acme", "--appointment", str(appointment_id))
    cli_json = [
        json.loads(line)
        for line in invoke(database_url, tmp_path, *only, "--format", "json").splitlines()
    ]
    assert cli_json == [r.as_dict() for r in records]
    cli_csv = invoke(database_url, tmp_path, *only, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(cli_csv)))
    assert {(r["event_type"], r["field"], r["new"]) for r in rows} >= {
        ("Booked", "title", "[erased]"),
        ("Erased", "event.reason", "erasure request 2027-05"),
    }
    # The retitle stays in the log as an event; which erased text it changed no longer shows.
    assert "DetailsChanged" in {r["event_type"] for r in rows}
    table = invoke(database_url, tmp_path, *only)
    assert "Erased" in table and "[erased]" in table
    api_json = client.get(
        f"/audit?appointment={appointment_id}&limit=5000", headers=acme.headers
    ).json()
    assert api_json["items"] == cli_json
    api_csv = client.get(
        f"/audit?appointment={appointment_id}", headers={**acme.headers, "Accept": "text/csv"}
    ).text
    assert api_csv.splitlines() == cli_csv.splitlines()
    for output in (cli_csv, table, json.dumps(cli_json), api_csv):
        for secret in ("Ms Example", "ammonia", "Erika", "erika@example.org"):
            assert secret not in output
