"""The audit chain: every account's recorded events, chained by hash as they are written.

Each event the journal records gets one entry in ``caljournal_audit_chain``,
written by the recorder in the same transaction as the event itself:

    account_id TEXT, seq BIGINT (1, 2, 3, … per account), position BIGINT
    (the event's journal position), originator_id TEXT, originator_version
    BIGINT, topic TEXT, entry_hash TEXT — PRIMARY KEY (account_id, seq)

``entry_hash`` is the SHA-256 of the previous entry's hash (:data:`GENESIS` for
the first) and the stored event exactly as written: originator id, version,
topic and state bytes (after the library's compression and encryption, so a
verifier needs no key). Changing, removing, reordering or inserting a stored
event, or an entry, breaks the chain from that entry on; a chain head kept
elsewhere proves that nothing before it changed even if someone recomputed the
whole chain.

Events belong to the account of their aggregate (an appointment's, a link's,
the account's own); operator tokens, which belong to no account, chain under
:data:`OPERATORS`. The entries double as the account's index into the journal,
in journal order: the audit log reads an account's events through them.

Why hand-written: the eventsourcing library has no per-partition hash chain,
and the chain must be written in the library's own insert transaction, which
only its recorder hooks can reach.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent

from caljournal.adapters.readmodel import (
    ACCOUNTS,
    APPOINTMENTS,
    LINKS,
    TOKENS,
)
from caljournal.domain.aggregates import aggregate_classes

CHAIN = "caljournal_audit_chain"
GENESIS = "0" * 64
OPERATORS = "operators"


def chain_key(aggregate: object) -> str:
    """Return the chain an aggregate's events belong to: its account id, or OPERATORS."""
    Account, ApiToken, Appointment, CalendarLink, QuarantineLog = aggregate_classes()  # noqa: N806
    if isinstance(aggregate, Appointment | CalendarLink | QuarantineLog):
        return str(aggregate.account_id)
    if isinstance(aggregate, Account):
        return str(aggregate.id)
    if isinstance(aggregate, ApiToken) and aggregate.account_id is not None:
        return str(aggregate.account_id)
    return OPERATORS


def entry_hash(
    previous: str, originator_id: UUID | str, version: int, topic: str, state: bytes
) -> str:
    """Return the hash of one chain entry: the previous hash and the stored event."""
    uuid = originator_id if isinstance(originator_id, UUID) else UUID(str(originator_id))
    return _entry_hash(previous, str(uuid), version, topic, state)


def _entry_hash(previous: str, uuid: str, version: int, topic: str, state: bytes) -> str:
    """Return :func:`entry_hash` of an originator id already in its canonical text form."""
    digest = hashlib.sha256()
    head = f"{previous}\n{uuid}\n{int(version)}\n{topic}\n{len(state)}\n"
    digest.update(head.encode())
    digest.update(bytes(state))
    return digest.hexdigest()


def canonical_ids(stored_events: Sequence[StoredEvent]) -> list[UUID]:
    """Return the events' originator ids as UUIDs (stored events may carry them as text)."""
    return [
        raw if isinstance(raw, UUID) else UUID(str(raw))
        for raw in (s.originator_id for s in stored_events)
    ]


@dataclass(frozen=True)
class ChainEntry:
    """One entry of an account's chain, with the stored event it names as it is now.

    ``stored`` is None when the journal no longer holds an event with that
    originator id and version; ``stored_position`` is that event's journal
    position now (it differs from ``position`` when rows were moved).
    """

    account_id: str
    seq: int
    position: int
    originator_id: UUID
    originator_version: int
    topic: str
    entry_hash: str
    stored: StoredEvent | None
    stored_position: int | None


@dataclass(frozen=True)
class ChainHead:
    """The last entry of an account's chain."""

    account_id: str
    seq: int
    position: int
    entry_hash: str


def new_entries(
    heads: Mapping[str, tuple[int, str]],
    stored_events: Sequence[StoredEvent],
    positions: Sequence[int],
    keys: Mapping[UUID, str],
    originators: Sequence[UUID] | None = None,
) -> list[tuple[str, int, int, str, int, str, str]]:
    """Return the chain rows for events just inserted, given each chain's head (seq, hash).

    Rows are (account_id, seq, position, originator_id, originator_version,
    topic, entry_hash), in the order the events were inserted. ``originators``
    are the events' ids from :func:`canonical_ids` when the caller has them.
    """
    current = dict(heads)
    rows = []
    if originators is None:
        originators = canonical_ids(stored_events)
    for stored, position, originator_id in zip(stored_events, positions, originators, strict=True):
        key = keys.get(originator_id, OPERATORS)
        seq, previous = current.get(key, (0, GENESIS))
        text = str(originator_id)
        digest = _entry_hash(previous, text, stored.originator_version, stored.topic, stored.state)
        current[key] = (seq + 1, digest)
        rows.append(
            (
                key,
                seq + 1,
                int(position),
                text,
                int(stored.originator_version),
                stored.topic,
                digest,
            )
        )
    return rows


