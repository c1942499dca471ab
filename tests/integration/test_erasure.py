"""Erasing personal data: gone from the stored bytes, the API, history, read models and calendar.

The tests run on SQLite and PostgreSQL, with the journal cipher key on and off
(the database an older release wrote: off, as it was); with it off, the stored
bytes prove the per-appointment field encryption.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import caldav
import psycopg
import pytest
from eventsourcing.cipher import AESCipher
from fastapi.testclient import TestClient

from caljournal.adapters.audit_verify import verify_all
from caljournal.adapters.secrets import Credentials
from caljournal.api.app import create_app
from caljournal.appointments import Booking
from caljournal.audit import AuditQuery, AuditService
from caljournal.bootstrap import Container, bootstrap
from caljournal.maintenance import rebuild_read_models
from caljournal.projections.outbound import OutboundWorker
from caljournal.settings import load_settings
from tests.conftest import PG_URL, Tenant, open_tenant, operator
from tests.integration.test_cli import run
from tests.integration.test_inbound import Linked, edit_remote
from tests.integration.test_migrations import LAST_UNVERSIONED_RELEASE
from tests.integration.test_outbound import FAST
from tests.support.calendars import remote_events, wait_until
from tests.support.faultproxy import FaultProxy
from tests.support.old_release import checkout, write_database
from tests.support.openapi import OpenAPIValidatingClient
from tests.support.radicale import RadicaleProcess

BERLIN = ZoneInfo("Europe/Berlin")
PERSONAL = {
    "title": "Therapy Mrs Quentin-Zabriskie",
    "location": "Lindenstrasse 17 Hinterhaus",
    "description": "Diagnosis: chronic ukulele elbow",
    "customer_name": "Quentin-Zabriskie",
    "customer_email": "q.zabriskie@example.org",
}
CHANGED_DESCRIPTION = "Follow-up of the xylophone allergy"
SECRETS = [*PERSONAL.values(), CHANGED_DESCRIPTION]


@pytest.fixture(params=["plain", "journal-cipher"])
def settings_args(
    request: pytest.FixtureRequest, database_url: str, tmp_path: Path
) -> dict[str, Any]:
    """Return the settings of a fresh journal, with and without the journal cipher key."""
    args: dict[str, Any] = {
        "database_url": database_url,
        "secret_key_file": tmp_path / "caljournal.key",
        "allow_private_addresses": True,
        "caldav_timeout": 60,
    }
    if request.param == "journal-cipher":
        args["journal_cipher_key"] = AESCipher.create_key(32)
    return args


@pytest.fixture
def erasing(settings_args: dict[str, Any]) -> Iterator[Container]:
    built = bootstrap(load_settings(**settings_args))
    yield built
    built.close()


@pytest.fixture
def api(erasing: Container) -> Iterator[TestClient]:
    with OpenAPIValidatingClient(create_app(erasing)) as test_client:
        yield test_client


@pytest.fixture
def tenant(erasing: Container) -> Tenant:
    return open_tenant(erasing, "acme")


def stored_bytes(container: Container, table: str, column: str) -> bytes:
    """Return the bytes of one column of every row of a table, concatenated."""
    url = container.settings.database_url
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            rows = [r[0] for r in conn.execute(f"SELECT {column} FROM {table}")]
    else:
        schema = url.split("schema=")[1]
        with psycopg.connect(PG_URL) as conn:
            rows = [r[0] for r in conn.execute(f'SELECT {column} FROM "{schema}"."{table}"')]
    return b"\n".join(r.encode() if isinstance(r, str) else bytes(r) for r in rows)


def event_bytes(container: Container) -> bytes:
    """Return every stored event's state bytes."""
    return stored_bytes(container, container.journal.journal_recorder.events_table_name, "state")


def book(api: TestClient, tenant: Tenant, day: int, **fields: Any) -> dict[str, Any]:
    start = datetime(2026, 5, day, 10, tzinfo=BERLIN)
    body = {
        "timezone": "Europe/Berlin",
        "start": start.isoformat(),
        "end": (start + timedelta(minutes=50)).isoformat(),
        **PERSONAL,
        **fields,
    }
    response = api.post("/appointments", json=body, headers=tenant.headers)
    assert response.status_code == 201, response.text
    return response.json()


