"""Schema versions: a database of the last release opens and migrates; steps run once, whole.

Run on SQLite and PostgreSQL (real servers; the old release runs in a subprocess).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError
from psycopg.rows import dict_row

from caljournal.adapters.audit_chain import GENESIS, entry_hash
from caljournal.adapters.readmodel import INBOUND, Row
from caljournal.adapters.schema import (
    LATEST_VERSION,
    MIGRATIONS,
    SCHEMA_TABLE,
    Cursor,
    Migration,
    MigrationError,
    SchemaVersionError,
    Target,
    migrate,
)
from caljournal.api.app import create_app
from caljournal.bootstrap import Container, bootstrap
from caljournal.domain.account import ApiToken
from caljournal.domain.appointment import Appointment
from caljournal.maintenance import rebuild_read_models
from caljournal.projections.outbound import OutboundWorker
from caljournal.settings import load_settings
from tests.conftest import PG_URL, Tenant, open_tenant, operator
from tests.integration.test_outbound import FAST, book, new_calendar
from tests.support.calendars import differences, remote_events, wait_until
from tests.support.old_release import checkout, write_database
from tests.support.openapi import OpenAPIValidatingClient
from tests.support.radicale import RadicaleProcess

# The last release before schema versions: its databases have the tables, no versions.
LAST_UNVERSIONED_RELEASE = "a42edf7"
WINDOW = {"start": "2026-01-01T00:00:00+00:00", "end": "2027-01-01T00:00:00+00:00"}


def open_container(database_url: str, key_file: Path) -> Container:
    return bootstrap(
        load_settings(
            database_url=database_url,
            secret_key_file=key_file,
            allow_private_addresses=True,
            caldav_timeout=60,
        )
    )


@contextmanager
def raw_cursor(database_url: str) -> Iterator[tuple[Any, Target]]:
    """Yield an autocommit cursor of a connection of its own, and the migration target."""
    if database_url.startswith("sqlite:///"):
        path = database_url.removeprefix("sqlite:///")
        connection = sqlite3.connect(path, isolation_level=None, timeout=60)
        connection.row_factory = sqlite3.Row
        try:
            yield connection.cursor(), Target("sqlite", "", "stored_events")
        finally:
            connection.close()
        return
    schema = database_url.rsplit("schema=", 1)[1]
    with psycopg.connect(PG_URL, autocommit=True, row_factory=dict_row) as pg:
        qualify = f'"{schema}".'
        yield pg.cursor(), Target("postgresql", qualify, f'{qualify}"caljournal_events"')


def fetch(cursor: Any, target: Target, sql: str, params: list[Any] | None = None) -> list[Any]:
    cursor.execute(sql.encode() if target.dialect == "postgresql" else sql, params or [])
    return [dict(row) for row in cursor.fetchall()]


def tables(database_url: str) -> dict[str, list[dict[str, Any]]]:
    """Return every table of the database (events included) as sorted rows."""
    with raw_cursor(database_url) as (cursor, target):
        if target.dialect == "sqlite":
            names = [
                r["name"]
                for r in fetch(
                    cursor,
                    target,
                    "SELECT name FROM sqlite_master WHERE type = 'table' "
                    "AND name NOT LIKE 'sqlite_%'",
                )
            ]
        else:
            names = [
                r["table_name"]
                for r in fetch(
                    cursor,
                    target,
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                    [target.qualify.strip('".')],
                )
            ]
        return {
            name: sorted(
                (fetch(cursor, target, f'SELECT * FROM {target.qualify}"{name}"')),
                key=lambda row: repr(sorted(row.items())),
            )
            for name in sorted(names)
        }


def versions(database_url: str) -> list[int]:
    with raw_cursor(database_url) as (cursor, target):
        rows = fetch(cursor, target, f"SELECT version FROM {target.qualify}{SCHEMA_TABLE}")
    return sorted(r["version"] for r in rows)


# -- a database written by the last release ---------------------------------------------


def test_a_database_of_the_last_release_opens_intact_and_migrated(
    database_url: str, tmp_path: Path, radicale: RadicaleProcess
) -> None:
    calendar, path = new_calendar(radicale)
    key_file = tmp_path / "caljournal.key"
    packages = checkout(LAST_UNVERSIONED_RELEASE, tmp_path / "release")
    old = write_database(
        packages,
        database_url=database_url,
        key_file=str(key_file),
        calendar_url=radicale.url + path,
    )
    assert old["module"].startswith(str(packages))
    before = tables(database_url)
    assert SCHEMA_TABLE not in before
    assert len(before["caljournal_outbound"]) == 4
    assert before["caljournal_inbound"][0]["sync_token"]

    container = open_container(database_url, key_file)
    try:
        # Nothing the release wrote changed; appointments gained their positions.
        after = tables(database_url)
        assert versions(database_url) == [m.version for m in MIGRATIONS]
        rows = after["caljournal_appointments"]
        positions = {row["id"]: row.pop("position") for row in rows}
        after.pop(SCHEMA_TABLE)
        assert after.pop("caljournal_resyncs") == []  # new in version 3, empty
        chained = after.pop("caljournal_audit_chain")  # new in version 4: the old events chained
        assert after.pop("caljournal_personal_keys") == []  # new in version 5, empty
        for row in after["caljournal_inbound"]:  # version 6: the fetch mode, not yet learned
            assert row.pop("fetch_mode") is None
        assert after == before
        recorder = container.journal.journal_recorder
        assert_chained_whole(recorder, chained)
        for appointment_id, position in positions.items():
            assert position == max(recorder.select_positions(UUID(appointment_id)).values())

        account_id = UUID(old["account_id"])
        link = container.links.get(account_id)
        # The link's state has every field the release showed, and the newer ones.
        assert {key: link[key] for key in old["link"]} == old["link"]
        assert (link["resync_requests"], link["resync_requested"]) == (0, None)
        with OpenAPIValidatingClient(create_app(container)) as client:
            for token in old["tokens"]:
                listing = client.get(
                    "/appointments",
                    params={**WINDOW, "include_cancelled": "true"},
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert listing.status_code == 200, listing.text
                assert listing.json()["items"] == old["appointments"]
            assert container.sync.status(account_id)["pending"] == 0

            # The worker of this release carries on where the old one stopped.
            worker: OutboundWorker = container.outbound_worker(FAST).start()
            try:
                tenant = Tenant("acme", account_id, old["tokens"][0])
                created = book(client, tenant, "After the upgrade", 21)
                uid = f"{created['id']}@caljournal"
                wait_until(lambda: uid in remote_events(calendar), timeout=30)
                wait_until(lambda: not differences(container, account_id, calendar), timeout=30)
                assert all(len(copies) == 1 for copies in remote_events(calendar).values())
                assert len(remote_events(calendar)) == 5
            finally:
                worker.stop()
    finally:
        container.close()


def assert_chained_whole(recorder: Any, chained: list[dict[str, Any]]) -> None:
    """Check that every stored event has one chain entry and each chain recomputes."""
    positions = {
        (row["originator_id"], row["originator_version"]): row["position"] for row in chained
    }
    events = recorder.select_notifications(start=1, limit=100_000)
    assert len(chained) == len(positions) == len(events) > 0
    for event in events:
        key = (str(event.originator_id), event.originator_version)
        assert positions[key] == event.id
    for account_id in recorder.chain_accounts():
        previous = GENESIS
        entries = recorder.audit_entries(account_id, limit=100_000)
        assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
        for entry in entries:
            stored = entry.stored
            assert stored is not None and entry.stored_position == entry.position
            previous = entry_hash(
                previous, stored.originator_id, entry.originator_version, stored.topic, stored.state
            )
            assert previous == entry.entry_hash


# -- the lock: processes starting together ---------------------------------------------


def counting_migrations() -> list[Migration]:
    """Two steps whose every run leaves a row behind."""
    return [
        Migration(1, "a table", lambda t: [f"CREATE TABLE {t.qualify}ran (step INTEGER)"]),
        Migration(2, "a row", lambda t: [f"INSERT INTO {t.qualify}ran (step) VALUES (2)"]),
    ]


def test_concurrent_openers_apply_each_step_exactly_once(database_url: str) -> None:
    applied: list[list[int]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def opener() -> None:
        try:
            with raw_cursor(database_url) as (cursor, target):
                start.wait(timeout=60)
                applied.append(migrate(cursor, target, counting_migrations()))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert sorted(v for done in applied for v in done) == [1, 2]
    assert versions(database_url) == [1, 2]
    with raw_cursor(database_url) as (cursor, target):
        assert fetch(cursor, target, f"SELECT step FROM {target.qualify}ran") == [{"step": 2}]


def test_journals_opened_at_once_on_a_fresh_database_all_open(
    database_url: str, tmp_path: Path
) -> None:
    containers: list[Container] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def opener() -> None:
        try:
            start.wait(timeout=60)
            containers.append(open_container(database_url, tmp_path / "caljournal.key"))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    try:
        assert errors == []
        assert len(containers) == 4
        assert versions(database_url) == [m.version for m in MIGRATIONS]
    finally:
        for container in containers:
            container.close()


# -- a database newer than the code ----------------------------------------------------


def test_a_database_newer_than_the_code_is_refused_naming_both_versions(
    database_url: str, tmp_path: Path
) -> None:
    open_container(database_url, tmp_path / "caljournal.key").close()
    newer = LATEST_VERSION + 1
    with raw_cursor(database_url) as (cursor, target):
        p = target.placeholder
        fetch_none(
            cursor,
            target,
            f"INSERT INTO {target.qualify}{SCHEMA_TABLE} (version, applied_us, description) "
            f"VALUES ({p}, 0, 'from the future')",
            [newer],
        )
    with pytest.raises(SchemaVersionError) as raised:
        open_container(database_url, tmp_path / "caljournal.key")
    message = str(raised.value)
    assert f"version {newer}" in message and f"version {LATEST_VERSION}" in message


def fetch_none(cursor: Any, target: Target, sql: str, params: list[Any]) -> None:
    cursor.execute(sql.encode() if target.dialect == "postgresql" else sql, params)


# -- a step that fails midway ----------------------------------------------------------


def _half_done(cursor: Cursor, target: Target) -> None:
    p = target.placeholder
    fetch_none(cursor, target, f"INSERT INTO {target.qualify}kept (a, b) VALUES ({p}, {p})", [1, 2])
    fetch_none(cursor, target, f"INSERT INTO {target.qualify}no_such_table VALUES (1)", [])


def test_a_step_that_fails_midway_leaves_the_previous_version_whole(database_url: str) -> None:
    first = Migration(1, "a table", lambda t: [f"CREATE TABLE {t.qualify}kept (a INTEGER)"])
    failing = Migration(
        2,
        "a column, a row, then an error",
        statements=lambda t: [f"ALTER TABLE {t.qualify}kept ADD COLUMN b INTEGER"],
        run=_half_done,
    )
    with raw_cursor(database_url) as (cursor, target):
        with pytest.raises(MigrationError, match="migration 2 .* stays at version 1"):
            migrate(cursor, target, [first, failing])
        assert versions(database_url) == [1]
        # Neither the column nor the row survived the failed step.
        fetch_none(cursor, target, f"INSERT INTO {target.qualify}kept (a) VALUES (7)", [])
        assert fetch(cursor, target, f"SELECT * FROM {target.qualify}kept") == [{"a": 7}]

        fixed = Migration(
            2, "a column", lambda t: [f"ALTER TABLE {t.qualify}kept ADD COLUMN b INTEGER"]
        )
        assert migrate(cursor, target, [first, fixed]) == [2]
    assert versions(database_url) == [1, 2]


def test_steps_must_be_numbered_from_one_without_gaps(database_url: str) -> None:
    with raw_cursor(database_url) as (cursor, target), pytest.raises(SchemaVersionError):
        migrate(cursor, target, [MIGRATIONS[0], Migration(3, "a gap", lambda t: [])])


# -- positions written with every save -------------------------------------------------


def test_every_save_and_a_rebuild_write_the_latest_position(
    database_url: str, tmp_path: Path
) -> None:
    container = open_container(database_url, tmp_path / "caljournal.key")
    try:
        tenant = open_tenant(container, "acme")
        with OpenAPIValidatingClient(create_app(container)) as client:
            made = [book(client, tenant, f"Position {day}", day) for day in (3, 4, 5)]
            client.post(f"/appointments/{made[0]['id']}/cancel", headers=tenant.headers)
        recorder = container.journal.journal_recorder

        def stored() -> dict[str, int]:
            rows = recorder._fetch(  # noqa: SLF001
                f"SELECT id, position FROM {recorder.qualify}caljournal_appointments", []
            )
            return {r["id"]: r["position"] for r in rows}

        expected = {a["id"]: max(recorder.select_positions(UUID(a["id"])).values()) for a in made}
        assert stored() == expected
        assert expected[made[0]["id"]] == recorder.max_notification_id()
        rebuild_read_models(container.journal)
        assert stored() == expected
    finally:
        container.close()


def test_a_version_conflict_writes_no_row(database_url: str, tmp_path: Path) -> None:
    container = open_container(database_url, tmp_path / "caljournal.key")
    try:
        tenant = open_tenant(container, "acme")
        with OpenAPIValidatingClient(create_app(container)) as client:
            made = book(client, tenant, "Contested", 3)
        journal = container.journal
        recorder = journal.journal_recorder
        stale: Appointment = journal.repository.get(UUID(made["id"]))
        fresh: Appointment = journal.repository.get(UUID(made["id"]))
        _rename(fresh, "First")
        journal.save(fresh)
        _rename(stale, "Second")
        with pytest.raises(IntegrityError):
            journal.save(stale)
        row = recorder._fetch(  # noqa: SLF001
            f"SELECT doc, position, version FROM {recorder.qualify}caljournal_appointments", []
        )[0]
        assert row["version"] == fresh.version
        assert row["position"] == recorder.max_notification_id()
        assert '"title":"First"' in row["doc"]
    finally:
        container.close()


def _rename(appointment: Appointment, title: str) -> None:
    assert appointment.change_details(changes={"title": title}, cause=operator())


def test_a_row_that_fails_takes_its_events_back_with_it(database_url: str, tmp_path: Path) -> None:
    container = open_container(database_url, tmp_path / "caljournal.key")
    try:
        journal = container.journal
        first = ApiToken.issue(
            token_id=uuid4(), name="one", account_id=None, token_hash="same", cause=operator()
        )
        journal.save(first)
        before = journal.journal_recorder.max_notification_id()
        twin = ApiToken.issue(
            token_id=uuid4(), name="two", account_id=None, token_hash="same", cause=operator()
        )
        # The token hash is unique in the tokens table, written after the events insert.
        with pytest.raises(IntegrityError):
            journal.save(twin)
        assert journal.journal_recorder.select_positions(twin.id) == {}
        assert journal.journal_recorder.max_notification_id() == before
        assert [t["name"] for t in journal.journal_recorder.select_tokens(None)] == ["one"]
        # The connection is usable afterwards.
        assert journal.journal_recorder.select_token("same") is not None
    finally:
        container.close()


def test_rows_saved_without_events_are_written(database_url: str, tmp_path: Path) -> None:
    container = open_container(database_url, tmp_path / "caljournal.key")
    try:
        journal = container.journal
        account = str(uuid4())
        row = Row(INBOUND, {"account_id": account, "sync_token": "t1"}, "account_id", False)
        journal.save(extra_rows=[row])
        assert container.sync_state.inbound_state(account).sync_token == "t1"
    finally:
        container.close()
