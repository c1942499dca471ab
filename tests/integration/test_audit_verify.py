"""Verifying the audit chain: rows edited, deleted, swapped or inserted directly in the database.

Each tampering test changes acme's journal or chain with plain SQL, then checks
that verification names exactly the first bad entry (its seq and kind), and
that globex's chain and the operators' chain still verify clean.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest
from typer.testing import CliRunner, Result

from caljournal.adapters.audit_chain import CHAIN, GENESIS, ChainEntry, entry_hash
from caljournal.adapters.audit_report import ExportedHead, HeadFormatError
from caljournal.adapters.audit_verify import verify, verify_all
from caljournal.adapters.recorders import JournalRecorder, SQLiteJournalRecorder
from caljournal.adapters.secrets import Credentials
from caljournal.appointments import Booking
from caljournal.bootstrap import Container
from caljournal.domain.cause import Cause, Origin
from caljournal.scripts.cli import app
from tests.conftest import PG_URL, Tenant, operator
from tests.support.radicale import RadicaleProcess

API = Cause(Origin.API, "token:test", "req-verify")
START = datetime(2027, 3, 1, 9, tzinfo=UTC)


class Database:
    """Plain SQL on the journal's database, beside the application's own connections."""

    def __init__(self, container: Container, database_url: str) -> None:
        self.recorder: JournalRecorder = container.journal.journal_recorder
        self.sqlite = isinstance(self.recorder, SQLiteJournalRecorder)
        self.events = self.recorder.events_table
        self.chain = f"{self.recorder.qualify}{CHAIN}"
        self.position = self.recorder.position_column
        self.conn: Any
        if self.sqlite:
            self.conn = sqlite3.connect(
                database_url.removeprefix("sqlite:///"), isolation_level=None
            )
        else:
            self.conn = psycopg.connect(PG_URL, autocommit=True)

    def run(self, sql: str, *params: Any) -> list[Any]:
        """Run one statement (written with ``?`` placeholders); return its rows, if any."""
        cursor = self.conn.execute(sql if self.sqlite else sql.replace("?", "%s"), params)
        return list(cursor.fetchall()) if cursor.description else []

    def event_id(self, originator_id: UUID) -> Any:
        """Return an originator id as the events table stores it."""
        return originator_id.hex if self.sqlite else originator_id

    def where_event(self, entry: ChainEntry) -> tuple[str, tuple[Any, ...]]:
        return (
            "originator_id = ? AND originator_version = ?",
            (self.event_id(entry.originator_id), entry.originator_version),
        )

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def db(container: Container, database_url: str) -> Iterator[Database]:
    database = Database(container, database_url)
    yield database
    database.close()


@pytest.fixture
def calendar(radicale: RadicaleProcess) -> str:
    cal_id = f"audit-{uuid.uuid4().hex[:8]}"
    radicale.make_calendar("alice", "secret", f"Audit {cal_id}", cal_id=cal_id)
    return f"{radicale.url}alice/{cal_id}/"


def booking(n: int) -> Booking:
    start = START + timedelta(hours=n)
    return Booking(f"Visit {n}", start, start + timedelta(minutes=30), "Europe/Berlin")


@pytest.fixture
def scenario(container: Container, acme: Tenant, globex: Tenant, calendar: str) -> list[ChainEntry]:
    """Write appointments, moves and a link for two accounts; return acme's chain entries."""
    service = container.appointments
    for n in range(4):
        tenant = acme if n % 2 == 0 or n == 3 else globex
        booked = service.book(tenant.account_id, booking(n), API, f"verify-{n}")
        moved = START + timedelta(days=1, hours=n)
        service.move(None, UUID(booked.state["id"]), moved, moved + timedelta(hours=1), API)
    container.links.link(acme.account_id, calendar, Credentials("alice", "secret"), operator())
    service.book(acme.account_id, booking(9), API, "verify-9")
    entries = container.journal.journal_recorder.audit_entries(str(acme.account_id), limit=10_000)
    assert len(entries) >= 10
    return entries


def appointment_entries(entries: Sequence[ChainEntry]) -> list[ChainEntry]:
    """Return the entries of appointment events (acme's later, ordinary entries)."""
    return [e for e in entries if "Appointment" in e.topic]


def assert_first_bad(
    container: Container, account: Tenant, kind: str, seq: int, head: ExportedHead | None = None
) -> None:
    recorder = container.journal.journal_recorder
    report = verify(recorder, str(account.account_id), head=head, page=3)
    assert report.problem is not None, "the tampering went unnoticed"
    assert (report.problem.kind, report.problem.seq) == (kind, seq), report.problem.message
    assert f"entry {seq}" in report.problem.message
    for other in recorder.chain_accounts():
        if other != str(account.account_id):
            assert verify(recorder, other).ok, other