def assert_erased(state: dict[str, Any]) -> None:
    assert state["erased_on"] is not None
    assert state["title"] == "[erased]"
    assert state["location"] == "[erased]"
    assert state["description"] == "[erased]"
    assert state["customer_name"] == "[erased]"
    assert state["customer_email"] is None


def no_secret_in(text: str | bytes) -> bool:
    data = text if isinstance(text, bytes) else text.encode()
    return not [s for s in SECRETS if s.encode() in data]


@pytest.fixture
def worker(erasing: Container) -> Iterator[OutboundWorker]:
    running = erasing.outbound_worker(FAST).start()
    yield running
    running.stop()


def linked_calendar(
    container: Container, tenant: Tenant, radicale: RadicaleProcess
) -> caldav.Calendar:
    cal_id = f"cal-{uuid.uuid4().hex[:8]}"
    calendar = radicale.make_calendar("alice", "secret", cal_id, cal_id=cal_id)
    result = container.links.link(
        tenant.account_id,
        f"{radicale.url}alice/{cal_id}/",
        Credentials("alice", "secret"),
        operator(),
    )
    assert result.state["status"] == "active"
    return calendar


def test_erasure_removes_personal_data_everywhere_and_keeps_the_rest(
    erasing: Container,
    api: TestClient,
    tenant: Tenant,
    radicale: RadicaleProcess,
    worker: OutboundWorker,
    settings_args: dict[str, Any],
) -> None:
    calendar = linked_calendar(erasing, tenant, radicale)
    booked = book(api, tenant, 12)
    path = f"/appointments/{booked['id']}"
    changed = api.patch(path, json={"description": CHANGED_DESCRIPTION}, headers=tenant.headers)
    assert changed.status_code == 200, changed.text
    uid = f"{booked['id']}@caljournal"
    wait_until(
        lambda: [
            e
            for e in remote_events(calendar).get(uid, [])
            if CHANGED_DESCRIPTION in str(e.get("DESCRIPTION"))
        ],
        timeout=10,
    )
    # With the journal cipher off, this holds only because of the field encryption.
    assert no_secret_in(event_bytes(erasing))
    history_before = api.get(f"{path}/history", headers=tenant.headers).json()["entries"]

    response = api.post(f"{path}/erase", json={"reason": "customer asked"}, headers=tenant.headers)

    assert response.status_code == 200, response.text
    erased = response.json()
    assert_erased(erased)
    assert (erased["start"], erased["end"], erased["status"]) == (
        booked["start"],
        booked["end"],
        "booked",
    )
    assert no_secret_in(event_bytes(erasing))
    assert no_secret_in(stored_bytes(erasing, "caljournal_appointments", "doc"))
    key_row = erasing.journal.personal_keys.status(uuid.UUID(booked["id"]))
    assert key_row is not None
    assert not key_row["has_key"]
    assert key_row["erased_by"] == erased_actor(api, path, tenant)
    got = api.get(path, headers=tenant.headers).json()
    assert_erased(got)
    history = api.get(f"{path}/history", headers=tenant.headers).json()["entries"]
    assert len(history) == len(history_before) + 1
    assert history[-1]["type"] == "Erased"
    assert history[-1]["changes"]["erasure_reason"]["new"] == "customer asked"
    assert no_secret_in(json.dumps(history))
    # The calendar copy is written again without the personal data.
    event = wait_until(
        lambda: [
            e
            for e in remote_events(calendar).get(uid, [])
            if str(e["SUMMARY"]) == "Appointment" and int(e["SEQUENCE"]) == erased["sequence"]
        ],
        timeout=10,
    )[0]
    assert "DESCRIPTION" not in event and "LOCATION" not in event
    assert no_secret_in(b"".join(o.data.encode() for o in calendar.get_events()))
    # Times still change; personal fields stay erased.
    moved = api.post(
        f"{path}/move",
        json={
            "start": datetime(2026, 5, 13, 9, tzinfo=BERLIN).isoformat(),
            "end": datetime(2026, 5, 13, 10, tzinfo=BERLIN).isoformat(),
        },
        headers=tenant.headers,
    )
    assert moved.status_code == 200, moved.text
    assert_erased(moved.json())
    refused = api.patch(path, json={"title": "Back again"}, headers=tenant.headers)
    assert refused.status_code == 422
    assert refused.json()["field"] == "title"
    # A rebuild of the query tables and another process keep it erased.
    rebuild_read_models(erasing.journal)
    listed = api.get(
        "/appointments",
        params={"start": "2026-05-01T00:00:00+02:00", "end": "2026-06-01T00:00:00+02:00"},
        headers=tenant.headers,
    ).json()["items"]
    assert [i["id"] for i in listed] == [booked["id"]]
    assert_erased(listed[0])
    other = bootstrap(load_settings(**settings_args))
    try:
        state = other.appointments.get(None, uuid.UUID(booked["id"]))
        assert_erased(state)
        assert no_secret_in(json.dumps(other.appointments.history(None, uuid.UUID(booked["id"]))))
    finally:
        other.close()


