"""The journal: the eventsourcing application over the recorders of ``adapters.recorders``.

The library's own SQLite and PostgreSQL recorders store the events; their
subclasses in ``adapters.recorders`` add the query tables and write their rows
inside the library's insert transaction. Here: the application, its LISTEN
connection, its environment and opening it with a clear error.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from uuid import UUID

from eventsourcing.application import Application, ProcessingEvent
from eventsourcing.domain import Aggregate, CanMutateAggregate
from eventsourcing.persistence import EventStore, Mapper, Transcoder
from eventsourcing.utils import get_topic

from caljournal.adapters.audit_chain import chain_key
from caljournal.adapters.personal_data import PersonalDataMapper, PersonalEventStore
from caljournal.adapters.personal_keys import PersonalKeys
from caljournal.adapters.readmodel import (
    rows_for,
)
from caljournal.adapters.recorders import (
    JournalRecorder,
    ReadModelQueries,
    SQLiteJournalRecorder,
    contended,
    latest_positions,
)
from caljournal.adapters.transcoder import JournalTranscoder
from caljournal.domain.ids import link_id
from caljournal.settings import Settings, database_config

if TYPE_CHECKING:
    import psycopg

    from caljournal.adapters.recorders_pg import PostgresJournalRecorder

#: The PostgreSQL recorder by topic: its module (and psycopg) loads only when used.
POSTGRES_RECORDER_TOPIC = "caljournal.adapters.recorders_pg:PostgresJournalRecorder"

APPLICATION_NAME = "caljournal"
CALENDAR_CHOSEN = "caljournal:CalendarLink.CalendarChosen"
_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class PostgresListener:
    """A connection that LISTENs on the journal's NOTIFY channel."""

    def __init__(self, env: dict[str, str], channel: str) -> None:
        import psycopg
        from psycopg.sql import SQL, Identifier

        self.connection = psycopg.connect(
            dbname=env["POSTGRES_DBNAME"],
            host=env["POSTGRES_HOST"],
            port=env["POSTGRES_PORT"],
            user=env["POSTGRES_USER"],
            password=env.get("POSTGRES_PASSWORD") or None,
            autocommit=True,
            connect_timeout=5,
        )
        self.connection.execute(SQL("LISTEN {0}").format(Identifier(channel)))

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a notification; return whether one came."""
        for _ in self.connection.notifies(timeout=timeout, stop_after=1):
            return True
        return False

    def close(self) -> None:
        """Close the connection."""
        self.connection.close()


class Journal(Application[UUID]):
    """The append-only journal of every account, appointment and token."""

    name = APPLICATION_NAME

    def __init__(self, env: dict[str, str] | None = None) -> None:
        super().__init__(env=env)
        self._listeners: list[Callable[[], None]] = []
        self._env = dict(env or {})
        self.personal_keys = PersonalKeys(self.journal_recorder, self.mapper.cipher)
        self.personal_mapper.keys = self.personal_keys

    def construct_mapper(self) -> Mapper[UUID]:
        """Return the mapper that encrypts personal data with a key per appointment."""
        return self.factory.mapper(
            transcoder=self.construct_transcoder(), mapper_class=PersonalDataMapper
        )

    def construct_transcoder(self) -> Transcoder:
        """Return the library's JSON transcoder with its encoder made once (see there)."""
        transcoder = JournalTranscoder()
        self.register_transcodings(transcoder)
        return transcoder

    def construct_event_store(self) -> EventStore[UUID]:
        """Return the event store whose every read looks the personal-data key up afresh."""
        return PersonalEventStore(mapper=self.mapper, recorder=self.recorder)

    @property
    def personal_mapper(self) -> PersonalDataMapper:
        """Return the mapper, with its personal-data methods."""
        mapper = self.mapper
        assert isinstance(mapper, PersonalDataMapper)
        return mapper

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` after every save of this process has committed."""
        self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[], None]) -> None:
        """Stop calling ``callback``."""
        with contextlib.suppress(ValueError):
            self._listeners.remove(callback)

    def listener(self) -> PostgresListener | None:
        """Return a LISTEN connection for new events (PostgreSQL), or None (SQLite)."""
        if self._env.get("PERSISTENCE_MODULE") != "eventsourcing.postgres":
            return None
        from caljournal.adapters.recorders_pg import PostgresJournalRecorder

        recorder = self.recorder
        assert isinstance(recorder, PostgresJournalRecorder)
        return PostgresListener(self._env, recorder.channel_name)

    def save(
        self, *objs: Any, states: Mapping[Any, dict[str, Any]] | None = None, **kwargs: Any
    ) -> Any:
        """Record the aggregates' new events and their query-table rows atomically.

        ``states`` maps aggregate ids to their ``state()`` for callers that
        have computed it already (to answer with it), so it is built once.

        :raises eventsourcing.persistence.IntegrityError: when another writer
            recorded the same version first (optimistic concurrency).
        """
        known = states or {}
        rows = [
            row
            for obj in objs
            if obj is not None and _aggregate(obj)
            for row in rows_for(obj, known.get(obj.id))
        ]
        rows.extend(kwargs.pop("extra_rows", ()))
        rows.extend(self.personal_keys.rows_for(objs))
        chain = {obj.id: chain_key(obj) for obj in objs if obj is not None}
        try:
            recordings = self._save(*objs, read_model=rows, chain=chain, **kwargs)
        except BaseException:
            self.personal_keys.failed()
            raise
        self.personal_keys.saved()
        for callback in list(self._listeners):
            callback()
        return recordings

    def _save(self, *objs: Any, **kwargs: Any) -> Any:
        """Do what ``Application.save`` does, collecting events without Protocol checks.

        The library's collector asks ``isinstance`` of two runtime-checkable
        Protocols for every object; on a batch of imported appointments those
        checks cost more than writing the rows. Every object saved here is one of
        caljournal's aggregates (or a bare event), known by its class.
        """
        processing_event: ProcessingEvent[Any] = _Collector()
        processing_event.collect_events(*objs, **kwargs)
        recordings = self._record(processing_event)
        self._take_snapshots(processing_event)
        self._notify(recordings)
        return recordings

    def calendar_chosen_position(self, account_id: UUID | str) -> int:
        """Return the journal position of the event that chose the link's current calendar.

        Appointment changes after it are pushed by the worker; older ones are the
        backfill's job. 0 when no calendar was ever chosen.
        """
        position = self.journal_recorder.select_last_position(link_id(account_id), CALENDAR_CHOSEN)
        return int(position or 0)

    @property
    def journal_recorder(self) -> SQLiteJournalRecorder | PostgresJournalRecorder:
        """Return the recorder, with its query-table methods."""
        recorder = self.recorder
        assert isinstance(recorder, ReadModelQueries)
        return cast("SQLiteJournalRecorder | PostgresJournalRecorder", recorder)


def _aggregate(obj: object) -> bool:
    """Return True for an aggregate, False for a bare domain event."""
    return isinstance(obj, Aggregate) or not isinstance(obj, CanMutateAggregate)


class _Collector(ProcessingEvent[Any]):
    """The library's collector, deciding by class where it can (see ``Journal._save``)."""

    def collect_events(self, *objs: Any, **kwargs: Any) -> None:
        for obj in objs:
            if isinstance(obj, Aggregate):
                self.events.extend(obj.collect_events())
                self.aggregates[obj.id] = obj
            elif obj is not None:
                super().collect_events(obj)
        self.saved_kwargs.update(kwargs)


def journal_env(settings: Settings) -> dict[str, str]:
    """Return the eventsourcing environment for the configured database.

    Every key is given with and without the application's prefix, so stray
    variables in the process environment cannot redirect the journal.
    """
    env = database_config(settings.database_url)
    if env["PERSISTENCE_MODULE"] == "eventsourcing.sqlite":
        env["APPLICATION_RECORDER_TOPIC"] = get_topic(SQLiteJournalRecorder)
        env["SQLITE_LOCK_TIMEOUT"] = str(settings.database_lock_timeout)
    else:
        schema = env["POSTGRES_SCHEMA"]
        if not _SCHEMA.match(schema):
            raise ValueError(f"schema {schema!r} must be a lower-case SQL identifier")
        env["APPLICATION_RECORDER_TOPIC"] = POSTGRES_RECORDER_TOPIC
        env["POSTGRES_POOL_SIZE"] = str(settings.database_pool_size)
        env["POSTGRES_MAX_OVERFLOW"] = str(settings.database_pool_size)
        env["POSTGRES_LOCK_TIMEOUT"] = str(settings.database_lock_timeout)
        env["POSTGRES_CONNECT_TIMEOUT"] = "5"
    env["CREATE_TABLE"] = "y"
    if settings.journal_cipher_key is not None:
        env["CIPHER_TOPIC"] = "eventsourcing.cipher:AESCipher"
        env["CIPHER_KEY"] = settings.journal_cipher_key.get_secret_value()
    prefixed = {f"{APPLICATION_NAME.upper()}_{k}": v for k, v in env.items()}
    return {**env, **prefixed}


class JournalUnavailableError(Exception):
    """The journal's database cannot be opened; the message says where and why."""


def open_journal(settings: Settings) -> Journal:
    """Open (and if needed create) the journal described by ``settings``.

    :raises JournalUnavailableError: when PostgreSQL cannot be reached or refuses
        the connection, or the SQLite file cannot be created.
    """
    env = journal_env(settings)
    path = settings.sqlite_path
    if path is None:
        _check_postgres(env)
        return Journal(env=env)
    _create_private_file(path)
    try:
        return Journal(env=env)
    except Exception as exc:
        if not contended(exc):
            raise
    # Other processes are creating the file's tables: a journal whose opening met
    # their lock may have lost its writer connection, so a new one is opened.
    from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_random

    retrying = Retrying(
        retry=retry_if_exception(contended),
        wait=wait_random(0.05, 0.5),
        stop=stop_after_delay(120),
        reraise=True,
    )
    journal: Journal = retrying(Journal, env=env)
    return journal


def _create_private_file(path: Path) -> None:
    # SQLite creates its -wal and -shm files with the database file's mode, so
    # creating the file 0600 first keeps all three private whatever the umask.
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except OSError as exc:
        raise JournalUnavailableError(
            f"cannot create the SQLite journal {str(path)!r}: {exc.strerror}"
        ) from None


def _check_postgres(env: dict[str, str]) -> None:
    # The library's connection pool only reports "couldn't get a connection after
    # 5.00 sec"; one plain connection first names the cause, and at once.
    import psycopg

    where = (
        f"PostgreSQL journal (host {env['POSTGRES_HOST']}, port {env['POSTGRES_PORT']}, "
        f"database {env['POSTGRES_DBNAME']!r})"
    )
    try:
        psycopg.connect(
            dbname=env["POSTGRES_DBNAME"],
            host=env["POSTGRES_HOST"],
            port=env["POSTGRES_PORT"],
            user=env["POSTGRES_USER"],
            password=env.get("POSTGRES_PASSWORD") or None,
            connect_timeout=int(env.get("POSTGRES_CONNECT_TIMEOUT", "5")),
        ).close()
    except psycopg.Error as exc:
        raise JournalUnavailableError(f"cannot open the {where}: {_cause(exc)}") from None


def _cause(exc: psycopg.Error) -> str:
    """Return the reason of a failed connection, without the addresses a host resolved to."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if first.startswith("failed to resolve host"):
        return "the host name does not resolve"
    reason = first.rsplit(" failed: ", 1)[-1]
    reason = re.sub(r"^(FATAL|ERROR):\s+", "", reason)
    if "timeout expired" in reason:
        return "no answer within the connect timeout"
    return reason.rstrip(".") or type(exc).__name__


def topic_of(cls: type) -> str:
    """Return the pinned topic of an event or aggregate class."""
    return get_topic(cls)


__all__ = [
    "APPLICATION_NAME",
    "Journal",
    "JournalRecorder",
    "JournalUnavailableError",
    "PostgresListener",
    "ReadModelQueries",
    "SQLiteJournalRecorder",
    "journal_env",
    "latest_positions",
    "open_journal",
    "topic_of",
]
