"""Query-table rows are written one statement per run of like rows, in their order."""

from __future__ import annotations

import sqlite3

from caljournal.adapters.readmodel import Row, upsert_batches, upsert_statement


def _table(db: sqlite3.Connection) -> list[tuple[str, str, int]]:
    return list(db.execute("SELECT id, name, version FROM t ORDER BY id"))


def _db() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (id TEXT PRIMARY KEY, name TEXT, version INTEGER)")
    db.execute("CREATE TABLE u (id TEXT PRIMARY KEY, name TEXT)")
    return db


ROWS = [
    Row("t", {"id": "a", "name": "first", "version": 1}),
    Row("t", {"id": "b", "name": "first", "version": 1}),
    Row("u", {"id": "a", "name": "other table"}, versioned=False),
    Row("t", {"id": "a", "name": "second", "version": 2}),
    Row("t", {"id": "a", "name": "stale", "version": 1}),  # older version: ignored
    Row("t", {"id": "b"}, delete=True),
    Row("t", {"id": "b", "name": "again", "version": 3}),  # after the delete: kept
    Row("u", {"id": "a"}, versioned=False, delete=True),
]


def test_batches_write_what_row_by_row_statements_write() -> None:
    one_by_one, batched = _db(), _db()
    for row in ROWS:
        one_by_one.execute(*upsert_statement(row, "", "?"))
    batches = list(upsert_batches(ROWS, "", "?"))
    for sql, params in batches:
        batched.executemany(sql, params)
    assert _table(batched) == _table(one_by_one) == [("a", "second", 2), ("b", "again", 3)]
    assert list(batched.execute("SELECT * FROM u")) == []
    # Only consecutive like rows share a statement, so the order of the rows holds.
    assert [len(params) for _, params in batches] == [2, 1, 2, 1, 1, 1]


def test_many_like_rows_make_one_statement() -> None:
    rows = [Row("t", {"id": str(i), "name": "n", "version": 1}) for i in range(500)]
    batches = list(upsert_batches(rows, "", "?"))
    assert len(batches) == 1
    assert len(batches[0][1]) == 500
    assert list(upsert_batches([], "", "?")) == []