def erased_actor(api: TestClient, path: str, tenant: Tenant) -> str:
    history = api.get(f"{path}/history", headers=tenant.headers).json()["entries"]
    return str(history[-1]["actor"])


def test_another_process_reads_an_appointment_erased_after_it_loaded_the_key(
    erasing: Container, api: TestClient, tenant: Tenant, settings_args: dict[str, Any]
) -> None:
    booked = book(api, tenant, 14)
    appointment_id = uuid.UUID(booked["id"])
    other = bootstrap(load_settings(**settings_args))
    try:
        assert other.appointments.get(None, appointment_id)["title"] == PERSONAL["title"]

        erasing.erasure.erase(None, appointment_id, "retention period over", operator())

        # The other process read the key before: its next read must not use it.
        first_event = next(iter(other.journal.events.get(appointment_id)))
        assert vars(first_event)["title"] == "[erased]"
        assert_erased(other.appointments.get(None, appointment_id))
    finally:
        other.close()


def test_erasing_by_customer_email_erases_every_match_and_nothing_else(
    erasing: Container, api: TestClient, tenant: Tenant
) -> None:
    globex = open_tenant(erasing, "globex")
    first = book(api, tenant, 4)
    second = book(api, tenant, 5, customer_email="Q.Zabriskie@Example.org")
    other_customer = book(api, tenant, 6, customer_email="someone@example.org")
    other_account = book(api, globex, 7)

    found = erasing.erasure.targets(tenant.account_id, customer_email="q.zabriskie@example.org")
    assert sorted(str(t.appointment_id) for t in found) == sorted([first["id"], second["id"]])
    for target in found:
        erasing.erasure.erase(tenant.account_id, target.appointment_id, "request", operator())

    for erased in (first, second):
        assert_erased(erasing.appointments.get(None, uuid.UUID(erased["id"])))
    for kept in (other_customer, other_account):
        state = erasing.appointments.get(None, uuid.UUID(kept["id"]))
        assert state["erased_on"] is None
        assert state["title"] == PERSONAL["title"]


def test_another_account_cannot_erase(erasing: Container, api: TestClient, tenant: Tenant) -> None:
    globex = open_tenant(erasing, "globex")
    booked = book(api, tenant, 8)

    response = api.post(
        f"/appointments/{booked['id']}/erase", json={"reason": "x"}, headers=globex.headers
    )

    assert response.status_code == 404
    assert erasing.appointments.get(None, uuid.UUID(booked["id"]))["title"] == PERSONAL["title"]