def head_query(qualify: str, placeholder: str) -> str:
    """Return the SQL that selects one chain's last entry (seq, entry_hash)."""
    return (
        f"SELECT seq, entry_hash FROM {qualify}{CHAIN} WHERE account_id = {placeholder} "
        "ORDER BY seq DESC LIMIT 1"
    )


def insert_statement(qualify: str, placeholder: str) -> str:
    """Return the SQL that inserts one chain row (see :func:`new_entries`)."""
    marks = ", ".join([placeholder] * 7)
    return (
        f"INSERT INTO {qualify}{CHAIN} (account_id, seq, position, originator_id, "
        f"originator_version, topic, entry_hash) VALUES ({marks})"
    )


def value(row: Any, key: str, index: int) -> Any:
    """Return a column of a row from either driver (sqlite3.Row, tuple or dict row)."""
    if isinstance(row, Mapping):
        return row[key]
    try:
        return row[key]
    except (IndexError, TypeError, KeyError):
        return row[index]


def chain_statements(qualify: str) -> list[str]:
    """Return the DDL of the chain table (schema version 4)."""
    return [
        f"CREATE TABLE {qualify}{CHAIN} (account_id TEXT NOT NULL, seq BIGINT NOT NULL, "
        "position BIGINT NOT NULL, originator_id TEXT NOT NULL, "
        "originator_version BIGINT NOT NULL, topic TEXT NOT NULL, entry_hash TEXT NOT NULL, "
        "PRIMARY KEY (account_id, seq))",
        f"CREATE INDEX {CHAIN}_position ON {qualify}{CHAIN} (account_id, position)",
        f"CREATE INDEX {CHAIN}_event ON {qualify}{CHAIN} (originator_id, originator_version)",
    ]


def chain_existing(cursor: Any, dialect: str, qualify: str, events_table: str) -> int:
    """Chain the events a database holds from before the chain existed; return how many.

    Runs inside the schema migration's transaction. Each event goes to the
    chain of the account its aggregate belongs to, found in the query tables.
    """
    p = "?" if dialect == "sqlite" else "%s"
    position_column = "rowid" if dialect == "sqlite" else "notification_id"
    owners: dict[UUID, str] = {}
    for table, account in (
        (APPOINTMENTS, "account_id"),
        (LINKS, "account_id"),
        (ACCOUNTS, "id"),
        (TOKENS, "account_id"),
    ):
        cursor.execute(f"SELECT id, {account} AS account FROM {qualify}{table}")
        for row in cursor.fetchall():
            owners[UUID(str(value(row, "id", 0)))] = value(row, "account", 1) or OPERATORS
    heads: dict[str, tuple[int, str]] = {}
    after, count = 0, 0
    insert = insert_statement(qualify, p)
    while True:
        cursor.execute(
            f"SELECT {position_column} AS position, originator_id, originator_version, topic, "
            f"state FROM {events_table} WHERE {position_column} > {p} "
            f"ORDER BY {position_column} LIMIT 1000",
            [after],
        )
        batch = cursor.fetchall()
        if not batch:
            return count
        events = [
            StoredEvent(
                originator_id=UUID(str(value(r, "originator_id", 1))),
                originator_version=int(value(r, "originator_version", 2)),
                topic=str(value(r, "topic", 3)),
                state=bytes(value(r, "state", 4)),
            )
            for r in batch
        ]
        positions = [int(value(r, "position", 0)) for r in batch]
        keys = {
            UUID(str(e.originator_id)): owners.get(UUID(str(e.originator_id)), OPERATORS)
            for e in events
        }
        rows = new_entries(heads, events, positions, keys)
        for row in rows:
            cursor.execute(insert, list(row))
            heads[row[0]] = (row[1], row[6])
        after = positions[-1]
        count += len(rows)


__all__ = [
    "CHAIN",
    "GENESIS",
    "OPERATORS",
    "ChainEntry",
    "ChainHead",
    "canonical_ids",
    "chain_existing",
    "chain_key",
    "chain_statements",
    "entry_hash",
    "head_query",
    "insert_statement",
    "new_entries",
    "value",
]
