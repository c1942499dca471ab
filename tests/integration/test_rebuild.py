"""The read-model rebuild gives back exactly the tables the journal's own saves keep.

Each test records a varied history (tests.support.history), keeps the query
tables as the saves maintained them, and compares the rebuilt tables with them
and with a reference rebuild done the plain way: each aggregate loaded through
the repository (its events and personal-data key in one query), its rows
written with the position of its last event. On SQLite and on PostgreSQL.
"""

from __future__ import annotations

import json
import threading
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.cipher import AESCipher

from caljournal.adapters.readmodel import (
    ACCOUNTS,
    APPOINTMENTS,
    LINKS,
    TOKENS,
    rows_for,
    with_positions,
)
from caljournal.bootstrap import Container, bootstrap
from caljournal.domain.appointment import Appointment
from caljournal.domain.personal import ERASED_TEXT
from caljournal.maintenance import TOPICS, rebuild_read_models
from caljournal.settings import load_settings
from tests.support.history import API, OPERATOR, write_history

TABLES = (APPOINTMENTS, ACCOUNTS, TOKENS, LINKS)


def tables(container: Container) -> dict[str, list[dict[str, Any]]]:
    """Return every row of the four rebuilt tables, by id."""
    recorder = container.journal.journal_recorder
    return {
        table: [
            dict(r)
            for r in recorder._fetch(f"SELECT * FROM {recorder.qualify}{table} ORDER BY id", [])
        ]
        for table in TABLES
    }


def reference_rebuild(container: Container) -> None:
    """Rebuild the tables the plain way: one repository load per aggregate."""
    journal = container.journal
    recorder = journal.journal_recorder
    ids: list[uuid.UUID] = []
    position = 0
    while page := recorder.select_notifications(position, 1000, inclusive_of_start=False):
        for notification in page:
            if notification.topic.split(".")[0] in TOPICS:
                ids.append(uuid.UUID(str(notification.originator_id)))
        position = page[-1].id
    recorder.clear_read_model()
    rows = []
    for aggregate_id in dict.fromkeys(ids):
        aggregate: Any = journal.repository.get(aggregate_id)
        at = recorder.select_positions(aggregate_id)[aggregate.version]
        rows.extend(with_positions(rows_for(aggregate), {str(aggregate_id): at}))
    recorder.write_rows(rows)