def test_cli_lists_first_and_erases_with_yes(
    erasing: Container,
    api: TestClient,
    tenant: Tenant,
    tmp_path: Path,
    settings_args: dict[str, Any],
) -> None:
    booked = book(api, tenant, 9)
    env = {
        "CALJOURNAL_DATABASE_URL": settings_args["database_url"],
        "CALJOURNAL_SECRET_KEY_FILE": str(settings_args["secret_key_file"]),
    }
    if "journal_cipher_key" in settings_args:
        env["CALJOURNAL_JOURNAL_CIPHER_KEY"] = settings_args["journal_cipher_key"]
    args = ["erase", "--account", "acme", "--customer-email", PERSONAL["customer_email"]]
    args += ["--reason", "customer asked", "--actor", "dpo:alice", "--json"]
    cwd = tmp_path / "shell"
    cwd.mkdir()

    dry = run(args, cwd, **env)

    assert dry.returncode == 0, dry.stderr
    assert [row["appointment"] for row in json.loads(dry.stdout)] == [booked["id"]]
    assert erasing.appointments.get(None, uuid.UUID(booked["id"]))["erased_on"] is None

    done = run([*args, "--yes"], cwd, **env)

    assert done.returncode == 0, done.stderr
    assert [row["state"] for row in json.loads(done.stdout)] == ["erased now"]
    assert_erased(erasing.appointments.get(None, uuid.UUID(booked["id"])))
    history = erasing.appointments.history(None, uuid.UUID(booked["id"]))
    assert (history[-1]["type"], history[-1]["actor"]) == ("Erased", "dpo:alice")


def test_events_an_older_release_wrote_in_clear_read_as_erased_after_erasure(
    database_url: str, tmp_path: Path, radicale: RadicaleProcess
) -> None:
    cal_id = f"cal-{uuid.uuid4().hex[:8]}"
    radicale.make_calendar("alice", "secret", cal_id, cal_id=cal_id)
    key_file = tmp_path / "caljournal.key"
    packages = checkout(LAST_UNVERSIONED_RELEASE, tmp_path / "release")
    old = write_database(
        packages,
        database_url=database_url,
        key_file=str(key_file),
        calendar_url=f"{radicale.url}alice/{cal_id}/",
    )
    # The release booked "Old release 4" and then set its location: two events in clear.
    written = next(a for a in old["appointments"] if a["title"] == "Old release 4")
    appointment_id = uuid.UUID(written["id"])
    container = bootstrap(
        load_settings(
            database_url=database_url, secret_key_file=key_file, allow_private_addresses=True
        )
    )
    try:
        account_id = uuid.UUID(old["account_id"])
        [target] = container.erasure.targets(account_id, appointment_id=appointment_id)
        assert target.clear_events == 2

        outcome = container.erasure.erase(account_id, appointment_id, "request", operator())

        assert outcome.clear_events == 2
        state = container.appointments.get(None, appointment_id)
        assert (state["title"], state["location"]) == ("[erased]", "[erased]")
        assert state["start"] == written["start"]
        entries = container.appointments.history(None, appointment_id)
        assert "Old release 4" not in json.dumps(entries) and "Salon" not in json.dumps(entries)
        # Its state as of before the erasure (what a replay pushes) shows it erased too.
        before = datetime.fromisoformat(entries[1]["timestamp"])
        then = container.appointments.get(None, appointment_id, as_of=before)
        assert (then["title"], then["location"]) == ("[erased]", "[erased]")
        assert then["version"] == 2
        # Stored bytes are never rewritten: the old events keep their clear text.
        assert b"Old release 4" in event_bytes(container)
    finally:
        container.close()


def test_keys_are_stored_sealed_when_the_journal_cipher_key_is_set(
    erasing: Container, api: TestClient, tenant: Tenant, settings_args: dict[str, Any]
) -> None:
    book(api, tenant, 10)

    stored = stored_bytes(erasing, "caljournal_personal_keys", "key")

    sealed = "journal_cipher_key" in settings_args
    assert stored.startswith(b"sealed:" if sealed else b"plain:")