def test_an_untouched_journal_verifies_clean(
    container: Container, scenario: list[ChainEntry], acme: Tenant
) -> None:
    recorder = container.journal.journal_recorder
    report = verify(recorder, str(acme.account_id), page=3)
    assert report.ok and report.checked == len(scenario)
    assert report.last is not None and report.last.entry_hash == scenario[-1].entry_hash
    everything = verify_all(recorder)
    assert [r.ok for r in everything] == [True] * len(everything)
    assert {r.account_id for r in everything} == {*recorder.chain_accounts(), None}
    assert sum(r.checked for r in everything) == len(
        recorder.select_notifications(start=1, limit=10_000)
    )


def test_an_edited_state_is_named(
    container: Container, scenario: list[ChainEntry], acme: Tenant, db: Database
) -> None:
    target = appointment_entries(scenario)[2]
    where, params = db.where_event(target)
    (state,) = db.run(f"SELECT state FROM {db.events} WHERE {where}", *params)[0]
    changed = bytes(state[:-1]) + bytes([state[-1] ^ 1])
    db.run(f"UPDATE {db.events} SET state = ? WHERE {where}", changed, *params)
    assert_first_bad(container, acme, "altered", target.seq)


def test_an_edited_topic_is_named(
    container: Container, scenario: list[ChainEntry], acme: Tenant, db: Database
) -> None:
    target = appointment_entries(scenario)[1]
    where, params = db.where_event(target)
    db.run(f"UPDATE {db.events} SET topic = ? WHERE {where}", target.topic + "x", *params)
    assert_first_bad(container, acme, "altered", target.seq)


def test_a_deleted_event_is_named(
    container: Container, scenario: list[ChainEntry], acme: Tenant, db: Database
) -> None:
    target = appointment_entries(scenario)[1]
    where, params = db.where_event(target)
    db.run(f"DELETE FROM {db.events} WHERE {where}", *params)
    assert_first_bad(container, acme, "missing", target.seq)


def test_a_deleted_chain_row_is_named(
    container: Container, scenario: list[ChainEntry], acme: Tenant, db: Database
) -> None:
    target = appointment_entries(scenario)[2]
    db.run(
        f"DELETE FROM {db.chain} WHERE account_id = ? AND seq = ?", str(acme.account_id), target.seq
    )
    assert_first_bad(container, acme, "missing", target.seq)


def test_two_events_with_swapped_states_name_the_first(
    container: Container, scenario: list[ChainEntry], acme: Tenant, db: Database
) -> None:
    first, second = appointment_entries(scenario)[1], appointment_entries(scenario)[3]
    states = []
    for entry in (first, second):
        where, params = db.where_event(entry)
        states.append(db.run(f"SELECT state FROM {db.events} WHERE {where}", *params)[0][0])
    for entry, state in ((first, states[1]), (second, states[0])):
        where, params = db.where_event(entry)
        db.run(f"UPDATE {db.events} SET state = ? WHERE {where}", state, *params)
    assert_first_bad(container, acme, "altered", first.seq)


def test_two_chain_rows_with_swapped_hashes_name_the_first(
    container: Container, scenario: list[ChainEntry], acme: Tenant, db: Database
) -> None:
    first, second = scenario[3], scenario[6]
    account = str(acme.account_id)
    for entry, other in ((first, second), (second, first)):
        db.run(
            f"UPDATE {db.chain} SET entry_hash = ? WHERE account_id = ? AND seq = ?",
            other.entry_hash,
            account,
            entry.seq,
        )
    assert_first_bad(container, acme, "altered", first.seq)


def test_two_events_with_swapped_positions_are_reordered_at_the_first(
    container: Container, scenario: list[ChainEntry], acme: Tenant, db: Database
) -> None:
    first, second = appointment_entries(scenario)[0], appointment_entries(scenario)[2]
    swap = f"UPDATE {db.events} SET {db.position} = ? WHERE {db.position} = ?"
    db.run(swap, -1, first.position)
    db.run(swap, first.position, second.position)
    db.run(swap, second.position, -1)
    assert_first_bad(container, acme, "reordered", first.seq)


