"""Queries that read the sync state of every account at once (for the operators' overview).

A handful of statements, each over one table, whatever the number of accounts;
only the pending pushes need the links' calendars and journal positions, and
are counted in one grouped statement per ``CHUNK`` of linked accounts. The
rules of what is pending are those of ``SQLSyncState.pending_pushes``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from caljournal.adapters.journal import CALENDAR_CHOSEN, Journal
from caljournal.adapters.readmodel import (
    ACCOUNTS,
    APPOINTMENTS,
    INBOUND,
    LEASES,
    LINKS,
    OUTBOUND,
    QUARANTINE,
    SYNC_STATUS,
    docs,
)
from caljournal.adapters.resync_store import RESYNCS, RUNNING
from caljournal.domain.ids import link_id

CHUNK = 200


@dataclass(frozen=True)
class Pending:
    """How many changes of one account wait for a push, and when the oldest was made."""

    count: int
    oldest_us: int | None


@dataclass(frozen=True)
class StateTables:
    """Every account's rows of the sync-state tables, by account id."""

    accounts: list[dict[str, Any]]
    links: dict[str, dict[str, Any]]
    sync: dict[str, dict[str, Any]]
    inbound: dict[str, dict[str, Any]]
    leases: dict[str, dict[str, Any]]
    failed: dict[str, int]
    quarantined: dict[str, int]
    running_resyncs: list[dict[str, Any]]
    position: int


class StatusQueries:
    """Read the state of all accounts from the journal's database."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.db = journal.journal_recorder
        self.q = self.db.qualify
        self.p = self.db.placeholder

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db._fetch(sql, params)]  # noqa: SLF001 - its connection

    def account_name(self, account_id: str) -> str | None:
        """Return the name of the account with ``account_id``, or None when there is none."""
        rows = self._all(f"SELECT name FROM {self.q}{ACCOUNTS} WHERE id = {self.p}", [account_id])
        return str(rows[0]["name"]) if rows else None

    def link(self, account_id: str) -> dict[str, Any] | None:
        """Return the state of an account's calendar link as its query table holds it, or None.

        The row is written in the transaction of the link's every event, so it is
        the aggregate's state without loading (or even importing) the aggregate.
        """
        found = docs(
            self.db._fetch(  # noqa: SLF001 - its connection
                f"SELECT doc FROM {self.q}{LINKS} WHERE account_id = {self.p}", [account_id]
            )
        )
        return found[0] if found else None

    def tables(self) -> StateTables:
        """Return the rows of every account (one statement per table)."""
        q = self.q
        counts = "SELECT account_id, COUNT(*) AS n FROM {} WHERE {} GROUP BY account_id"
        return StateTables(
            accounts=self._all(f"SELECT id, name FROM {q}{ACCOUNTS} ORDER BY name"),
            links={
                d["account_id"]: d for d in docs(self.db._fetch(f"SELECT doc FROM {q}{LINKS}", []))
            },  # noqa: SLF001
            sync={r["account_id"]: r for r in self._all(f"SELECT * FROM {q}{SYNC_STATUS}")},
            inbound={
                r["account_id"]: r
                for r in self._all(f"SELECT account_id, last_poll_us, last_error FROM {q}{INBOUND}")
            },
            leases={r["account_id"]: r for r in self._all(f"SELECT * FROM {q}{LEASES}")},
            failed={
                r["account_id"]: int(r["n"])
                for r in self._all(counts.format(q + OUTBOUND, "failed_sequence IS NOT NULL"))
            },
            quarantined={
                r["account_id"]: int(r["n"])
                for r in self._all(counts.format(q + QUARANTINE, "1 = 1"))
            },
            running_resyncs=self._all(
                f"SELECT account_id, done, total FROM {q}{RESYNCS} WHERE state = {self.p}",
                [RUNNING],
            ),
            position=int(self.db.max_notification_id() or 0),
        )

    def pending(self, calendars: dict[str, str]) -> dict[str, Pending]:
        """Return the pending pushes of accounts by id, given their chosen calendar URLs.

        Only changes after the event that chose the calendar count (older ones
        are the backfill's), as for the worker.
        """
        found: dict[str, Pending] = {}
        items = sorted(calendars.items())
        for start in range(0, len(items), CHUNK):
            found.update(self._pending_chunk(items[start : start + CHUNK]))
        return found

    def _pending_chunk(self, items: Sequence[tuple[str, str]]) -> dict[str, Pending]:
        p, q = self.p, self.q
        target = self.db.schema_target
        position = "rowid" if target.dialect == "sqlite" else "notification_id"
        values = ", ".join(f"({p}, {p}, {p})" for _ in items)
        params: list[Any] = []
        for account_id, calendar_url in items:
            link = link_id(account_id)
            params += [account_id, link.hex if target.dialect == "sqlite" else link]
            params.append(calendar_url)
        params.append(CALENDAR_CHOSEN)
        sql = (
            f"WITH chosen (account_id, link_id, calendar_url) AS (VALUES {values}), "
            f"base AS (SELECT c.account_id AS account_id, c.calendar_url AS calendar_url, "
            f"COALESCE((SELECT MAX(e.{position}) FROM {target.events_table} e "
            f"WHERE e.originator_id = c.link_id AND e.topic = {p}), 0) AS baseline FROM chosen c) "
            f"SELECT a.account_id AS account_id, COUNT(*) AS n, MIN(a.modified_us) AS oldest "
            f"FROM base b JOIN {q}{APPOINTMENTS} a "
            f"ON a.account_id = b.account_id AND a.position > b.baseline "
            f"LEFT JOIN {q}{OUTBOUND} o ON o.appointment_id = a.id "
            f"WHERE (o.appointment_id IS NULL AND a.status = 'booked') "
            f"OR (o.calendar_url <> b.calendar_url AND a.status = 'booked') "
            f"OR (o.calendar_url = b.calendar_url AND a.sequence > o.pushed_sequence "
            f"AND (o.failed_sequence IS NULL OR o.failed_sequence < a.sequence)) "
            f"GROUP BY a.account_id"
        )
        return {r["account_id"]: Pending(int(r["n"]), r["oldest"]) for r in self._all(sql, params)}


__all__ = ["CHUNK", "Pending", "StateTables", "StatusQueries"]
