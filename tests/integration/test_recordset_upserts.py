"""Query-table rows sent to PostgreSQL as JSON arrays land as row-by-row statements put them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from caljournal.adapters.readmodel import Row, upsert_statement
from caljournal.adapters.recorders_pg import recordset_upserts

TEXTS = [
    "plain",
    'quote " backslash \\ slash /',
    "line\nbreak\ttab\r\u2028",
    "ünïcödé ✓ 𝄞 emoji 🙂",
    "",
    '{"looks": ["like", "json"]}',
]


def _rows() -> list[Row]:
    rows = [
        Row("t", {"id": f"r{n}", "name": text, "n": n * 10**15, "version": 1})
        for n, text in enumerate(TEXTS)
    ]
    rows += [
        Row("t", {"id": "r0", "name": "second", "n": None, "version": 2}),  # key again
        Row("t", {"id": "r0", "name": "stale", "n": 1, "version": 1}),  # older: kept out
        Row("t", {"id": "r1", "name": "same version", "n": 2, "version": 1}),  # not newer
        Row("t", {"id": "r2"}, delete=True),
        Row("t", {"id": "r2", "name": "back", "n": -(2**62), "version": 5}),
        Row("t", {"id": "r3", "version": 9}),  # other columns: its own statement
        Row("t", {"id": "r4", "name": "float", "n": 1.5, "version": 3}),  # not plain
        Row("u", {"id": "a", "name": "x"}, versioned=False),
        Row("u", {"id": "b", "name": "y"}, versioned=False),
        Row("u", {"id": "a", "name": "z"}, versioned=False),  # later wins
    ]
    return rows


@pytest.fixture
def two_schemas(pg_admin: psycopg.Connection) -> Iterator[tuple[str, str]]:
    names = [f"t_{uuid.uuid4().hex[:12]}" for _ in range(2)]
    for name in names:
        pg_admin.execute(f'CREATE SCHEMA "{name}"')
        pg_admin.execute(
            f'CREATE TABLE "{name}".t (id TEXT PRIMARY KEY, name TEXT, n BIGINT, '
            "version INTEGER NOT NULL)"
        )
        pg_admin.execute(f'CREATE TABLE "{name}".u (id TEXT PRIMARY KEY, name TEXT)')
    yield names[0], names[1]
    for name in names:
        pg_admin.execute(f'DROP SCHEMA "{name}" CASCADE')


def _tables(conn: psycopg.Connection, schema: str) -> list[list[tuple[Any, ...]]]:
    return [
        conn.execute(f'SELECT * FROM "{schema}".{table} ORDER BY id').fetchall()
        for table in ("t", "u")
    ]


def test_json_batches_write_what_row_by_row_statements_write(
    pg_admin: psycopg.Connection, two_schemas: tuple[str, str]
) -> None:
    one_by_one, batched = two_schemas
    rows = _rows()
    with pg_admin.transaction():
        for row in rows:
            sql, params = upsert_statement(row, f'"{one_by_one}".', "%s")
            pg_admin.execute(sql.encode(), params)

    statements = list(recordset_upserts(rows, f'"{batched}".'))
    with pg_admin.transaction(), pg_admin.pipeline():
        for statement, values in statements:
            pg_admin.execute(statement, values)

    assert _tables(pg_admin, batched) == _tables(pg_admin, one_by_one)
    assert _tables(pg_admin, batched)[0][0] == ("r0", "second", None, 2)
    assert [(r[0], r[1]) for r in _tables(pg_admin, batched)[1]] == [("a", "z"), ("b", "y")]
    # Runs of like plain rows share a statement; a key met again, a deletion,
    # other columns or a value that is not plain text or integer start another.
    assert sum(b"jsonb_populate_recordset" in sql for sql, _ in statements) == 3
    assert len(statements) == 9