def test_an_event_inserted_at_the_next_version_is_named(
    container: Container, scenario: list[ChainEntry], acme: Tenant, db: Database
) -> None:
    target = appointment_entries(scenario)[0]
    latest = max(
        (e for e in scenario if e.originator_id == target.originator_id),
        key=lambda e: e.originator_version,
    )
    assert latest.stored is not None
    db.run(
        f"INSERT INTO {db.events} (originator_id, originator_version, topic, state) "
        "VALUES (?, ?, ?, ?)",
        db.event_id(latest.originator_id),
        latest.originator_version + 1,
        latest.stored.topic,
        latest.stored.state,
    )
    where = "originator_id = ? AND originator_version = ?"
    params = (db.event_id(latest.originator_id), latest.originator_version + 1)
    (position,) = db.run(f"SELECT {db.position} FROM {db.events} WHERE {where}", *params)[0]
    seq = 1 + sum(1 for e in scenario if e.position < position)
    assert_first_bad(container, acme, "inserted", seq)


def test_a_forged_chain_row_is_named(
    container: Container, scenario: list[ChainEntry], acme: Tenant, db: Database
) -> None:
    target = appointment_entries(scenario)[2]
    account = str(acme.account_id)
    # Make room at the target's seq, as a forger would, then forge an entry there
    # that links to the entry before it.
    db.run(
        f"UPDATE {db.chain} SET seq = -(seq + 1) WHERE account_id = ? AND seq >= ?",
        account,
        target.seq,
    )
    db.run(f"UPDATE {db.chain} SET seq = -seq WHERE account_id = ? AND seq < 0", account)
    forged_id, state = uuid.uuid4(), b"forged"
    previous = scenario[target.seq - 2].entry_hash
    db.run(
        f"INSERT INTO {db.chain} (account_id, seq, position, originator_id, originator_version, "
        "topic, entry_hash) VALUES (?, ?, ?, ?, ?, ?, ?)",
        account,
        target.seq,
        target.position - 1,
        str(forged_id),
        1,
        target.topic,
        entry_hash(previous, forged_id, 1, target.topic, state),
    )
    assert_first_bad(container, acme, "inserted", target.seq)


def test_a_forged_entry_naming_a_chained_event_again_is_named(
    container: Container, scenario: list[ChainEntry], acme: Tenant, db: Database
) -> None:
    again, last = appointment_entries(scenario)[1], scenario[-1]
    assert again.stored is not None
    db.run(
        f"INSERT INTO {db.chain} (account_id, seq, position, originator_id, originator_version, "
        "topic, entry_hash) VALUES (?, ?, ?, ?, ?, ?, ?)",
        str(acme.account_id),
        last.seq + 1,
        again.position,
        str(again.originator_id),
        again.originator_version,
        again.topic,
        entry_hash(
            last.entry_hash,
            again.originator_id,
            again.originator_version,
            again.stored.topic,
            again.stored.state,
        ),
    )
    assert_first_bad(container, acme, "inserted", last.seq + 1)


def test_positions_swapped_in_the_journal_and_the_chain_are_reordered_at_the_first(
    container: Container, scenario: list[ChainEntry], acme: Tenant, db: Database
) -> None:
    first, second = scenario[4], scenario[5]
    for table, column in ((db.events, db.position), (db.chain, "position")):
        swap = f"UPDATE {table} SET {column} = ? WHERE {column} = ?"
        db.run(swap, -1, first.position)
        db.run(swap, first.position, second.position)
        db.run(swap, second.position, -1)
    assert_first_bad(container, acme, "reordered", first.seq)


def test_a_recomputed_chain_verifies_on_its_own_but_not_against_an_exported_head(
    container: Container, scenario: list[ChainEntry], acme: Tenant, db: Database
) -> None:
    recorder = container.journal.journal_recorder
    account = str(acme.account_id)
    head = verify(recorder, account).export()
    assert head.seq == len(scenario)
    assert ExportedHead.from_json(head.to_json()) == head
    container.appointments.book(acme.account_id, booking(20), API, "verify-20")

    target = appointment_entries(scenario)[1]
    where, params = db.where_event(target)
    db.run(f"UPDATE {db.events} SET state = ? WHERE {where}", b"rewritten", *params)
    previous = GENESIS
    for entry in recorder.audit_entries(account, limit=10_000):
        assert entry.stored is not None
        previous = entry_hash(
            previous,
            entry.originator_id,
            entry.originator_version,
            entry.stored.topic,
            entry.stored.state,
        )
        db.run(
            f"UPDATE {db.chain} SET entry_hash = ? WHERE account_id = ? AND seq = ?",
            previous,
            account,
            entry.seq,
        )

    assert verify(recorder, account).ok
    assert_first_bad(container, acme, "altered", head.seq, head=head)


def test_a_chain_shorter_than_its_exported_head_is_missing_entries(
    container: Container, scenario: list[ChainEntry], acme: Tenant, db: Database
) -> None:
    recorder = container.journal.journal_recorder
    account = str(acme.account_id)
    head = verify(recorder, account).export()
    last = scenario[-1]
    where, params = db.where_event(last)
    db.run(f"DELETE FROM {db.events} WHERE {where}", *params)
    db.run(f"DELETE FROM {db.chain} WHERE account_id = ? AND seq = ?", account, last.seq)
    assert verify(recorder, account).ok
    assert_first_bad(container, acme, "missing", last.seq, head=head)