def test_the_calendars_edits_of_an_erased_appointment_move_it_but_bring_nothing_back(
    erasing: Container, tenant: Tenant, radicale: RadicaleProcess
) -> None:
    cal_id = f"in-{uuid.uuid4().hex[:8]}"
    calendar = radicale.make_calendar("alice", "secret", cal_id, cal_id=cal_id)
    with FaultProxy(radicale.url) as proxy:
        result = erasing.links.link(
            tenant.account_id,
            f"{proxy.url}alice/{cal_id}/",
            Credentials("alice", "secret"),
            operator(),
        )
        linked = Linked(erasing, tenant, calendar, proxy, str(result.state["calendar_url"]))
        start = datetime(2026, 4, 6, 10, tzinfo=BERLIN)
        ours = erasing.appointments.book(
            tenant.account_id,
            Booking(
                **{**PERSONAL, "start": start, "end": start + timedelta(hours=1)},
                timezone="Europe/Berlin",
            ),
            operator(),
        ).state
        calendar.save_event(
            dtstart=datetime(2026, 4, 7, 9, tzinfo=BERLIN),
            dtend=datetime(2026, 4, 7, 9, 30, tzinfo=BERLIN),
            summary=PERSONAL["title"],
            location=PERSONAL["location"],
            uid="foreign-1@example.org",
        )
        linked.poll()
        linked.push()
        linked.poll()
        [imported] = [
            s
            for s in linked.container.appointments.list_window(
                tenant.account_id, start - timedelta(days=1), start + timedelta(days=3)
            )
            if s["calendar_uid"] == "foreign-1@example.org"
        ]
        for appointment in (ours, imported):
            erasing.erasure.erase(None, uuid.UUID(appointment["id"]), "request", operator())
        linked.push()
        assert linked.poll().counts == {}
        assert no_secret_in(b"".join(o.data.encode() for o in calendar.get_events()))

        edit_remote(
            calendar,
            f"{ours['id']}@caljournal",
            summary="Quentin-Zabriskie again",
            dtstart=datetime(2026, 4, 20, 15, tzinfo=BERLIN),
            dtend=datetime(2026, 4, 20, 16, tzinfo=BERLIN),
        )
        report = linked.poll()

        assert report.counts == {"apply": 1}, report.counts
        state = linked.state(ours["id"])
        assert state["start"] == "2026-04-20T15:00:00+02:00"
        assert_erased(state)
        assert linked.history(ours["id"])[-1]["type"] == "Moved"
        assert b"again" not in event_bytes(erasing)
        # The calendar keeps what its user typed until the next change is pushed.
        erasing.appointments.move(
            None,
            uuid.UUID(ours["id"]),
            datetime(2026, 4, 21, 15, tzinfo=BERLIN),
            datetime(2026, 4, 21, 16, tzinfo=BERLIN),
            operator(),
        )
        assert linked.push() == 1
        event = remote_events(calendar)[f"{ours['id']}@caljournal"][0]
        assert str(event["SUMMARY"]) == "Appointment"
        assert event.decoded("DTSTART") == datetime(2026, 4, 21, 15, tzinfo=BERLIN)


def test_after_an_erasure_the_chain_verifies_and_a_replay_and_the_audit_log_keep_it_erased(
    erasing: Container, api: TestClient, tenant: Tenant, radicale: RadicaleProcess
) -> None:
    calendar = linked_calendar(erasing, tenant, radicale)
    booked = book(api, tenant, 15)
    appointment_id = uuid.UUID(booked["id"])
    erasing.sync.backfill(tenant.account_id, operator())
    uid = f"{booked['id']}@caljournal"
    assert not no_secret_in(b"".join(o.data.encode() for o in calendar.get_events()))

    erasing.erasure.erase(None, appointment_id, "customer asked", operator())
    # The events stay as written: the chain verifies, and so does every other chain.
    reports = verify_all(erasing.journal.journal_recorder)
    assert all(r.ok for r in reports), [r.problem for r in reports if not r.ok]

    # A replay writes the calendar from the journal: the copy shows nothing erased.
    summary = erasing.sync.replay(tenant.account_id, operator())
    assert not summary.failed
    (event,) = remote_events(calendar)[uid]
    assert str(event["SUMMARY"]) == "Appointment"
    assert no_secret_in(b"".join(o.data.encode() for o in calendar.get_events()))
    # The audit log shows every change of the appointment, its texts erased.
    records = list(
        AuditService(erasing.journal).stream(
            AuditQuery(tenant.account_id, appointment_id=appointment_id)
        )
    )
    assert records[-1].event_type == "Erased" and len(records) >= 2
    assert no_secret_in(json.dumps([r.as_dict() for r in records]))
