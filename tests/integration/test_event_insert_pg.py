"""The library's events insert, sent to PostgreSQL in binary, stores every byte as given."""

from __future__ import annotations

import uuid
from pathlib import Path

from eventsourcing.persistence import StoredEvent

from caljournal.bootstrap import bootstrap
from caljournal.settings import load_settings

STATES = [
    bytes(range(256)),
    b'\\x00 "quoted", (parenthesised) \\\\ back\tslash\n',
    b"",
    b"\x00" * 3,
]
TOPICS = ['caljournal:X "with" (odd), chars\\', "caljournal:Ünïcödé 🙂", "caljournal:plain"]


def test_events_go_in_binary_and_come_back_byte_for_byte(pg_url: str, tmp_path: Path) -> None:
    container = bootstrap(load_settings(database_url=pg_url, secret_key_file=tmp_path / "k"))
    try:
        recorder = container.journal.journal_recorder
        originator = uuid.uuid4()
        written = [
            StoredEvent(originator, n + 1, TOPICS[n % len(TOPICS)], state)
            for n, state in enumerate(STATES)
        ]

        ids = recorder.insert_events(written)

        assert "%b" in recorder.insert_events_statement.as_string(None)
        assert ids is not None and len(ids) == len(written)
        read = recorder.select_events(originator)
        assert [(e.originator_version, e.topic, bytes(e.state)) for e in read] == [
            (e.originator_version, e.topic, e.state) for e in written
        ]
        assert all(e.originator_id == originator for e in read)
    finally:
        container.close()
