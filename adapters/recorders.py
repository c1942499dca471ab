"""The journal's recorders: the query tables shared by both, and the SQLite recorder.

The subclasses add the query tables of ``adapters.readmodel`` (created and
migrated by ``adapters.schema`` when the journal opens) and write their rows,
with the journal positions of the new events, inside the library's insert
transaction. ``adapters.journal`` builds the application on them. The PostgreSQL
recorder is in ``adapters.recorders_pg``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias
from uuid import UUID

from eventsourcing.persistence import ConnectionUnavailableError, StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor, SQLiteDatastore

from caljournal.adapters.audit_chain import (
    CHAIN,
    OPERATORS,
    ChainEntry,
    ChainHead,
    canonical_ids,
    head_query,
    insert_statement,
    new_entries,
)
from caljournal.adapters.audit_queries import ChainCheckQueries
from caljournal.adapters.personal_keys import PERSONAL_KEYS
from caljournal.adapters.readmodel import (
    ACCOUNTS,
    APPOINTMENTS,
    LINKS,
    SECRETS,
    TOKENS,
    Row,
    Window,
    docs,
    recurring_query,
    upsert_batches,
    window_query,
    with_positions,
)
from caljournal.adapters.resync_store import ResyncQueries
from caljournal.adapters.schema import Target, migrate

EMPTY: Mapping[UUID, str] = {}


class ReadModelQueries(ChainCheckQueries, ResyncQueries):
    """Queries over the query tables, shared by both recorders.

    The recorders supply ``_fetch``/``_execute``/``_update`` (declared in
    ``ResyncQueries``) and the placeholder style; the sync-state store
    (``adapters.syncstate_sql``) uses them too.
    """

    def appointment_page(self, account_id: str, after_id: str, limit: int) -> list[dict[str, Any]]:
        """Return the states of an account's appointments with ids after ``after_id``, by id."""
        p = self.placeholder
        rows = self._fetch(
            f"SELECT doc FROM {self.qualify}{APPOINTMENTS} WHERE account_id = {p} "
            f"AND id > {p} ORDER BY id LIMIT {p}",
            [account_id, after_id, limit],
        )
        return docs(rows)

    def appointment_docs(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        """Return the states of the given appointments (one query per 500 ids)."""
        found: list[dict[str, Any]] = []
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            marks = ", ".join(self.placeholder for _ in chunk)
            rows = self._fetch(
                f"SELECT doc FROM {self.qualify}{APPOINTMENTS} WHERE id IN ({marks})", chunk
            )
            found.extend(docs(rows))
        return found

    def accounts_of(self, appointment_ids: Sequence[str]) -> dict[str, str]:
        """Return the account id of each given appointment id."""
        result: dict[str, str] = {}
        ids = list(appointment_ids)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ", ".join(self.placeholder for _ in chunk)
            rows = self._fetch(
                f"SELECT id, account_id FROM {self.qualify}{APPOINTMENTS} WHERE id IN ({marks})",
                chunk,
            )
            result.update({r["id"]: r["account_id"] for r in rows})
        return result

    def select_window(self, window: Window) -> list[dict[str, Any]]:
        """Return the (non-recurring) appointments of an account overlapping a window."""
        return docs(self._fetch(*window_query(window, self.qualify, self.placeholder)))

    def select_recurring(self, window: Window) -> list[dict[str, Any]]:
        """Return the recurring appointments of an account that start before the window ends."""
        return docs(self._fetch(*recurring_query(window, self.qualify, self.placeholder)))

    def select_token(self, token_hash: str) -> dict[str, Any] | None:
        """Return the token row with this hash, or None."""
        rows = self._fetch(
            f"SELECT * FROM {self.qualify}{TOKENS} WHERE token_hash = {self.placeholder}",
            [token_hash],
        )
        return dict(rows[0]) if rows else None

    def select_tokens(self, account_id: str | None) -> list[dict[str, Any]]:
        """Return an account's tokens (operator tokens when ``account_id`` is None)."""
        if account_id is None:
            sql = f"SELECT * FROM {self.qualify}{TOKENS} WHERE account_id IS NULL"
            params: list[Any] = []
        else:
            sql = f"SELECT * FROM {self.qualify}{TOKENS} WHERE account_id = {self.placeholder}"
            params = [account_id]
        return [dict(r) for r in self._fetch(sql + " ORDER BY created_us, id", params)]

    def select_accounts(self) -> list[dict[str, Any]]:
        """Return all accounts, by name."""
        sql = f"SELECT * FROM {self.qualify}{ACCOUNTS} ORDER BY name"
        return [dict(r) for r in self._fetch(sql, [])]

    def count_appointments(self, account_id: str) -> int:
        """Return how many appointments (of any status) an account has."""
        sql = (
            f"SELECT COUNT(*) AS n FROM {self.qualify}{APPOINTMENTS} "
            f"WHERE account_id = {self.placeholder}"
        )
        return int(self._fetch(sql, [account_id])[0]["n"])

    def select_links(self, status: str | None = None) -> list[dict[str, Any]]:
        """Return every calendar link (optionally only those with ``status``)."""
        sql = f"SELECT doc FROM {self.qualify}{LINKS}"
        params: list[Any] = []
        if status is not None:
            sql += f" WHERE status = {self.placeholder}"
            params.append(status)
        return docs(self._fetch(sql + " ORDER BY account_id", params))

    def select_secret(self, link_id: str) -> str | None:
        """Return a link's sealed credentials, or None ("" counts as none)."""
        rows = self._fetch(
            f"SELECT sealed FROM {self.qualify}{SECRETS} WHERE id = {self.placeholder}", [link_id]
        )
        return rows[0]["sealed"] or None if rows else None

    def select_secrets(self) -> list[dict[str, Any]]:
        """Return every sealed secret row (for key rotation)."""
        return [dict(r) for r in self._fetch(f"SELECT * FROM {self.qualify}{SECRETS}", [])]

    def reseal(self, link_id: str, old: str, new: str) -> bool:
        """Replace a sealed value if it is still ``old``; return whether it was."""
        p = self.placeholder
        sql = f"UPDATE {self.qualify}{SECRETS} SET sealed = {p} WHERE id = {p} AND sealed = {p}"
        return self._update(sql, [new, link_id, old]) == 1

    # Set by each recorder: the events table's position column and how a chain
    # row's originator id compares with the events table's.
    position_column: str
    chained_id: str

    @property
    def events_table(self) -> str:
        """Return the library's event table, qualified."""
        raise NotImplementedError

    def select_events_and_key(
        self,
        originator_id: UUID,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> tuple[list[StoredEvent], str | None]:
        """Return an aggregate's stored events and its stored personal-data key, in one query.

        The library's ``select_events`` plus the key row of
        ``adapters.personal_keys``: loading an appointment costs one round
        trip, not two. The key is None when the aggregate has none (erased,
        or not an appointment).
        """
        p = self.placeholder
        where = [f"e.originator_id = {p}"]
        originator_id = UUID(str(originator_id))
        params: list[Any] = [str(originator_id), self.stored_id(originator_id)]
        if gt is not None:
            where.append(f"e.originator_version > {p}")
            params.append(gt)
        if lte is not None:
            where.append(f"e.originator_version <= {p}")
            params.append(lte)
        sql = (
            "SELECT e.originator_version, e.topic, e.state, k.key AS personal_key "
            f"FROM {self.events_table} e LEFT JOIN {self.qualify}{PERSONAL_KEYS} k "
            f"ON k.appointment_id = {p} WHERE {' AND '.join(where)} "
            f"ORDER BY e.originator_version{' DESC' if desc else ''}"
        )
        if limit is not None:
            sql += f" LIMIT {p}"
            params.append(limit)
        rows = self._fetch(sql, params)
        events = [
            StoredEvent(
                originator_id=originator_id,
                originator_version=int(r["originator_version"]),
                topic=r["topic"],
                state=bytes(r["state"]),
            )
            for r in rows
        ]
        return events, (rows[0]["personal_key"] if rows else None)

    def stored_id(self, originator_id: UUID) -> Any:
        """Return an originator id as the events table stores it."""
        raise NotImplementedError

    def chain_head(self, account_id: str) -> ChainHead | None:
        """Return the last entry of an account's audit chain, or None when it has none."""
        rows = self._fetch(
            f"SELECT seq, position, entry_hash FROM {self.qualify}{CHAIN} "
            f"WHERE account_id = {self.placeholder} ORDER BY seq DESC LIMIT 1",
            [account_id],
        )
        if not rows:
            return None
        row = rows[0]
        return ChainHead(account_id, int(row["seq"]), int(row["position"]), row["entry_hash"])

    def chain_accounts(self) -> list[str]:
        """Return every chain's account id (OPERATORS included), sorted."""
        rows = self._fetch(f"SELECT DISTINCT account_id FROM {self.qualify}{CHAIN}", [])
        return sorted(r["account_id"] for r in rows)

    def audit_entries(
        self,
        account_id: str,
        *,
        after_seq: int = 0,
        after_position: int = 0,
        limit: int = 1000,
        topics: Sequence[str] = (),
        originator_id: UUID | None = None,
    ) -> list[ChainEntry]:
        """Return an account's chain entries in order, each with its stored event as it is now.

        Entries come after both ``after_seq`` and ``after_position``; at most
        ``limit``; only of ``topics`` and of ``originator_id`` when given.
        """
        p = self.placeholder
        if after_position > 0:
            # Positions grow with seq within a chain: turn the position cursor into
            # a seq one, so the page below is one range of the primary key (a
            # condition on both let PostgreSQL's planner pick the position index
            # and sort the account's whole chain for every page).
            floor = self._fetch(
                f"SELECT MAX(seq) AS seq FROM {self.qualify}{CHAIN} "
                f"WHERE account_id = {p} AND position <= {p}",
                [account_id, after_position],
            )[0]["seq"]
            after_seq = max(after_seq, int(floor or 0))
        only = ""
        params: list[Any] = [account_id, after_seq]
        if topics:
            only += f" AND c.topic IN ({', '.join([p] * len(topics))})"
            params.extend(topics)
        if originator_id is not None:
            only += f" AND c.originator_id = {p}"
            params.append(str(originator_id))
        # Joined by journal position (the events table's own order, so pages
        # read it sequentially); an event no longer at its chained position
        # is looked up by originator id and version below.
        rows = self._fetch(
            f"SELECT c.seq, c.position, c.originator_id, c.originator_version, c.topic, "
            f"c.entry_hash, e.originator_id AS stored_id, "
            f"e.originator_version AS stored_version, e.topic AS stored_topic, "
            f"e.state AS stored_state FROM {self.qualify}{CHAIN} c "
            f"LEFT JOIN {self.events_table} e ON e.{self.position_column} = c.position "
            f"WHERE c.account_id = {p} AND c.seq > {p}{only} "
            f"ORDER BY c.seq LIMIT {p}",
            [*params, limit],
        )
        entries = []
        for r in rows:
            chained = UUID(r["originator_id"])
            version = int(r["originator_version"])
            found: tuple[int, str, bytes] | None = None
            # Compared as hex digits: SQLite keeps ids without dashes, and
            # parsing a second UUID per row costs a third of this loop.
            if (
                r["stored_state"] is not None
                and int(r["stored_version"]) == version
                and str(r["stored_id"]).replace("-", "") == chained.hex
            ):
                found = (int(r["position"]), r["stored_topic"], bytes(r["stored_state"]))
            else:
                found = self._stored_event(chained, version)
            entries.append(
                ChainEntry(
                    account_id=account_id,
                    seq=int(r["seq"]),
                    position=int(r["position"]),
                    originator_id=chained,
                    originator_version=version,
                    topic=r["topic"],
                    entry_hash=r["entry_hash"],
                    stored=None
                    if found is None
                    else StoredEvent(
                        originator_id=chained,
                        originator_version=version,
                        topic=found[1],
                        state=found[2],
                    ),
                    stored_position=None if found is None else found[0],
                )
            )
        return entries

    def _stored_event(self, originator_id: UUID, version: int) -> tuple[int, str, bytes] | None:
        """Return (position, topic, state) of one stored event, or None when it is gone."""
        p = self.placeholder
        rows = self._fetch(
            f"SELECT e.{self.position_column} AS position, e.topic, e.state "
            f"FROM {self.events_table} e "
            f"WHERE e.originator_id = {self.chained_id.replace('c.originator_id', p)} "
            f"AND e.originator_version = {p}",
            [str(originator_id), version],
        )
        if not rows:
            return None
        return int(rows[0]["position"]), rows[0]["topic"], bytes(rows[0]["state"])

    def write_rows(self, rows: Iterable[Row]) -> None:
        """Write rows outside an event transaction, in one transaction, in their order.

        One ``executemany`` per run of rows that share a statement (see
        :func:`~caljournal.adapters.readmodel.upsert_batches`).
        """
        self._execute_many(upsert_batches(rows, self.qualify, self.placeholder))

    def _execute_many(self, statements: Iterable[tuple[str, Sequence[Sequence[Any]]]]) -> None:
        raise NotImplementedError

    def select_histories(
        self, after: tuple[Any, int] | None, limit: int
    ) -> list[tuple[Any, int, str, bytes, int]]:
        """Return up to ``limit`` stored events in aggregate order (originator id, then version).

        Each is (originator id as stored, version, topic, state, journal
        position); ``after`` is the (stored originator id, version) of the last
        event of the previous page. Each page is one range of the events
        table's primary key, so every aggregate's history comes whole and in order.
        """
        p = self.placeholder
        where = f" WHERE (originator_id, originator_version) > ({p}, {p})" if after else ""
        sql = (
            f"SELECT originator_id, originator_version, topic, state, {self.position_column} "
            f"FROM {self.events_table}{where} "
            f"ORDER BY originator_id, originator_version LIMIT {p}"
        )
        rows = self._fetch_tuples(sql, [*(after or ()), limit])
        return [(r[0], int(r[1]), r[2], bytes(r[3]), int(r[4])) for r in rows]

    def clear_read_model(self) -> None:
        """Delete every query-table row (before a rebuild)."""
        self._execute(
            (f"DELETE FROM {self.qualify}{t}", []) for t in (APPOINTMENTS, ACCOUNTS, TOKENS, LINKS)
        )


class SQLiteJournalRecorder(ReadModelQueries, SQLiteApplicationRecorder):
    """The library's SQLite recorder plus the query tables."""

    qualify = ""
    placeholder = "?"
    position_column = "rowid"
    # The library stores SQLite originator ids as hex without dashes.
    chained_id = "replace(c.originator_id, '-', '')"
    # And the other way round, so that a lookup from an event can use the
    # chain's index on (originator_id, originator_version).
    event_chain_id = (
        "substr(e.originator_id, 1, 8) || '-' || substr(e.originator_id, 9, 4) || '-' || "
        "substr(e.originator_id, 13, 4) || '-' || substr(e.originator_id, 17, 4) || '-' || "
        "substr(e.originator_id, 21)"
    )

    def stored_id(self, originator_id: UUID) -> Any:
        """Return an originator id as the events table stores it (hex)."""
        return originator_id.hex

    @property
    def events_table(self) -> str:
        """Return the library's event table, qualified."""
        return self.events_table_name

    def __init__(self, datastore: SQLiteDatastore, events_table_name: str = "stored_events"):
        super().__init__(datastore, events_table_name)

    def create_table(self) -> None:
        """Create the library's event table, then bring caljournal's tables up to date.

        Processes opening a fresh file together can meet SQLite's "database is
        locked" at once, without waiting out the lock timeout (a transaction
        that read and then wants to write while another writes is refused, to
        avoid a deadlock). Both steps are idempotent: they are tried again.
        """
        try:
            self._create_and_migrate()
            return
        except Exception as exc:
            if not _locked(exc):
                raise
        # Loaded only now: tenacity (and the asyncio it loads) costs a command
        # that merely reads about 10 ms of start-up.
        from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_random

        for attempt in Retrying(
            retry=retry_if_exception(_locked),
            wait=wait_random(0.05, 0.5),
            stop=stop_after_delay(120),
            reraise=True,
        ):
            with attempt:
                self._create_and_migrate()

    def _create_and_migrate(self) -> None:
        super().create_table()
        with self.datastore.get_connection(commit=True) as conn, conn.cursor() as curs:
            migrate(curs, self.schema_target)

    @property
    def schema_target(self) -> Target:
        """Return where ``adapters.schema`` migrations run for this recorder."""
        return Target("sqlite", "", self.events_table_name)

    def _insert_events(
        self,
        c: SQLiteCursor,
        stored_events: Sequence[StoredEvent],
        *,
        read_model: Sequence[Row] = (),
        chain: Mapping[UUID, str] = EMPTY,
        **kwargs: Any,
    ) -> Sequence[int] | None:
        ids = super()._insert_events(c, stored_events, **kwargs)
        originators = canonical_ids(stored_events)
        positioned = with_positions(read_model, positions_by_id(originators, ids))
        for sql, params in upsert_batches(positioned, "", "?"):
            c.executemany(sql, params)
        if stored_events and ids:
            heads = {}
            for key in dict.fromkeys(chain.get(u, OPERATORS) for u in originators):
                c.execute(head_query("", "?"), [key])
                found = c.fetchone()
                if found is not None:
                    heads[key] = (int(found[0]), str(found[1]))
            rows = new_entries(heads, stored_events, ids, chain, originators)
            c.executemany(insert_statement("", "?"), rows)
        return ids

    def select_positions(self, originator_id: UUID) -> dict[int, int]:
        """Return notification id by version for one aggregate's events."""
        sql = (
            f"SELECT originator_version AS v, rowid AS n FROM {self.events_table_name} "
            "WHERE originator_id = ?"
        )
        return {r["v"]: r["n"] for r in self._fetch(sql, [originator_id.hex])}

    def select_last_position(self, originator_id: UUID, topic: str) -> int | None:
        """Return the journal position of one aggregate's last event of ``topic``, or None."""
        sql = (
            f"SELECT MAX(rowid) AS n FROM {self.events_table_name} "
            "WHERE originator_id = ? AND topic = ?"
        )
        return self._fetch(sql, [originator_id.hex, topic])[0]["n"]

    def _fetch(self, sql: str, params: Sequence[Any]) -> list[Any]:
        # The library's connections are in autocommit mode: a lone SELECT is its
        # own snapshot, without the BEGIN … ROLLBACK of a library transaction.
        with self.datastore.get_connection(commit=False) as conn, conn.cursor() as curs:
            curs.execute(sql, list(params))
            return list(curs.fetchall())

    def _fetch_tuples(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self.datastore.get_connection(commit=False) as conn, conn.cursor() as curs:
            curs.row_factory = None
            curs.execute(sql, list(params))
            return list(curs.fetchall())

    def _execute(self, statements: Iterable[tuple[str, Sequence[Any]]]) -> None:
        with self.datastore.transaction(commit=True) as c:
            for sql, params in statements:
                c.execute(sql, list(params))

    def _update(self, sql: str, params: Sequence[Any]) -> int:
        with self.datastore.transaction(commit=True) as c:
            c.execute(sql, list(params))
            return int(c.sqlite_cursor.rowcount)

    def _execute_many(self, statements: Iterable[tuple[str, Sequence[Sequence[Any]]]]) -> None:
        with self.datastore.transaction(commit=True) as c:
            for sql, params in statements:
                c.executemany(sql, [list(p) for p in params])


def _locked(exc: BaseException) -> bool:
    """Tell whether SQLite refused a transaction because another one held the lock."""
    return "database is locked" in str(exc)


def contended(exc: BaseException) -> bool:
    """Tell whether opening an SQLite journal failed for another process creating it.

    Either SQLite refused at once ("database is locked"), or the library's pool
    timed out waiting for its writer connection: met while the library opened a
    connection, the lock leaves that connection taken for good.
    """
    return _locked(exc) or isinstance(exc, ConnectionUnavailableError)


def latest_positions(
    stored_events: Sequence[StoredEvent], ids: Sequence[int] | None
) -> dict[str, int]:
    """Return the journal position of each aggregate's last event among those just inserted."""
    return positions_by_id(canonical_ids(stored_events), ids)


def positions_by_id(originators: Sequence[UUID], ids: Sequence[int] | None) -> dict[str, int]:
    """Return :func:`latest_positions` of events given by their originator ids, in order.

    The result is keyed by the ids' ``str``, as the query-table rows name them.
    """
    latest: dict[UUID, int] = {}
    for key, position in zip(originators, ids or (), strict=False):
        latest[key] = max(latest.get(key, 0), position)
    return {str(key): position for key, position in latest.items()}


if TYPE_CHECKING:
    from caljournal.adapters.recorders_pg import PostgresJournalRecorder

    JournalRecorder: TypeAlias = SQLiteJournalRecorder | PostgresJournalRecorder
else:  # the PostgreSQL recorder (and psycopg) load only to reach PostgreSQL
    JournalRecorder = ReadModelQueries
