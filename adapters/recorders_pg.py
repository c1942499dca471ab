"""The journal's PostgreSQL recorder: the library's recorder plus the query tables.

Kept apart from ``adapters.recorders`` so that a journal on SQLite (and every
command run against one) never loads the library's PostgreSQL module or psycopg.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import lru_cache
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from psycopg.rows import DictRow, tuple_row
from psycopg.sql import SQL, Composable, Composed

from caljournal.adapters.audit_chain import CHAIN, GENESIS, OPERATORS, canonical_ids, new_entries
from caljournal.adapters.readmodel import Row, upsert_statement, with_positions
from caljournal.adapters.recorders import EMPTY, ReadModelQueries, positions_by_id
from caljournal.adapters.schema import LOCK_KEY, Target, migrate

LOCK = f"SELECT pg_advisory_lock(hashtext('{LOCK_KEY}'))"
UNLOCK = f"SELECT pg_advisory_unlock(hashtext('{LOCK_KEY}'))"


class PostgresJournalRecorder(ReadModelQueries, PostgresApplicationRecorder):
    """The library's PostgreSQL recorder plus the query tables."""

    placeholder = "%s"
    position_column = "notification_id"
    chained_id = "c.originator_id::uuid"
    event_chain_id = "e.originator_id::text"

    def stored_id(self, originator_id: UUID) -> Any:
        """Return an originator id as the events table stores it (uuid)."""
        return originator_id

    @property
    def events_table(self) -> str:
        """Return the library's event table, qualified."""
        return f'{self.qualify}"{self.events_table_name}"'

    def __init__(self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events"):
        super().__init__(datastore, events_table_name=events_table_name)
        if datastore.enable_db_functions:
            # That insert path skips the hook that writes the query-table rows.
            raise ValueError(
                "POSTGRES_ENABLE_DB_FUNCTIONS is not supported: caljournal writes its "
                "query tables in the library's own insert transaction"
            )
        self.qualify = f'"{datastore.schema}".'
        # The events go as the library sends them (one array of its stored-event
        # composite), but in binary: psycopg builds the text form of that array
        # in Python, field by field, quoting every state's bytes, which cost more
        # client time per event than all the rest of the insert.
        self.insert_events_statement = binary_parameters(self.insert_events_statement)

    @property
    def schema_target(self) -> Target:
        """Return where ``adapters.schema`` migrations run for this recorder."""
        return Target("postgresql", self.qualify, f'{self.qualify}"{self.events_table_name}"')

    def create_table(self) -> None:
        """Create the library's event table, then bring caljournal's tables up to date.

        One process at a time: several workers starting together would otherwise
        run the same DDL concurrently, which PostgreSQL refuses ("tuple
        concurrently updated"). ``migrate`` takes the same advisory lock again
        (session locks nest) for its own steps.
        """
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(LOCK.encode())
            try:
                super().create_table()
                migrate(curs, self.schema_target)
            finally:
                curs.execute(UNLOCK.encode())

    def _insert_events(
        self,
        curs: Any,
        stored_events: Sequence[StoredEvent],
        *,
        read_model: Sequence[Row] = (),
        chain: Mapping[UUID, str] = EMPTY,
        **kwargs: Any,
    ) -> None:
        # Runs inside the library's insert transaction, before the events insert.
        # With no events (a poll that changed only its own state) the library skips
        # that insert and the hook below: the rows are written here instead.
        if not stored_events:
            write_upserts(curs, read_model, self.qualify)

    def _fetch_ids_after_insert_events(
        self,
        curs: Any,
        stored_events: Sequence[StoredEvent],
        *,
        read_model: Sequence[Row] = (),
        chain: Mapping[UUID, str] = EMPTY,
        **kwargs: Any,
    ) -> Sequence[int] | None:
        # The library calls this inside its insert transaction and pipeline, once
        # the events are in (its own ``_insert_events`` hook runs before them, when
        # the positions are not known yet). A version conflict on the events
        # raises before this point and rolls everything back.
        ids = super()._fetch_ids_after_insert_events(curs, stored_events, **kwargs)
        originators = canonical_ids(stored_events)
        if stored_events and ids:
            # The library's insert holds an exclusive lock on the events table
            # until commit, so no other writer can move a chain's head meanwhile.
            self._chain(curs, stored_events, ids, chain, originators)
        rows = with_positions(read_model, positions_by_id(originators, ids))
        if rows:
            # A nested pipeline syncs when it ends: an error in these rows (a
            # duplicate token hash) is raised here, where the library expects one,
            # and the transaction with the events is rolled back.
            with curs.connection.pipeline():
                write_upserts(curs, rows, self.qualify)
        return ids

    #: Events per save up to which the server computes each chain entry's hash.
    server_chained = 8

    def _chain(
        self,
        curs: Any,
        stored_events: Sequence[StoredEvent],
        ids: Sequence[int],
        chain: Mapping[UUID, str],
        originators: Sequence[UUID],
    ) -> None:
        """Append the chain entries of the events just inserted.

        A small save sends one statement per event whose hash the server
        computes from the head it reads (pg_sha256 over the same bytes as
        ``entry_hash``), so the library's pipeline never stops for a round trip.
        A larger one reads its chains' heads in one query, computes the entries
        here (:func:`~caljournal.adapters.audit_chain.new_entries`, as SQLite
        does) and inserts them as one JSON array: one statement per event cost
        more than that round trip.
        """
        if len(stored_events) <= self.server_chained:
            curs.executemany(
                chained_insert(self.qualify),
                [
                    chained_values(s, position, chain, originator)
                    for s, position, originator in zip(stored_events, ids, originators, strict=True)
                ],
            )
            return
        accounts = list(dict.fromkeys(chain.get(u, OPERATORS) for u in originators))
        with curs.connection.cursor(row_factory=tuple_row) as heads_cursor:
            heads_cursor.execute(heads_query(self.qualify), [accounts])
            heads = {str(a): (int(seq), str(h)) for a, seq, h in heads_cursor.fetchall()}
        entries = new_entries(heads, stored_events, ids, chain, originators)
        curs.execute(
            recordset_statement(CHAIN, CHAIN_COLUMNS, "", False, self.qualify),
            [orjson.dumps([dict(zip(CHAIN_COLUMNS, e, strict=True)) for e in entries]).decode()],
        )

    def select_positions(self, originator_id: UUID) -> dict[int, int]:
        """Return notification id by version for one aggregate's events."""
        sql = (
            f'SELECT originator_version AS v, notification_id AS n FROM {self.qualify}"'
            f'{self.events_table_name}" WHERE originator_id = %s'
        )
        return {r["v"]: r["n"] for r in self._fetch(sql, [originator_id])}

    def select_last_position(self, originator_id: UUID, topic: str) -> int | None:
        """Return the journal position of one aggregate's last event of ``topic``, or None."""
        sql = (
            f'SELECT MAX(notification_id) AS n FROM {self.qualify}"{self.events_table_name}" '
            "WHERE originator_id = %s AND topic = %s"
        )
        return self._fetch(sql, [originator_id, topic])[0]["n"]

    def _fetch(self, sql: str, params: Sequence[Any]) -> list[DictRow]:
        # One statement on the pool's autocommit connection is its own snapshot;
        # an explicit BEGIN … ROLLBACK around it would cost two more round trips
        # (measured: 0.28 ms → 0.1 ms for the token lookup of every API request).
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(sql.encode(), list(params))
            return list(curs.fetchall())

    def _fetch_tuples(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        # Binary results: a stored event's state comes as bytes, not as hex text.
        with self.datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row) as curs:
            curs.execute(sql.encode(), list(params), binary=True)
            return list(curs.fetchall())

    def _execute(self, statements: Iterable[tuple[str, Sequence[Any]]]) -> None:
        with self.datastore.transaction(commit=True) as curs:
            for sql, params in statements:
                curs.execute(sql.encode(), list(params))

    def _update(self, sql: str, params: Sequence[Any]) -> int:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(sql.encode(), list(params))
            return int(curs.rowcount)

    def _execute_many(self, statements: Iterable[tuple[str, Sequence[Sequence[Any]]]]) -> None:
        with self.datastore.transaction(commit=True) as curs:
            for sql, params in statements:
                curs.executemany(sql.encode(), [list(p) for p in params])


def chained_insert(qualify: str) -> bytes:
    """Return the INSERT that appends one chain entry, its hash computed by PostgreSQL.

    The hashed bytes are those of ``adapters.audit_chain.entry_hash``: the
    previous hash (or GENESIS), originator id, version, topic and the state's
    length, each followed by a newline, then the state.
    """
    table = f"{qualify}{CHAIN}"
    return (
        f"INSERT INTO {table} (account_id, seq, position, originator_id, "
        "originator_version, topic, entry_hash) "
        "SELECT a.account_id, COALESCE(h.seq, 0) + 1, a.position, a.originator_id, "
        "a.version, a.topic, encode(sha256(convert_to(COALESCE(h.entry_hash, a.genesis) "
        "|| E'\\n' || a.originator_id || E'\\n' || a.version::text || E'\\n' || a.topic "
        "|| E'\\n' || octet_length(a.state)::text || E'\\n', 'UTF8') || a.state), 'hex') "
        "FROM (SELECT %s::text AS account_id, %s::bigint AS position, "
        "%s::text AS originator_id, %s::bigint AS version, %s::text AS topic, "
        "%s::bytea AS state, %s::text AS genesis) a "
        f"LEFT JOIN LATERAL (SELECT seq, entry_hash FROM {table} "
        "WHERE account_id = a.account_id ORDER BY seq DESC LIMIT 1) h ON true"
    ).encode()


#: The chain table's columns, in the order of ``audit_chain.new_entries``' rows.
CHAIN_COLUMNS = (
    "account_id",
    "seq",
    "position",
    "originator_id",
    "originator_version",
    "topic",
    "entry_hash",
)


def heads_query(qualify: str) -> bytes:
    """Return the query for the last entry (account_id, seq, entry_hash) of each given chain."""
    table = f"{qualify}{CHAIN}"
    return (
        "SELECT h.account_id, h.seq, h.entry_hash FROM unnest(%s::text[]) AS k(account_id) "
        f"CROSS JOIN LATERAL (SELECT account_id, seq, entry_hash FROM {table} "
        "WHERE account_id = k.account_id ORDER BY seq DESC LIMIT 1) h"
    ).encode()


def chained_values(
    stored: StoredEvent,
    position: int,
    chain: Mapping[UUID, str],
    originator_id: UUID | None = None,
) -> tuple[str, int, str, int, str, bytes, str]:
    """Return the parameters of :func:`chained_insert` for one stored event.

    ``originator_id`` is the event's id from ``audit_chain.canonical_ids`` when
    the caller has it.
    """
    if originator_id is None:
        originator_id = canonical_ids([stored])[0]
    return (
        chain.get(originator_id, OPERATORS),
        int(position),
        str(originator_id),
        int(stored.originator_version),
        stored.topic,
        bytes(stored.state),
        GENESIS,
    )


#: Types of the values a row may hold to travel as JSON: PostgreSQL reads each
#: back as exactly what a parameter of that value writes (text, integer, NULL).
#: Any other (a float, a bool, a datetime, an enum) goes as its own statement.
PLAIN = frozenset({str, int, type(None)})


def binary_parameters(statement: Composed) -> Composed:
    """Return ``statement`` with each of its ``%s`` parameters sent in binary (``%b``)."""
    return Composed([_binary_part(part) for part in statement])


def _binary_part(part: Composable) -> Composable:
    if isinstance(part, Composed):
        return binary_parameters(part)
    if isinstance(part, SQL):
        return SQL(part.as_string().replace("%s", "%b"))
    return part


def write_upserts(curs: Any, rows: Iterable[Row], qualify: str) -> None:
    """Write query-table rows in a library transaction, in their order.

    Like rows go to the server as one JSON array per statement
    (:func:`recordset_upserts`): one parameter per batch instead of one
    statement per row, which cost more client time than writing the rows did.
    """
    for sql, params in recordset_upserts(rows, qualify):
        curs.execute(sql, params)


def recordset_upserts(rows: Iterable[Row], qualify: str) -> Iterator[tuple[bytes, list[Any]]]:
    """Yield (SQL, parameters) that write ``rows`` as the row-by-row statements do.

    Consecutive rows of one table, columns and kind whose values are all
    :data:`PLAIN` become one ``INSERT … SELECT … FROM jsonb_populate_recordset``
    with the same ``ON CONFLICT`` clause as :func:`readmodel.upsert_statement`.
    A key met again starts the next statement (PostgreSQL refuses to update one
    row twice in a statement; each statement sees the rows of those before it),
    so every row meets the table as the row-by-row statements left it.
    Deletions and rows with other values are one statement each, as before.
    """
    shape: tuple[str, tuple[str, ...], str, bool] | None = None
    batch: list[dict[str, Any]] = []
    keys: set[Any] = set()
    for row in rows:
        values = row.values
        plain = not row.delete and PLAIN.issuperset(map(type, values.values()))
        now = (row.table, tuple(values), row.key, row.versioned)
        key = values[row.key]
        if shape is not None and batch and (not plain or now != shape or key in keys):
            yield from _recordset(shape, batch, qualify)
            batch, keys = [], set()
        if not plain:
            sql, params = upsert_statement(row, qualify, "%s")
            yield sql.encode(), params
            continue
        shape = now
        batch.append(values)
        keys.add(key)
    if shape is not None and batch:
        yield from _recordset(shape, batch, qualify)


def _recordset(
    shape: tuple[str, tuple[str, ...], str, bool], batch: list[dict[str, Any]], qualify: str
) -> Iterator[tuple[bytes, list[Any]]]:
    if len(batch) == 1:
        table, _, key, versioned = shape
        sql, params = upsert_statement(Row(table, batch[0], key, versioned), qualify, "%s")
        yield sql.encode(), params
        return
    try:
        payload = orjson.dumps(batch).decode()
    except orjson.JSONEncodeError:
        # Text PostgreSQL cannot hold either (a lone surrogate): the row-by-row
        # statements raise the error they always raised.
        table, _, key, versioned = shape
        for values in batch:
            sql, params = upsert_statement(Row(table, values, key, versioned), qualify, "%s")
            yield sql.encode(), params
        return
    yield recordset_statement(*shape, qualify), [payload]


@lru_cache(maxsize=256)
def recordset_statement(
    table: str, names: tuple[str, ...], key: str, versioned: bool, qualify: str
) -> bytes:
    """Return the upsert of a JSON array of rows (see :func:`recordset_upserts`).

    Without a ``key`` it is a plain INSERT.
    """
    target = qualify + table
    columns = ", ".join(names)
    sql = (
        f"INSERT INTO {target} ({columns}) SELECT {columns} "
        f"FROM jsonb_populate_recordset(NULL::{target}, %s::jsonb)"
    )
    if key:
        updates = ", ".join(f"{n} = excluded.{n}" for n in names if n != key)
        sql += f" ON CONFLICT ({key}) DO UPDATE SET {updates}"
    if versioned:
        sql += f" WHERE excluded.version > {target}.version"
    return sql.encode()
