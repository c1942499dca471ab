"""Query tables kept in the same transaction as the events that change them.

The journal has no secondary index, so "appointments of account X between T1 and
T2" needs a table of its own. Rows are written by the recorder in the very
transaction that inserts the events (see ``adapters.journal``), so the tables
can never disagree with the journal, and they can be rebuilt from it at any time.
Times are stored as integer microseconds since the epoch (UTC), which compares
the same way on SQLite and PostgreSQL. The tables' DDL and its versions live in
``adapters.schema``.

An appointment row carries ``position``: the journal position (notification id)
of the appointment's latest event. The recorder adds it once the events insert
has returned their ids (:func:`with_positions`); the outbound projection finds
pending pushes by it, so a writer's clock cannot hide a change.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import orjson

from caljournal.domain.aggregates import aggregate_classes
from caljournal.domain.values import MAX_DURATION

if TYPE_CHECKING:
    from caljournal.domain.link import CalendarLink

APPOINTMENTS = "caljournal_appointments"
ACCOUNTS = "caljournal_accounts"
TOKENS = "caljournal_tokens"
LINKS = "caljournal_links"
SECRETS = "caljournal_link_secrets"
OUTBOUND = "caljournal_outbound"
LEASES = "caljournal_leases"
SYNC_STATUS = "caljournal_sync_status"
WORKERS = "caljournal_workers"
INBOUND = "caljournal_inbound"
QUARANTINE = "caljournal_quarantine"
CHECKS = "caljournal_calendar_checks"
MAX_DURATION_US = int(MAX_DURATION.total_seconds() * 1_000_000)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_us(value: datetime) -> int:
    """Return microseconds since the epoch for an aware datetime."""
    delta = value - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass(frozen=True)
class Row:
    """One row of a query table, written in the same transaction as events.

    Versioned rows (the default) replace only an older version of themselves;
    others are plain upserts by ``key``; ``delete`` removes the row by ``key``.
    """

    table: str
    values: dict[str, Any]
    key: str = "id"
    versioned: bool = True
    delete: bool = False


def state_json(state: dict[str, Any]) -> str:
    """Return a ``state()`` dict as the compact JSON stored in ``doc`` columns.

    orjson writes the same compact, non-ASCII-escaped JSON as the API's
    responses about ten times faster than the standard library, and the
    appointment document is written on every change.
    """
    return orjson.dumps(state).decode()


def rows_for(aggregate: object, state: dict[str, Any] | None = None) -> list[Row]:
    """Return the query-table rows that describe an aggregate's current state.

    ``state`` is the aggregate's ``state()`` when the caller has it already.
    """
    Account, ApiToken, Appointment, CalendarLink, _ = aggregate_classes()  # noqa: N806
    if isinstance(aggregate, Appointment):
        # The ids as the state writes them: spares turning each UUID into text again.
        doc = state if state is not None else aggregate.state()
        return [
            Row(
                APPOINTMENTS,
                {
                    "id": doc["id"],
                    "account_id": doc["account_id"],
                    "start_us": to_us(aggregate.start),
                    "end_us": to_us(aggregate.end),
                    "status": aggregate.status,
                    "version": aggregate.version,
                    "sequence": aggregate.sequence,
                    "modified_us": to_us(aggregate.modified_on),
                    "recurring": 1 if aggregate.recurrence else 0,
                    "doc": state_json(doc),
                },
            )
        ]
    if isinstance(aggregate, Account):
        return [
            Row(
                ACCOUNTS,
                {
                    "id": str(aggregate.id),
                    "name": aggregate.name,
                    "created_us": to_us(aggregate.created_on),
                    "version": aggregate.version,
                },
            )
        ]
    if isinstance(aggregate, ApiToken):
        return [
            Row(
                TOKENS,
                {
                    "id": str(aggregate.id),
                    "account_id": str(aggregate.account_id) if aggregate.account_id else None,
                    "account_name": aggregate.account_name,
                    "name": aggregate.name,
                    "token_hash": aggregate.token_hash,
                    "revoked": 1 if aggregate.revoked else 0,
                    "created_us": to_us(aggregate.created_on),
                    "version": aggregate.version,
                },
            )
        ]
    if isinstance(aggregate, CalendarLink):
        return [
            Row(
                LINKS,
                {
                    "id": str(aggregate.id),
                    "account_id": str(aggregate.account_id),
                    "status": aggregate.status,
                    "calendar_url": aggregate.calendar_url,
                    "version": aggregate.version,
                    "doc": state_json(aggregate.state()),
                },
            )
        ]
    return []


def with_positions(rows: Sequence[Row], positions: Mapping[str, int]) -> list[Row]:
    """Return ``rows`` with the journal position set on the appointment rows.

    ``positions`` maps aggregate ids (as ``str``) to the notification id of their
    latest event; appointment rows of other aggregates are left as they are.
    """
    # Built directly: ``dataclasses.replace`` re-reads the fields of the class
    # for every row, which cost more than the rest of this loop.
    return [
        Row(
            APPOINTMENTS,
            {**row.values, "position": positions[row.values["id"]]},
            row.key,
            row.versioned,
            False,
        )
        if row.table == APPOINTMENTS and not row.delete and row.values.get("id") in positions
        else row
        for row in rows
    ]


def secret_row(link: CalendarLink, sealed: str) -> Row:
    """Return the row holding a link's sealed credentials ("" once erased)."""
    return Row(SECRETS, {"id": str(link.id), "sealed": sealed, "version": link.version})