def parsed(rows: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Return table rows with their JSON documents parsed.

    A save writes the document of the aggregate it holds, a load the one of the
    aggregate read back: the personal fields of a recurring series' changed
    instances come back last in their dicts, so only the JSON text's key order differs.
    """
    return {
        table: [{k: json.loads(v) if k == "doc" else v for k, v in r.items()} for r in found]
        for table, found in rows.items()
    }


def test_the_rebuilt_tables_equal_the_plain_rebuild_and_the_live_ones(
    container: Container,
) -> None:
    history = write_history(container, accounts=3, appointments=150, events_each=5)
    assert history.erased and history.cancelled  # the history holds both
    live = tables(container)
    assert len(live[APPOINTMENTS]) == 150 and len(live[ACCOUNTS]) == 3
    reference_rebuild(container)
    plain = tables(container)
    assert parsed(plain) == parsed(live)

    read, seconds = rebuild_read_models(container.journal, page=37, batch=29)

    assert tables(container) == plain
    assert read == container.journal.journal_recorder.max_notification_id()
    assert seconds >= 0


def test_a_journal_encrypted_with_the_cipher_key_is_rebuilt_the_same(
    database_url: str, tmp_path: Path
) -> None:
    settings = load_settings(
        database_url=database_url,
        secret_key_file=tmp_path / "caljournal.key",
        journal_cipher_key=AESCipher.create_key(32),
    )
    built = bootstrap(settings)
    try:
        assert built.journal.mapper.cipher is not None
        history = write_history(built, accounts=2, appointments=40, events_each=4, seed=5)
        assert history.erased
        reference_rebuild(built)
        plain = tables(built)

        rebuild_read_models(built.journal, page=13)

        assert tables(built) == plain
    finally:
        built.close()


def test_an_erased_appointment_is_rebuilt_erased_and_its_series_too(
    container: Container,
) -> None:
    history = write_history(container, accounts=2, appointments=40, events_each=4, seed=3)
    erased = {str(i) for i in history.erased}
    series = [a for a in history.appointments if a.recurrence and a.id in history.erased]
    assert erased and series  # the seed erases a recurring series too

    rebuild_read_models(container.journal, page=11)

    docs = {r["id"]: r["doc"] for r in tables(container)[APPOINTMENTS]}
    for appointment_id in erased:
        assert ERASED_TEXT in docs[appointment_id]
        assert "Customer" not in docs[appointment_id]
    for appointment in series:
        assert "(moved" not in docs[str(appointment.id)]


def test_changes_recorded_while_the_rebuild_runs_end_up_in_the_tables(
    container: Container,
) -> None:
    history = write_history(container, accounts=2, appointments=60, events_each=3, seed=11)
    journal = container.journal
    live = [a for a in history.appointments if not a.cancelled and not a.erased]
    by_id = sorted(live, key=lambda a: a.id.hex)
    # Pages go by aggregate id: the first is read before the change, the last after.
    first, last, middle = by_id[0], by_id[-1], by_id[len(by_id) // 2]
    changed: list[int] = []

    def change_meanwhile(done: int, total: int) -> None:
        if changed:
            return
        for appointment in (first, last):
            appointment.move(
                start=appointment.start + timedelta(hours=1),
                end=appointment.end + timedelta(hours=1),
                cause=API,
            )
        middle.erase(reason="asked during the rebuild", cause=OPERATOR)
        new = Appointment.book(
            appointment_id=uuid.uuid4(),
            account_id=history.account_ids[0],
            title="Booked during the rebuild",
            start=first.start,
            end=first.end,
            timezone="Europe/Berlin",
            customer_name="Late Customer",
            cause=API,
        )
        journal.save(first, last, middle, new)
        changed.append(done)

    rebuild_read_models(journal, change_meanwhile, page=25, batch=10)

    assert changed and changed[0] < journal.journal_recorder.max_notification_id()
    rebuilt = tables(container)
    reference_rebuild(container)
    # The rows written meanwhile are the saves' own (see ``parsed``).
    assert parsed(rebuilt) == parsed(tables(container))
    docs = {r["id"]: r for r in rebuilt[APPOINTMENTS]}
    assert docs[str(first.id)]["version"] == first.version
    assert ERASED_TEXT in docs[str(middle.id)]["doc"]
    assert len(docs) == 61


def test_a_rebuild_recorded_on_every_account_counts_the_events_read(
    container: Container,
) -> None:
    history = write_history(container, accounts=2, appointments=10, events_each=2)
    before = journal_size = container.journal.journal_recorder.max_notification_id()

    read, _ = rebuild_read_models(container.journal, cause=OPERATOR, page=7)

    assert read == before
    for account_id in history.account_ids:
        account: Any = container.journal.repository.get(account_id)
        assert account.version == 2
    assert container.journal.journal_recorder.max_notification_id() == journal_size + 2


@pytest.mark.parametrize(("page", "batch"), [(0, 10), (10, 0)])
def test_a_page_or_batch_below_one_is_refused(container: Container, page: int, batch: int) -> None:
    with pytest.raises(ValueError, match="must be at least 1"):
        rebuild_read_models(container.journal, page=page, batch=batch)


def rebuild_threads() -> list[str]:
    """Return the names of the rebuild's threads still running."""
    return [t.name for t in threading.enumerate() if t.name.startswith("rebuild-")]


def test_a_failure_reading_the_journal_stops_the_rebuild_with_it(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_history(container, accounts=1, appointments=20, events_each=2)
    recorder = container.journal.journal_recorder
    pages: list[object] = []
    select = recorder.select_histories

    def failing(after: Any, limit: int) -> Any:
        if pages:
            raise OSError("the journal went away")
        pages.append(after)
        return select(after, limit)

    monkeypatch.setattr(recorder, "select_histories", failing)

    with pytest.raises(OSError, match="the journal went away"):
        rebuild_read_models(container.journal, page=5)
    assert rebuild_threads() == []


def test_a_failure_writing_rows_stops_the_rebuild_with_it(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_history(container, accounts=1, appointments=20, events_each=2)
    recorder = container.journal.journal_recorder

    def failing(rows: Any) -> None:
        raise OSError("the disk is full")

    monkeypatch.setattr(recorder, "write_rows", failing)

    with pytest.raises(OSError, match="the disk is full"):
        rebuild_read_models(container.journal, page=5, batch=3)
    assert rebuild_threads() == []
