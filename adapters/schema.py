"""Schema versions of caljournal's own tables, and the migrations between them.

The eventsourcing library creates and owns its event table; every other table
(query tables, sync state, links and their sealed credentials, tokens) is
caljournal's, and its shape changes with caljournal. ``MIGRATIONS`` is the
ordered list of numbered steps from an empty database to the current shape;
``caljournal_schema`` records which steps a database has had:

    version INTEGER PRIMARY KEY, applied_us BIGINT NOT NULL, description TEXT NOT NULL

:func:`migrate` runs when the journal opens (see ``adapters.journal``). It takes a
lock first, so that processes starting together apply each step exactly once:
``pg_advisory_lock`` on PostgreSQL, and ``BEGIN IMMEDIATE`` on SQLite (one writer
at a time; a second process waits for the lock timeout). Each step runs in its
own transaction together with the row recording it: a step that fails leaves the
database at the previous version (both databases roll back DDL). A database at a
version newer than this code knows is refused with :class:`SchemaVersionError`.

Version 1 is the schema every release before versioning created, written with
``IF NOT EXISTS``: a database made by such a release (tables present, no
``caljournal_schema``) is adopted as version 1 without a change.

Adding a migration: append a :class:`Migration` with the next number, whose
``statements`` return the SQL for the dialect (``target.dialect`` is "sqlite" or
"postgresql"; prefix table names with ``target.qualify``), or whose ``run`` does
the work through the cursor it is given (for data that SQL alone cannot
convert). Never change a released step: databases have applied it already.
Change ``adapters.readmodel`` (the rows the recorders write) in the same commit.

Why hand-written: the library manages only its own event table, and a tool such
as alembic would bring SQLAlchemy and its own connection handling into a
project that runs about a dozen DDL statements through the library's psycopg and
sqlite3 connections.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from caljournal.adapters.audit_chain import chain_existing, chain_statements
from caljournal.adapters.personal_keys import PERSONAL_KEYS
from caljournal.adapters.readmodel import (
    ACCOUNTS,
    APPOINTMENTS,
    CHECKS,
    INBOUND,
    LEASES,
    LINKS,
    OUTBOUND,
    QUARANTINE,
    SECRETS,
    SYNC_STATUS,
    TOKENS,
    WORKERS,
)
from caljournal.adapters.resync_store import RESYNCS

SCHEMA_TABLE = "caljournal_schema"
# The key of the PostgreSQL advisory lock held while the schema is checked or changed
# (the same key the releases before versioning took around their CREATE TABLEs).
LOCK_KEY = "caljournal-schema"

Dialect = Literal["sqlite", "postgresql"]


class Cursor(Protocol):
    """What a step needs of a DB-API cursor (sqlite3, psycopg, or the library's wrappers)."""

    def execute(self, sql: Any, params: Any = ...) -> Any: ...

    def fetchall(self) -> Any: ...


@dataclass(frozen=True)
class Target:
    """The database a migration runs on.

    ``qualify`` prefixes caljournal's table names ('"schema".' on PostgreSQL, ""
    on SQLite); ``events_table`` is the library's event table, qualified alike.
    """

    dialect: Dialect
    qualify: str
    events_table: str

    @property
    def placeholder(self) -> str:
        """Return the parameter mark of the dialect."""
        return "?" if self.dialect == "sqlite" else "%s"


@dataclass(frozen=True)
class Migration:
    """One numbered step: SQL for the dialect, and/or a function given the cursor."""

    version: int
    description: str
    statements: Callable[[Target], Sequence[str]] | None = None
    run: Callable[[Cursor, Target], None] | None = None


class SchemaVersionError(Exception):
    """The database's schema is newer than this code, or the step list is malformed."""


class MigrationError(Exception):
    """A migration step failed; the database stays at the version before it."""


def _version_1(target: Target) -> list[str]:
    # The DDL of every release before versioning, unchanged: ``IF NOT EXISTS``
    # adopts a database made by one of them.
    qualify = target.qualify
    ib, qu, ck = qualify + INBOUND, qualify + QUARANTINE, qualify + CHECKS
    a, c, t, lk, sc, ob, ls, ss, wk = (
        qualify + name
        for name in (
            APPOINTMENTS,
            ACCOUNTS,
            TOKENS,
            LINKS,
            SECRETS,
            OUTBOUND,
            LEASES,
            SYNC_STATUS,
            WORKERS,
        )
    )
    return [
        f"CREATE TABLE IF NOT EXISTS {a} (id TEXT PRIMARY KEY, account_id TEXT NOT NULL, "
        "start_us BIGINT NOT NULL, end_us BIGINT NOT NULL, status TEXT NOT NULL, "
        "version INTEGER NOT NULL, sequence INTEGER NOT NULL, modified_us BIGINT NOT NULL, "
        "recurring INTEGER NOT NULL, doc TEXT NOT NULL)",
        f"CREATE INDEX IF NOT EXISTS {APPOINTMENTS}_recurring ON {a} (account_id, recurring)",
        f"CREATE INDEX IF NOT EXISTS {APPOINTMENTS}_window ON {a} (account_id, start_us)",
        f"CREATE INDEX IF NOT EXISTS {APPOINTMENTS}_modified ON {a} (account_id, modified_us)",
        f"CREATE TABLE IF NOT EXISTS {c} (id TEXT PRIMARY KEY, name TEXT NOT NULL, "
        "created_us BIGINT NOT NULL, version INTEGER NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS {t} (id TEXT PRIMARY KEY, account_id TEXT, "
        "account_name TEXT, name TEXT NOT NULL, token_hash TEXT NOT NULL UNIQUE, "
        "revoked INTEGER NOT NULL, "
        "created_us BIGINT NOT NULL, version INTEGER NOT NULL)",
        f"CREATE INDEX IF NOT EXISTS {TOKENS}_account ON {t} (account_id)",
        f"CREATE TABLE IF NOT EXISTS {lk} (id TEXT PRIMARY KEY, account_id TEXT NOT NULL, "
        "status TEXT NOT NULL, calendar_url TEXT, version INTEGER NOT NULL, doc TEXT NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS {sc} (id TEXT PRIMARY KEY, sealed TEXT NOT NULL, "
        "version INTEGER NOT NULL)",
        # What each appointment looks like on its calendar, recorded only after the
        # server confirmed a write (see projections.outbound).
        f"CREATE TABLE IF NOT EXISTS {ob} (appointment_id TEXT PRIMARY KEY, "
        "account_id TEXT NOT NULL, calendar_url TEXT NOT NULL, href TEXT NOT NULL, etag TEXT, "
        "pushed_sequence INTEGER NOT NULL, content_hash TEXT, present INTEGER NOT NULL, "
        "failed_sequence INTEGER, failure TEXT, updated_us BIGINT NOT NULL)",
        f"CREATE INDEX IF NOT EXISTS {OUTBOUND}_account ON {ob} (account_id)",
        f"CREATE INDEX IF NOT EXISTS {OUTBOUND}_href ON {ob} (account_id, href)",
        f"CREATE TABLE IF NOT EXISTS {ls} (account_id TEXT PRIMARY KEY, owner TEXT NOT NULL, "
        "expires_us BIGINT NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS {ss} (account_id TEXT PRIMARY KEY, pushed_position BIGINT, "
        "last_success_us BIGINT, last_error TEXT, last_error_us BIGINT, worker TEXT)",
        f"CREATE TABLE IF NOT EXISTS {wk} (owner TEXT PRIMARY KEY, expires_us BIGINT NOT NULL)",
        # Where each account's inbound poll stands; written with the events a poll
        # produced, so a crash never loses or repeats a remote change.
        f"CREATE TABLE IF NOT EXISTS {ib} (account_id TEXT PRIMARY KEY, calendar_url TEXT, "
        "sync_token TEXT, ctag TEXT, last_poll_us BIGINT, last_requests INTEGER, "
        "import_total INTEGER, import_done INTEGER, last_error TEXT, "
        "confirm_deletes INTEGER NOT NULL DEFAULT 0, breaker TEXT, last_full_us BIGINT)",
        f"CREATE TABLE IF NOT EXISTS {qu} (id TEXT PRIMARY KEY, account_id TEXT NOT NULL, "
        "href TEXT NOT NULL, etag TEXT, reason TEXT NOT NULL, at_us BIGINT NOT NULL)",
        f"CREATE INDEX IF NOT EXISTS {QUARANTINE}_account ON {qu} (account_id)",
        # When each account's calendar was last compared in full with the copy
        # records, what such comparisons found that the server's delta missed, and
        # when caljournal last wrote to the calendar (pushes, backfills, replays).
        f"CREATE TABLE IF NOT EXISTS {ck} (account_id TEXT PRIMARY KEY, last_us BIGINT, "
        "checks INTEGER NOT NULL DEFAULT 0, differences INTEGER NOT NULL DEFAULT 0, "
        "last_found TEXT, last_found_us BIGINT, written_us BIGINT)",
    ]


def _appointment_positions(target: Target) -> list[str]:
    a = target.qualify + APPOINTMENTS
    if target.dialect == "sqlite":
        # The library stores SQLite originator ids as hex without dashes, and the
        # notification id is the rowid.
        fill = (
            f"UPDATE {a} SET position = (SELECT MAX(e.rowid) FROM {target.events_table} e "
            f"WHERE e.originator_id = replace({a}.id, '-', ''))"
        )
    else:
        fill = (
            f"UPDATE {a} SET position = (SELECT MAX(e.notification_id) "
            f"FROM {target.events_table} e WHERE e.originator_id = {a}.id::uuid)"
        )
    return [
        f"ALTER TABLE {a} ADD COLUMN position BIGINT",
        fill,
        f"CREATE INDEX {APPOINTMENTS}_position ON {a} (account_id, position)",
        # Pending pushes were found by modification time; nothing else reads it by index.
        f"DROP INDEX IF EXISTS {target.qualify}{APPOINTMENTS}_modified",
    ]


def _resync_requests(target: Target) -> list[str]:
    # Backfill and replay requests, their progress and outcome (adapters.resync_store).
    table = target.qualify + RESYNCS
    return [
        f"CREATE TABLE {table} (request_id TEXT PRIMARY KEY, "
        "account_id TEXT NOT NULL, kind TEXT NOT NULL, options TEXT NOT NULL, "
        "origin TEXT NOT NULL, actor TEXT NOT NULL, correlation_id TEXT NOT NULL, "
        "state TEXT NOT NULL, requested_us BIGINT NOT NULL, worker TEXT, started_us BIGINT, "
        "finished_us BIGINT, phase TEXT, done INTEGER, total INTEGER, summary TEXT, error TEXT)",
        f"CREATE INDEX {RESYNCS}_account ON {table} (account_id, state)",
    ]


def _audit_chain(cursor: Cursor, target: Target) -> None:
    for statement in chain_statements(target.qualify):
        cursor.execute(_sql(target, statement))
    chain_existing(_Plain(cursor, target), target.dialect, target.qualify, target.events_table)


class _Plain:
    """A cursor that takes SQL as text on both dialects (psycopg wants bytes here)."""

    def __init__(self, cursor: Cursor, target: Target) -> None:
        self.cursor = cursor
        self.target = target

    def execute(self, sql: str, params: Any = None) -> Any:
        if params is None:
            return self.cursor.execute(_sql(self.target, sql))
        return self.cursor.execute(_sql(self.target, sql), params)

    def fetchall(self) -> Any:
        return self.cursor.fetchall()


def _personal_keys(target: Target) -> list[str]:
    # One key per appointment for its personal data (adapters.personal_data); an
    # erased key is NULL, and the row keeps when and by whom it was erased.
    return [
        f"CREATE TABLE {target.qualify}{PERSONAL_KEYS} (appointment_id TEXT PRIMARY KEY, "
        "key TEXT, created_us BIGINT, erased_us BIGINT, erased_by TEXT)",
    ]


def _fetch_modes(target: Target) -> list[str]:
    # How each calendar's server is best asked for objects (adapters.fetch_mode),
    # learned by the polls and kept across restarts.
    return [f"ALTER TABLE {target.qualify}{INBOUND} ADD COLUMN fetch_mode TEXT"]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "query tables, sync state, links, link secrets and tokens (the unversioned schema)",
        statements=_version_1,
    ),
    Migration(
        2,
        "appointments: journal position of the latest event, indexed by account "
        "(replacing the index by modification time)",
        statements=_appointment_positions,
    ),
    Migration(
        3,
        "resync requests: backfills and replays asked for, who runs them, their progress",
        statements=_resync_requests,
    ),
    Migration(
        4,
        "audit chain: every account's events chained by hash, the existing ones included",
        run=_audit_chain,
    ),
    Migration(
        5,
        "personal-data keys: one per appointment, destroyed when its personal data is erased",
        statements=_personal_keys,
    ),
    Migration(
        6,
        "inbound state: how the calendar's server is best asked for objects, as polls learned it",
        statements=_fetch_modes,
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version


def _scalar(row: Any) -> Any:
    """Return the first column of a row (tuple, sqlite3.Row or dict row)."""
    if isinstance(row, Mapping):
        return next(iter(row.values()))
    return row[0]


def _sql(target: Target, sql: str) -> Any:
    # psycopg wants bytes (or a LiteralString) for a composed string.
    return sql.encode() if target.dialect == "postgresql" else sql


def current_version(cursor: Cursor, target: Target) -> int:
    """Return the highest applied version (0 before the first)."""
    cursor.execute(_sql(target, f"SELECT MAX(version) FROM {target.qualify}{SCHEMA_TABLE}"))
    rows = cursor.fetchall()
    value = _scalar(rows[0]) if rows else None
    return int(value) if value is not None else 0


def _check_steps(migrations: Sequence[Migration]) -> None:
    numbers = [m.version for m in migrations]
    if numbers != list(range(1, len(numbers) + 1)):
        raise SchemaVersionError(f"migration versions must be 1, 2, 3, …; got {numbers}")


def migrate(
    cursor: Cursor, target: Target, migrations: Sequence[Migration] = MIGRATIONS
) -> list[int]:
    """Bring caljournal's tables to the latest version; return the versions applied now.

    ``cursor`` belongs to a connection in autocommit mode that nothing else uses
    meanwhile: this function issues its own BEGIN/COMMIT (and on PostgreSQL
    holds a session advisory lock for the duration).

    :raises SchemaVersionError: when the database is at a version newer than
        the last of ``migrations``.
    :raises MigrationError: when a step fails (that step is rolled back).
    """
    _check_steps(migrations)
    if target.dialect == "postgresql":
        cursor.execute(_sql(target, f"SELECT pg_advisory_lock(hashtext('{LOCK_KEY}'))"))
        try:
            return _apply(cursor, target, migrations)
        finally:
            cursor.execute(_sql(target, f"SELECT pg_advisory_unlock(hashtext('{LOCK_KEY}'))"))
    return _apply(cursor, target, migrations)


def _begin(cursor: Cursor, target: Target) -> None:
    # IMMEDIATE takes SQLite's write lock at once, so two processes cannot both
    # read "version 1" and then both apply step 2.
    cursor.execute(_sql(target, "BEGIN IMMEDIATE" if target.dialect == "sqlite" else "BEGIN"))


def _apply(cursor: Cursor, target: Target, migrations: Sequence[Migration]) -> list[int]:
    applied: list[int] = []
    latest = migrations[-1].version if migrations else 0
    _begin(cursor, target)
    try:
        cursor.execute(
            _sql(
                target,
                f"CREATE TABLE IF NOT EXISTS {target.qualify}{SCHEMA_TABLE} "
                "(version INTEGER PRIMARY KEY, applied_us BIGINT NOT NULL, "
                "description TEXT NOT NULL)",
            )
        )
        version = current_version(cursor, target)
    except BaseException:
        cursor.execute(_sql(target, "ROLLBACK"))
        raise
    cursor.execute(_sql(target, "COMMIT"))
    if version > latest:
        raise SchemaVersionError(
            f"the database's schema is at version {version}, newer than version {latest} "
            "that this caljournal knows: run a caljournal release at least as new as "
            "the one that wrote the database"
        )
    for step in migrations:
        if step.version <= version:
            continue
        _begin(cursor, target)
        try:
            # Another process may have applied it while this one waited (SQLite).
            if current_version(cursor, target) >= step.version:
                cursor.execute(_sql(target, "ROLLBACK"))
                continue
            _run_step(cursor, target, step)
        except BaseException as exc:
            cursor.execute(_sql(target, "ROLLBACK"))
            if isinstance(exc, Exception):
                raise MigrationError(
                    f"schema migration {step.version} ({step.description}) failed, "
                    f"the database stays at version {step.version - 1}: {exc}"
                ) from exc
            raise
        cursor.execute(_sql(target, "COMMIT"))
        applied.append(step.version)
    return applied


def _run_step(cursor: Cursor, target: Target, step: Migration) -> None:
    for statement in step.statements(target) if step.statements else ():
        cursor.execute(_sql(target, statement))
    if step.run is not None:
        step.run(cursor, target)
    p = target.placeholder
    cursor.execute(
        _sql(
            target,
            f"INSERT INTO {target.qualify}{SCHEMA_TABLE} (version, applied_us, description) "
            f"VALUES ({p}, {p}, {p})",
        ),
        [step.version, int(time.time() * 1_000_000), step.description],
    )
