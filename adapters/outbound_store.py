"""SQL for the outbound projection: calendar copies, leases, per-account sync status.

Shared by the SQLite and PostgreSQL recorders (``adapters.journal``), which
supply ``_fetch``/``_execute``/``_update`` and the placeholder style.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from caljournal.adapters.readmodel import (
    APPOINTMENTS,
    CHECKS,
    INBOUND,
    LEASES,
    LINKS,
    OUTBOUND,
    QUARANTINE,
    SYNC_STATUS,
    WORKERS,
)

OUTBOUND_COLUMNS = (
    "appointment_id",
    "account_id",
    "calendar_url",
    "href",
    "etag",
    "pushed_sequence",
    "content_hash",
    "present",
    "failed_sequence",
    "failure",
    "updated_us",
)


class OutboundQueries:
    """Queries of the outbound projection's own tables."""

    qualify: str
    placeholder: str

    def _fetch(self, sql: str, params: Sequence[Any]) -> list[Any]:
        raise NotImplementedError

    def _execute(self, statements: Iterable[tuple[str, Sequence[Any]]]) -> None:
        raise NotImplementedError

    def _update(self, sql: str, params: Sequence[Any]) -> int:
        raise NotImplementedError

    def _upsert_sql(self, table: str, key: str, names: Sequence[str]) -> str:
        p = self.placeholder
        updates = ", ".join(f"{n} = excluded.{n}" for n in names if n != key)
        return (
            f"INSERT INTO {self.qualify}{table} ({', '.join(names)}) "
            f"VALUES ({', '.join(p for _ in names)}) ON CONFLICT ({key}) DO UPDATE SET {updates}"
        )

    # -- calendar copies --------------------------------------------------------

    def pending_pushes(
        self, account_id: str, calendar_url: str, after_position: int, limit: int
    ) -> list[dict[str, Any]]:
        """Return appointments whose calendar copy is missing or older than the journal.

        Only appointments whose latest event is past the journal position
        ``after_position`` count (older ones are the backfill's job, or were
        pushed by an earlier pass), in journal order; a copy on another calendar
        counts like no copy. A change whose push failed for good waits
        for the next change or an operator's retry.
        """
        p = self.placeholder
        a, o = self.qualify + APPOINTMENTS, self.qualify + OUTBOUND
        sql = (
            f"SELECT a.doc AS doc, a.sequence AS sequence, o.href AS href, o.etag AS etag, "
            f"o.pushed_sequence AS pushed_sequence, o.content_hash AS content_hash, "
            f"o.present AS present, o.calendar_url AS copy_calendar "
            f"FROM {a} a LEFT JOIN {o} o ON o.appointment_id = a.id "
            f"WHERE a.account_id = {p} AND a.position > {p} AND ("
            f"(o.appointment_id IS NULL AND a.status = 'booked') "
            f"OR (o.calendar_url <> {p} AND a.status = 'booked') "
            f"OR (o.calendar_url = {p} AND a.sequence > o.pushed_sequence "
            f"AND (o.failed_sequence IS NULL OR o.failed_sequence < a.sequence))"
            f") ORDER BY a.position, a.id LIMIT {p}"
        )
        rows = self._fetch(sql, [account_id, after_position, calendar_url, calendar_url, limit])
        result = []
        for row in rows:
            item = dict(row)
            item["appointment"] = json.loads(item.pop("doc"))
            if item["copy_calendar"] is not None and item["copy_calendar"] != calendar_url:
                for key in ("href", "etag", "pushed_sequence", "content_hash", "present"):
                    item[key] = None
            result.append(item)
        return result

    def count_pending(self, account_id: str, calendar_url: str, after_position: int) -> int:
        """Return how many appointments wait for a push (see :meth:`pending_pushes`)."""
        return len(self.pending_pushes(account_id, calendar_url, after_position, 1_000_000))

    def record_copy(self, values: dict[str, Any]) -> None:
        """Write what the calendar now holds for one appointment."""
        self.record_copies([values])

    def record_copies(self, records: Sequence[dict[str, Any]]) -> None:
        """Write several calendar-copy records in one transaction."""
        names = list(OUTBOUND_COLUMNS)
        sql = self._upsert_sql(OUTBOUND, "appointment_id", names)
        statements = [(sql, [values.get(n) for n in names]) for values in records]
        # Our own writes make the next poll compare the whole calendar (see
        # projections.inbound.CheckPolicy); the poller's records do not count.
        written = self._upsert_sql(CHECKS, "account_id", ["account_id", "written_us"])
        accounts = {str(values["account_id"]) for values in records}
        now_us = max((int(values["updated_us"]) for values in records), default=0)
        statements += [(written, [account, now_us]) for account in sorted(accounts)]
        self._execute(statements)

    def copy_of(self, appointment_id: str) -> dict[str, Any] | None:
        """Return the calendar copy record of an appointment."""
        rows = self._fetch(
            f"SELECT * FROM {self.qualify}{OUTBOUND} WHERE appointment_id = {self.placeholder}",
            [appointment_id],
        )
        return dict(rows[0]) if rows else None

    def copies(self, account_id: str) -> list[dict[str, Any]]:
        """Return every calendar copy record of an account."""
        rows = self._fetch(
            f"SELECT * FROM {self.qualify}{OUTBOUND} WHERE account_id = {self.placeholder} "
            "ORDER BY appointment_id",
            [account_id],
        )
        return [dict(r) for r in rows]

    def count_copies(self, account_id: str) -> int:
        """Return how many of an account's appointments are on its calendar now."""
        rows = self._fetch(
            f"SELECT COUNT(*) AS n FROM {self.qualify}{OUTBOUND} "
            f"WHERE account_id = {self.placeholder} AND present = 1",
            [account_id],
        )
        return int(rows[0]["n"])

    def failed_copies(self, account_id: str) -> list[dict[str, Any]]:
        """Return the copies whose last push failed for good."""
        rows = self._fetch(
            f"SELECT * FROM {self.qualify}{OUTBOUND} WHERE account_id = {self.placeholder} "
            "AND failed_sequence IS NOT NULL ORDER BY updated_us",
            [account_id],
        )
        return [dict(r) for r in rows]

    def clear_failure(self, appointment_id: str) -> None:
        """Forget a failure so the next pass pushes the appointment again."""
        self._update(
            f"UPDATE {self.qualify}{OUTBOUND} SET failed_sequence = NULL, failure = NULL "
            f"WHERE appointment_id = {self.placeholder}",
            [appointment_id],
        )

    def appointment_docs(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        """Return the states of the given appointments (one query per 500 ids)."""
        found: list[dict[str, Any]] = []
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            marks = ", ".join(self.placeholder for _ in chunk)
            rows = self._fetch(
                f"SELECT doc FROM {self.qualify}{APPOINTMENTS} WHERE id IN ({marks})", chunk
            )
            found.extend(json.loads(r["doc"]) for r in rows)
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

    def account_of_link(self, link_id: str) -> str | None:
        """Return the account id of a calendar link."""
        rows = self._fetch(
            f"SELECT account_id FROM {self.qualify}{LINKS} WHERE id = {self.placeholder}",
            [link_id],
        )
        return rows[0]["account_id"] if rows else None

    # -- leases -----------------------------------------------------------------

    def claim_lease(self, account_id: str, owner: str, now_us: int, ttl_us: int) -> bool:
        """Take or renew the lease on an account; return whether ``owner`` holds it."""
        p = self.placeholder
        table = self.qualify + LEASES
        sql = (
            f"INSERT INTO {table} (account_id, owner, expires_us) VALUES ({p}, {p}, {p}) "
            f"ON CONFLICT (account_id) DO UPDATE SET owner = excluded.owner, "
            f"expires_us = excluded.expires_us "
            f"WHERE {table}.owner = excluded.owner OR {table}.expires_us < {p}"
        )
        return self._update(sql, [account_id, owner, now_us + ttl_us, now_us]) == 1

    def release_lease(self, account_id: str, owner: str) -> None:
        """Give up the lease on an account (if ``owner`` holds it)."""
        p = self.placeholder
        self._update(
            f"DELETE FROM {self.qualify}{LEASES} WHERE account_id = {p} AND owner = {p}",
            [account_id, owner],
        )

    def heartbeat(self, owner: str, now_us: int, ttl_us: int) -> int:
        """Record that ``owner`` is alive; return how many workers are alive now."""
        p = self.placeholder
        self._execute(
            [
                (
                    self._upsert_sql(WORKERS, "owner", ["owner", "expires_us"]),
                    [owner, now_us + ttl_us],
                ),
                (f"DELETE FROM {self.qualify}{WORKERS} WHERE expires_us < {p}", [now_us]),
            ]
        )
        rows = self._fetch(f"SELECT COUNT(*) AS n FROM {self.qualify}{WORKERS}", [])
        return max(int(rows[0]["n"]), 1)

    def retire(self, owner: str) -> None:
        """Remove a stopping worker from the list of live workers."""
        self._update(
            f"DELETE FROM {self.qualify}{WORKERS} WHERE owner = {self.placeholder}", [owner]
        )

    def leases(self) -> dict[str, dict[str, Any]]:
        """Return every lease by account id."""
        rows = self._fetch(f"SELECT * FROM {self.qualify}{LEASES}", [])
        return {r["account_id"]: dict(r) for r in rows}

    # -- per-account sync status ------------------------------------------------

    def update_sync_status(self, account_id: str, **values: Any) -> None:
        """Set some of: pushed_position, last_success_us, last_error, last_error_us, worker."""
        names = ["account_id", *values]
        params = [account_id, *values.values()]
        self._execute([(self._upsert_sql(SYNC_STATUS, "account_id", names), params)])

    def sync_status(self, account_id: str) -> dict[str, Any]:
        """Return an account's sync status row (empty when never synced)."""
        rows = self._fetch(
            f"SELECT * FROM {self.qualify}{SYNC_STATUS} WHERE account_id = {self.placeholder}",
            [account_id],
        )
        return dict(rows[0]) if rows else {}

    # -- inbound ----------------------------------------------------------------

    def inbound_state(self, account_id: str) -> dict[str, Any]:
        """Return where the account's inbound poll stands (empty before the first poll)."""
        rows = self._fetch(
            f"SELECT * FROM {self.qualify}{INBOUND} WHERE account_id = {self.placeholder}",
            [account_id],
        )
        return dict(rows[0]) if rows else {}

    def update_inbound(self, account_id: str, **values: Any) -> None:
        """Set some inbound fields outside a poll's own transaction (errors, progress)."""
        names = ["account_id", *values]
        self._execute(
            [(self._upsert_sql(INBOUND, "account_id", names), [account_id, *values.values()])]
        )

    def absent_live_copies(self, account_id: str, calendar_url: str) -> list[dict[str, Any]]:
        """Return records of booked appointments absent from the calendar, no push pending.

        Nothing pending or failed would put these copies there by itself.
        """
        p = self.placeholder
        a, o = self.qualify + APPOINTMENTS, self.qualify + OUTBOUND
        rows = self._fetch(
            f"SELECT o.appointment_id AS appointment_id, o.href AS href FROM {o} o "
            f"JOIN {a} a ON a.id = o.appointment_id WHERE o.account_id = {p} "
            f"AND o.calendar_url = {p} AND o.present = 0 AND o.failed_sequence IS NULL "
            "AND a.status = 'booked' AND a.sequence <= o.pushed_sequence",
            [account_id, calendar_url],
        )
        return [dict(r) for r in rows]

    def calendar_check(self, account_id: str) -> dict[str, Any]:
        """Return when the account's calendar was last compared in full, and what was found."""
        rows = self._fetch(
            f"SELECT * FROM {self.qualify}{CHECKS} WHERE account_id = {self.placeholder}",
            [account_id],
        )
        return dict(rows[0]) if rows else {}

    def quarantined(self, account_id: str) -> dict[str, dict[str, Any]]:
        """Return the account's quarantined remote objects by href."""
        rows = self._fetch(
            f"SELECT * FROM {self.qualify}{QUARANTINE} WHERE account_id = {self.placeholder} "
            "ORDER BY at_us",
            [account_id],
        )
        return {r["href"]: dict(r) for r in rows}

    def copies_by_href(
        self, account_id: str, calendar_url: str, hrefs: set[str] | None = None
    ) -> dict[str, dict[str, Any]]:
        """Return the account's present calendar copies on ``calendar_url`` by href.

        With ``hrefs``, only those (one indexed query per 500 hrefs).
        """
        p = self.placeholder
        sql = (
            f"SELECT * FROM {self.qualify}{OUTBOUND} WHERE account_id = {p} "
            f"AND calendar_url = {p} AND present = 1"
        )
        if hrefs is None:
            rows = self._fetch(sql, [account_id, calendar_url])
            return {r["href"]: dict(r) for r in rows}
        found: dict[str, dict[str, Any]] = {}
        wanted = sorted(hrefs)
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ", ".join(p for _ in chunk)
            rows = self._fetch(sql + f" AND href IN ({marks})", [account_id, calendar_url, *chunk])
            found.update({r["href"]: dict(r) for r in rows})
        return found