def test_a_head_of_another_chain_is_refused(
    container: Container, scenario: list[ChainEntry], acme: Tenant, globex: Tenant
) -> None:
    recorder = container.journal.journal_recorder
    head = verify(recorder, str(globex.account_id)).export()
    with pytest.raises(HeadFormatError, match="not of"):
        verify(recorder, str(acme.account_id), head=head)
    with pytest.raises(HeadFormatError, match="chain format"):
        ExportedHead.from_json(head.to_json().replace('"chain_format": 1', '"chain_format": 9'))


def test_an_event_of_no_chain_is_found_by_the_global_check(
    container: Container, scenario: list[ChainEntry], db: Database
) -> None:
    stray = uuid.uuid4()
    db.run(
        f"INSERT INTO {db.events} (originator_id, originator_version, topic, state) "
        "VALUES (?, ?, ?, ?)",
        db.event_id(stray),
        1,
        scenario[0].topic,
        b"{}",
    )
    reports = verify_all(container.journal.journal_recorder)
    assert all(r.ok for r in reports[:-1])
    problem = reports[-1].problem
    assert problem is not None and problem.kind == "inserted"
    assert problem.originator_id == str(stray) and problem.seq is None


def caljournal(database_url: str, tmp_path: Path, *args: str) -> Result:
    """Run an audit command on the test's journal, as the command line would."""
    env = {
        "CALJOURNAL_DATABASE_URL": database_url,
        "CALJOURNAL_SECRET_KEY_FILE": str(tmp_path / "caljournal.key"),
    }
    return CliRunner().invoke(app, ["audit", *args], env=env, color=False)


def test_the_commands_exit_1_naming_the_first_bad_entry(
    container: Container,
    scenario: list[ChainEntry],
    acme: Tenant,
    db: Database,
    database_url: str,
    tmp_path: Path,
) -> None:
    clean = caljournal(database_url, tmp_path, "verify", "--account", "acme")
    assert clean.exit_code == 0, clean.output
    assert f"ok: chain acme: {len(scenario)} entries verified" in clean.stderr
    head_file = tmp_path / "acme-head.json"
    exported = caljournal(
        database_url, tmp_path, "head", "--account", "acme", "--output", str(head_file)
    )
    assert exported.exit_code == 0, exported.output
    head = json.loads(head_file.read_text())
    assert (head["account"], head["seq"]) == (str(acme.account_id), len(scenario))
    assert head["entry_hash"] == scenario[-1].entry_hash and head["chain_format"] == 1
    printed = caljournal(database_url, tmp_path, "head", "--account", str(acme.account_id))
    assert json.loads(printed.stdout)["entry_hash"] == head["entry_hash"]
    assert caljournal(database_url, tmp_path, "verify", "--head", str(head_file)).exit_code == 0

    target = appointment_entries(scenario)[1]
    where, params = db.where_event(target)
    db.run(f"UPDATE {db.events} SET topic = ? WHERE {where}", target.topic + "x", *params)

    for args in (["--account", "acme"], ["--head", str(head_file)], ["--all"]):
        found = caljournal(database_url, tmp_path, "verify", *args)
        assert found.exit_code == 1, found.output
        (line,) = [x for x in found.stderr.splitlines() if x.startswith("TAMPERED")]
        assert f"altered: entry {target.seq} (event {target.originator_id}" in line
    as_json = caljournal(database_url, tmp_path, "verify", "--account", "acme", "--json")
    (report,) = json.loads(as_json.stdout)
    assert report["problem"]["kind"] == "altered" and report["problem"]["seq"] == target.seq
    refused = caljournal(database_url, tmp_path, "head", "--account", "acme")
    assert refused.exit_code == 1 and refused.stdout == ""


def test_the_commands_exit_2_on_bad_input(
    container: Container, scenario: list[ChainEntry], database_url: str, tmp_path: Path
) -> None:
    unknown = caljournal(database_url, tmp_path, "verify", "--account", "nobody")
    assert unknown.exit_code == 2 and "no account named 'nobody'" in unknown.stderr
    garbage = tmp_path / "head.json"
    garbage.write_text("{}")
    bad_head = caljournal(database_url, tmp_path, "verify", "--head", str(garbage))
    assert bad_head.exit_code == 2 and "not an exported chain head" in bad_head.stderr
    nothing = caljournal(database_url, tmp_path, "verify")
    assert nothing.exit_code == 2 and "--account NAME, --head FILE or --all" in nothing.stderr
