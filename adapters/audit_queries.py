"""Queries that check the audit chain against the journal (mixed into the journal recorders).

``adapters.audit_verify`` walks a chain through them. The recorders supply the
SQL dialect: placeholders, the events table and its position column, how a
chain row's originator id compares with the events table's and back, and
``_fetch`` / ``_fetch_tuples``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from caljournal.adapters.audit_chain import CHAIN


class ChainCheckQueries:
    """Reads of the chain table joined with the events table."""

    qualify: str
    placeholder: str
    position_column: str
    # A chain row's originator id as the events table stores it (``c.``), and
    # an event's as the chain stores it (``e.``), so either side can use an index.
    chained_id: str
    event_chain_id: str

    @property
    def events_table(self) -> str:
        """Return the library's event table, qualified."""
        raise NotImplementedError

    def _fetch(self, sql: str, params: Sequence[Any]) -> list[Any]:
        raise NotImplementedError

    def _fetch_tuples(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Return a query's rows as plain tuples (for long reads, without per-row mappings)."""
        raise NotImplementedError

    def unchained_events(
        self, account_id: str | None, *, after_position: int = 0, limit: int = 1000
    ) -> list[tuple[int, UUID, int]]:
        """Return journal events no chain entry names: (position, originator id, version).

        With an account, the events of the aggregates its chain names; without,
        the events of aggregates no chain names at all. In journal order, after
        ``after_position``, at most ``limit``.
        """
        p, e_id = self.placeholder, self.event_chain_id
        owned = (
            f"e.originator_id IN (SELECT {self.chained_id} FROM {self.qualify}{CHAIN} c "
            f"WHERE c.account_id = {p})"
            if account_id is not None
            else f"NOT EXISTS (SELECT 1 FROM {self.qualify}{CHAIN} c "
            f"WHERE c.originator_id = {e_id})"
        )
        rows = self._fetch(
            f"SELECT e.{self.position_column} AS position, e.originator_id, e.originator_version "
            f"FROM {self.events_table} e WHERE {owned} AND e.{self.position_column} > {p} "
            f"AND NOT EXISTS (SELECT 1 FROM {self.qualify}{CHAIN} c WHERE c.originator_id = {e_id} "
            f"AND c.originator_version = e.originator_version) "
            f"ORDER BY e.{self.position_column} LIMIT {p}",
            [*([account_id] if account_id is not None else []), after_position, limit],
        )
        return [
            (int(r["position"]), UUID(str(r["originator_id"])), int(r["originator_version"]))
            for r in rows
        ]

    def chain_window(
        self, account_id: str, after_seq: int, through_seq: int
    ) -> list[tuple[Any, ...]]:
        """Return an account's chain rows with ``after_seq < seq <= through_seq``, in seq order.

        Each is a tuple (seq, position, originator_id, originator_version, topic,
        entry_hash, stored_position, stored_topic, stored_state), the last three
        from the journal as it is now (None when it no longer holds the event).
        A seq range rather than LIMIT: the database walks the primary key
        whatever its statistics say about a table that grew since they were taken.
        """
        p = self.placeholder
        rows = self._fetch_tuples(
            f"SELECT c.seq, c.position, c.originator_id, c.originator_version, c.topic, "
            f"c.entry_hash, e.{self.position_column} AS stored_position, "
            f"e.topic AS stored_topic, e.state AS stored_state "
            f"FROM {self.qualify}{CHAIN} c LEFT JOIN {self.events_table} e "
            f"ON e.originator_id = {self.chained_id} "
            f"AND e.originator_version = c.originator_version "
            f"WHERE c.account_id = {p} AND c.seq > {p} AND c.seq <= {p} ORDER BY c.seq",
            [account_id, after_seq, through_seq],
        )
        return rows

    def chain_next_seq(self, account_id: str, after_seq: int) -> int | None:
        """Return the first seq of an account's chain after ``after_seq``, or None."""
        p = self.placeholder
        rows = self._fetch(
            f"SELECT MIN(seq) AS seq FROM {self.qualify}{CHAIN} "
            f"WHERE account_id = {p} AND seq > {p}",
            [account_id, after_seq],
        )
        found = rows[0]["seq"] if rows else None
        return None if found is None else int(found)

    def chain_count_before(self, account_id: str, position: int) -> int:
        """Return how many of an account's chain entries lie before a journal position."""
        p = self.placeholder
        rows = self._fetch(
            f"SELECT COUNT(*) AS n FROM {self.qualify}{CHAIN} "
            f"WHERE account_id = {p} AND position < {p}",
            [account_id, position],
        )
        return int(rows[0]["n"])

    def chain_entries_naming(self, originator_id: UUID, version: int) -> list[tuple[str, int]]:
        """Return (account id, seq) of every chain entry naming one stored event."""
        p = self.placeholder
        rows = self._fetch(
            f"SELECT account_id, seq FROM {self.qualify}{CHAIN} "
            f"WHERE originator_id = {p} AND originator_version = {p} ORDER BY account_id, seq",
            [str(originator_id), version],
        )
        return [(r["account_id"], int(r["seq"])) for r in rows]