def upsert_statement(row: Row, qualify: str, placeholder: str) -> tuple[str, list[Any]]:
    """Return SQL that writes ``row`` (see :class:`Row`)."""
    if row.delete:
        sql = _statement(row.table, (), row.key, False, True, qualify, placeholder)
        return sql, [row.values[row.key]]
    names = tuple(row.values)
    sql = _statement(row.table, names, row.key, row.versioned, False, qualify, placeholder)
    return sql, list(row.values.values())  # in the order of ``names``


def upsert_batches(
    rows: Iterable[Row], qualify: str, placeholder: str
) -> Iterator[tuple[str, list[list[Any]]]]:
    """Yield (SQL, parameter lists) for ``rows``, one statement per run of like rows.

    Consecutive rows that share a statement (same table, columns and kind) go
    into one ``executemany``; the order of the rows is kept, so a later row for
    the same key still wins.
    """
    sql: str | None = None
    params: list[list[Any]] = []
    for row in rows:
        statement, values = upsert_statement(row, qualify, placeholder)
        if statement != sql:
            if sql is not None:
                yield sql, params
            sql, params = statement, []
        params.append(values)
    if sql is not None:
        yield sql, params


@lru_cache(maxsize=256)
def _statement(
    table: str,
    names: tuple[str, ...],
    key: str,
    versioned: bool,
    delete: bool,
    qualify: str,
    placeholder: str,
) -> str:
    table = qualify + table
    if delete:
        return f"DELETE FROM {table} WHERE {key} = {placeholder}"
    marks = ", ".join(placeholder for _ in names)
    updates = ", ".join(f"{n} = excluded.{n}" for n in names if n != key)
    sql = (
        f"INSERT INTO {table} ({', '.join(names)}) VALUES ({marks}) "
        f"ON CONFLICT ({key}) DO UPDATE SET {updates}"
    )
    if versioned:
        sql += f" WHERE excluded.version > {table}.version"
    return sql


@dataclass(frozen=True)
class Window:
    """A query for an account's appointments overlapping [start, end)."""

    account_id: str
    start: datetime
    end: datetime
    include_cancelled: bool = False
    limit: int = 500


def window_query(window: Window, qualify: str, placeholder: str) -> tuple[str, list[Any]]:
    """Return SQL that lists the appointments overlapping a window, earliest first.

    The lower bound on ``start_us`` follows from the longest allowed appointment
    and keeps the index range scan short for accounts with a long history.
    """
    p = placeholder
    lo, hi = to_us(window.start), to_us(window.end)
    sql = (
        f"SELECT doc FROM {qualify}{APPOINTMENTS} WHERE account_id = {p} "
        f"AND start_us < {p} AND start_us > {p} AND end_us > {p}"
    )
    params: list[Any] = [window.account_id, hi, lo - MAX_DURATION_US - 1, lo]
    if not window.include_cancelled:
        sql += " AND status = 'booked'"
    sql += f" AND recurring = 0 ORDER BY start_us, id LIMIT {p}"
    params.append(window.limit)
    return sql, params


def recurring_query(window: Window, qualify: str, placeholder: str) -> tuple[str, list[Any]]:
    """Return SQL that lists an account's recurring appointments starting before the window end.

    Their occurrences are expanded in Python (recurring-ical-events).
    """
    p = placeholder
    sql = (
        f"SELECT doc FROM {qualify}{APPOINTMENTS} WHERE account_id = {p} AND recurring = 1 "
        f"AND start_us < {p}"
    )
    if not window.include_cancelled:
        sql += " AND status = 'booked'"
    return sql + " ORDER BY start_us, id", [window.account_id, to_us(window.end)]


def docs(rows: Sequence[Any]) -> list[dict[str, Any]]:
    """Decode the ``doc`` column of fetched rows."""
    return [json.loads(r["doc"]) for r in rows]
