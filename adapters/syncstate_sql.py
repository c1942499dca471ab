"""The sync-state store over the journal's own database (SQLite or PostgreSQL).

Tables of ``adapters.readmodel``; statements go through the journal recorder's
``_fetch``/``_execute``/``_update`` (its connections, placeholder style and
schema). ``commit`` hands its rows to ``Journal.save``, which writes them in
the library's insert transaction: a poll's events and its state rows commit
together or not at all.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from caljournal.adapters.journal import Journal, JournalRecorder
from caljournal.adapters.readmodel import (
    APPOINTMENTS,
    CHECKS,
    INBOUND,
    LEASES,
    OUTBOUND,
    QUARANTINE,
    SYNC_STATUS,
    WORKERS,
    Row,
)
from caljournal.adapters.syncstate import (
    INBOUND_FIELDS,
    STATUS_FIELDS,
    CalendarCheck,
    CopyRecord,
    InboundState,
    Lease,
    PendingPush,
    Quarantined,
    StateWrites,
    SyncStatus,
    check_fields,
)

COPY_COLUMNS = (
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
CHUNK = 500


def copy_values(record: CopyRecord) -> dict[str, Any]:
    """Return a copy record as the values of its table row."""
    values = {name: getattr(record, name) for name in COPY_COLUMNS}
    values["present"] = 1 if record.present else 0
    return values


def copy_record(row: Mapping[str, Any]) -> CopyRecord:
    """Return the copy record of a table row."""
    return CopyRecord(
        appointment_id=row["appointment_id"],
        account_id=row["account_id"],
        calendar_url=row["calendar_url"],
        href=row["href"],
        etag=row["etag"],
        pushed_sequence=int(row["pushed_sequence"]),
        content_hash=row["content_hash"],
        present=bool(row["present"]),
        failed_sequence=row["failed_sequence"],
        failure=row["failure"],
        updated_us=int(row["updated_us"]),
    )


def quarantine_id(account_id: str, href: str) -> str:
    """Return the key of a quarantined object's row."""
    return f"{account_id}|{href}"


def state_rows(writes: StateWrites) -> list[Row]:
    """Return the table rows of a poll's writes (deletions from the quarantine first)."""
    account = writes.account_id
    rows = [
        Row(QUARANTINE, {"id": quarantine_id(account, href)}, versioned=False, delete=True)
        for href in writes.released
    ]
    rows += [
        Row(
            QUARANTINE,
            {
                "id": quarantine_id(q.account_id, q.href),
                "account_id": q.account_id,
                "href": q.href,
                "etag": q.etag,
                "reason": q.reason,
                "at_us": q.at_us,
            },
            versioned=False,
        )
        for q in writes.quarantine
    ]
    rows += [
        Row(OUTBOUND, copy_values(c), key="appointment_id", versioned=False) for c in writes.copies
    ]
    if writes.inbound is not None:
        check_fields(writes.inbound, INBOUND_FIELDS, "the inbound state")
        values = {"account_id": account, **writes.inbound}
        if "confirm_deletes" in values:
            values["confirm_deletes"] = 1 if values["confirm_deletes"] else 0
        rows.append(Row(INBOUND, values, key="account_id", versioned=False))
    if writes.check is not None:
        c = writes.check
        rows.append(
            Row(
                CHECKS,
                {
                    "account_id": c.account_id,
                    "last_us": c.last_us,
                    "checks": c.checks,
                    "differences": c.differences,
                    "last_found": c.last_found,
                    "last_found_us": c.last_found_us,
                },
                key="account_id",
                versioned=False,
            )
        )
    return rows


class SQLSyncState:
    """The sync state of every account, in the journal's database."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.db: JournalRecorder = journal.journal_recorder
        self.q = self.db.qualify
        self.p = self.db.placeholder

    def _one(self, sql: str, params: Sequence[Any]) -> dict[str, Any] | None:
        rows = self.db._fetch(sql, params)  # noqa: SLF001 - the recorder's own connection
        return dict(rows[0]) if rows else None

    def _all(self, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db._fetch(sql, params)]  # noqa: SLF001

    def _execute(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        self.db._execute(statements)  # noqa: SLF001

    def _update(self, sql: str, params: Sequence[Any]) -> int:
        return self.db._update(sql, params)  # noqa: SLF001

    def _upsert_sql(self, table: str, key: str, names: Sequence[str]) -> str:
        p = self.p
        updates = ", ".join(f"{n} = excluded.{n}" for n in names if n != key)
        return (
            f"INSERT INTO {self.q}{table} ({', '.join(names)}) "
            f"VALUES ({', '.join(p for _ in names)}) ON CONFLICT ({key}) DO UPDATE SET {updates}"
        )

    # -- copies -----------------------------------------------------------------

    def pending_pushes(
        self, account_id: str, calendar_url: str, after_position: int, limit: int
    ) -> list[PendingPush]:
        """Return appointments whose calendar copy is missing or behind (see the port)."""
        p = self.p
        a, o = self.q + APPOINTMENTS, self.q + OUTBOUND
        sql = (
            f"SELECT a.doc AS doc, a.position AS position, o.* "
            f"FROM {a} a LEFT JOIN {o} o ON o.appointment_id = a.id "
            f"WHERE a.account_id = {p} AND a.position > {p} AND ("
            f"(o.appointment_id IS NULL AND a.status = 'booked') "
            f"OR (o.calendar_url <> {p} AND a.status = 'booked') "
            f"OR (o.calendar_url = {p} AND a.sequence > o.pushed_sequence "
            f"AND (o.failed_sequence IS NULL OR o.failed_sequence < a.sequence))"
            f") ORDER BY a.position, a.id LIMIT {p}"
        )
        rows = self._all(sql, [account_id, after_position, calendar_url, calendar_url, limit])
        return [
            PendingPush(
                appointment=json.loads(row["doc"]),
                copy=(
                    copy_record(row)
                    if row["appointment_id"] is not None and row["calendar_url"] == calendar_url
                    else None
                ),
                position=int(row["position"]),
            )
            for row in rows
        ]

    def count_pending(self, account_id: str, calendar_url: str, after_position: int) -> int:
        """Return how many appointments wait for a push (see :meth:`pending_pushes`)."""
        return len(self.pending_pushes(account_id, calendar_url, after_position, 1_000_000))

    def record_copies(self, records: Sequence[CopyRecord]) -> None:
        """Write calendar-copy records in one transaction; note the write per account."""
        if not records:
            return
        sql = self._upsert_sql(OUTBOUND, "appointment_id", COPY_COLUMNS)
        statements: list[tuple[str, Sequence[Any]]] = [
            (sql, list(copy_values(r).values())) for r in records
        ]
        written = self._upsert_sql(CHECKS, "account_id", ["account_id", "written_us"])
        newest: dict[str, int] = {}
        for r in records:
            newest[r.account_id] = max(newest.get(r.account_id, 0), r.updated_us)
        statements += [(written, [account, at]) for account, at in sorted(newest.items())]
        self._execute(statements)

    def doubt_copies(self, appointment_ids: Sequence[str]) -> None:
        """Mark the present copies of these appointments in doubt (see the port)."""
        if not appointment_ids:
            return
        marks = ", ".join(self.p for _ in appointment_ids)
        self._update(
            f"UPDATE {self.q}{OUTBOUND} SET content_hash = NULL "
            f"WHERE present = 1 AND appointment_id IN ({marks})",
            list(appointment_ids),
        )

    def copy_of(self, appointment_id: str) -> CopyRecord | None:
        """Return the calendar-copy record of an appointment."""
        row = self._one(
            f"SELECT * FROM {self.q}{OUTBOUND} WHERE appointment_id = {self.p}", [appointment_id]
        )
        return copy_record(row) if row else None

    def copies(self, account_id: str) -> list[CopyRecord]:
        """Return every calendar-copy record of an account, by appointment id."""
        rows = self._all(
            f"SELECT * FROM {self.q}{OUTBOUND} WHERE account_id = {self.p} ORDER BY appointment_id",
            [account_id],
        )
        return [copy_record(r) for r in rows]

    def copies_by_href(
        self, account_id: str, calendar_url: str, hrefs: set[str] | None = None
    ) -> dict[str, CopyRecord]:
        """Return the account's present copies on ``calendar_url`` by href (only ``hrefs``)."""
        p = self.p
        sql = (
            f"SELECT * FROM {self.q}{OUTBOUND} WHERE account_id = {p} "
            f"AND calendar_url = {p} AND present = 1"
        )
        if hrefs is None:
            return {r["href"]: copy_record(r) for r in self._all(sql, [account_id, calendar_url])}
        found: dict[str, CopyRecord] = {}
        wanted = sorted(hrefs)
        for start in range(0, len(wanted), CHUNK):
            chunk = wanted[start : start + CHUNK]
            marks = ", ".join(p for _ in chunk)
            rows = self._all(sql + f" AND href IN ({marks})", [account_id, calendar_url, *chunk])
            found.update({r["href"]: copy_record(r) for r in rows})
        return found

    def count_copies(self, account_id: str) -> int:
        """Return how many of an account's appointments are on its calendar now."""
        row = self._one(
            f"SELECT COUNT(*) AS n FROM {self.q}{OUTBOUND} WHERE account_id = {self.p} "
            "AND present = 1",
            [account_id],
        )
        return int(row["n"]) if row else 0

    def failed_copies(self, account_id: str) -> list[CopyRecord]:
        """Return the copies whose last push failed for good, oldest first."""
        rows = self._all(
            f"SELECT * FROM {self.q}{OUTBOUND} WHERE account_id = {self.p} "
            "AND failed_sequence IS NOT NULL ORDER BY updated_us, appointment_id",
            [account_id],
        )
        return [copy_record(r) for r in rows]

    def clear_failure(self, appointment_id: str) -> None:
        """Forget a failure so the next pass pushes the appointment again."""
        self._update(
            f"UPDATE {self.q}{OUTBOUND} SET failed_sequence = NULL, failure = NULL "
            f"WHERE appointment_id = {self.p}",
            [appointment_id],
        )

    def absent_live_copies(self, account_id: str, calendar_url: str) -> list[CopyRecord]:
        """Return records of booked appointments absent from the calendar, no push pending."""
        p = self.p
        a, o = self.q + APPOINTMENTS, self.q + OUTBOUND
        rows = self._all(
            f"SELECT o.* FROM {o} o JOIN {a} a ON a.id = o.appointment_id "
            f"WHERE o.account_id = {p} AND o.calendar_url = {p} AND o.present = 0 "
            "AND o.failed_sequence IS NULL AND a.status = 'booked' "
            "AND a.sequence <= o.pushed_sequence ORDER BY o.appointment_id",
            [account_id, calendar_url],
        )
        return [copy_record(r) for r in rows]

    # -- inbound ----------------------------------------------------------------

    def inbound_state(self, account_id: str) -> InboundState:
        """Return where the account's inbound poll stands."""
        row = self._one(
            f"SELECT * FROM {self.q}{INBOUND} WHERE account_id = {self.p}", [account_id]
        )
        if row is None:
            return InboundState(account_id)
        row["confirm_deletes"] = bool(row.get("confirm_deletes"))
        return InboundState(**{k: v for k, v in row.items() if k in InboundState.__annotations__})

    def update_inbound(self, account_id: str, **values: Any) -> None:
        """Set some inbound fields outside a poll's commit (errors, progress, confirmations).

        :raises ValueError: for a name :class:`InboundState` does not have.
        """
        check_fields(values, INBOUND_FIELDS, "the inbound state")
        if "confirm_deletes" in values:
            values["confirm_deletes"] = 1 if values["confirm_deletes"] else 0
        names = ["account_id", *values]
        sql = self._upsert_sql(INBOUND, "account_id", names)
        self._execute([(sql, [account_id, *values.values()])])

    def calendar_check(self, account_id: str) -> CalendarCheck:
        """Return the full comparisons of the account's calendar and what they found."""
        row = self._one(f"SELECT * FROM {self.q}{CHECKS} WHERE account_id = {self.p}", [account_id])
        if row is None:
            return CalendarCheck(account_id)
        return CalendarCheck(
            account_id=account_id,
            last_us=row["last_us"],
            checks=int(row["checks"] or 0),
            differences=int(row["differences"] or 0),
            last_found=row["last_found"],
            last_found_us=row["last_found_us"],
            written_us=row["written_us"],
        )

    def quarantined(self, account_id: str) -> dict[str, Quarantined]:
        """Return the account's quarantined remote objects by href, oldest first."""
        rows = self._all(
            f"SELECT * FROM {self.q}{QUARANTINE} WHERE account_id = {self.p} ORDER BY at_us, href",
            [account_id],
        )
        return {
            r["href"]: Quarantined(r["account_id"], r["href"], r["etag"], r["reason"], r["at_us"])
            for r in rows
        }

    def commit(self, aggregates: Sequence[Any], writes: StateWrites) -> None:
        """Save the aggregates and the poll's writes in one transaction."""
        rows = state_rows(writes)
        if not aggregates:
            # Without events the library's insert path (PostgreSQL) never reaches
            # the hook that writes extra rows: write them in a transaction of their own.
            self.db.write_rows(rows)
            return
        self.journal.save(*aggregates, extra_rows=rows)

    # -- leases and workers -----------------------------------------------------

    def claim_lease(self, account_id: str, owner: str, now_us: int, ttl_us: int) -> bool:
        """Take or renew the lease on an account; return whether ``owner`` holds it."""
        p = self.p
        table = self.q + LEASES
        sql = (
            f"INSERT INTO {table} (account_id, owner, expires_us) VALUES ({p}, {p}, {p}) "
            f"ON CONFLICT (account_id) DO UPDATE SET owner = excluded.owner, "
            f"expires_us = excluded.expires_us "
            f"WHERE {table}.owner = excluded.owner OR {table}.expires_us < {p}"
        )
        return self._update(sql, [account_id, owner, now_us + ttl_us, now_us]) == 1

    def claim_leases(
        self, account_ids: Sequence[str], owner: str, now_us: int, ttl_us: int
    ) -> set[str]:
        """Take or renew the leases on many accounts at once; return those ``owner`` holds now.

        One upsert per 500 accounts, whose condition is ``claim_lease``'s: the
        database checks and writes each lease atomically (PostgreSQL locks the
        row it updates on conflict; SQLite has one writer), so a lease another
        owner took meanwhile stays theirs. The rows are written in account order,
        so two owners claiming the same leases wait for each other instead of
        deadlocking. Which leases are ours is read after
        the upsert: a lease ``owner`` holds cannot pass to another before it
        expires, ``ttl_us`` from now.
        """
        p = self.p
        table = self.q + LEASES
        held: set[str] = set()
        unique = sorted(set(account_ids))
        for start in range(0, len(unique), CHUNK):
            chunk = unique[start : start + CHUNK]
            values = ", ".join(f"({p}, {p}, {p})" for _ in chunk)
            params: list[Any] = []
            for account_id in chunk:
                params += [account_id, owner, now_us + ttl_us]
            self._update(
                f"INSERT INTO {table} (account_id, owner, expires_us) VALUES {values} "
                f"ON CONFLICT (account_id) DO UPDATE SET owner = excluded.owner, "
                f"expires_us = excluded.expires_us "
                f"WHERE {table}.owner = excluded.owner OR {table}.expires_us < {p}",
                [*params, now_us],
            )
            marks = ", ".join(p for _ in chunk)
            rows = self._all(
                f"SELECT account_id FROM {table} WHERE owner = {p} AND account_id IN ({marks})",
                [owner, *chunk],
            )
            held.update(str(r["account_id"]) for r in rows)
        return held

    def renew_leases(self, owner: str, now_us: int, ttl_us: int) -> None:
        """Extend every lease ``owner`` holds to ``now_us + ttl_us`` (one statement)."""
        self._update(
            f"UPDATE {self.q}{LEASES} SET expires_us = {self.p} WHERE owner = {self.p}",
            [now_us + ttl_us, owner],
        )

    def release_lease(self, account_id: str, owner: str) -> None:
        """Give up the lease on an account (if ``owner`` holds it)."""
        p = self.p
        self._update(
            f"DELETE FROM {self.q}{LEASES} WHERE account_id = {p} AND owner = {p}",
            [account_id, owner],
        )

    def leases(self) -> dict[str, Lease]:
        """Return every lease by account id."""
        rows = self._all(f"SELECT * FROM {self.q}{LEASES}", [])
        return {r["account_id"]: Lease(r["account_id"], r["owner"], r["expires_us"]) for r in rows}

    def heartbeat(self, owner: str, now_us: int, ttl_us: int) -> int:
        """Record that ``owner`` is alive; return how many workers are alive now (at least 1)."""
        self._execute(
            [
                (
                    self._upsert_sql(WORKERS, "owner", ["owner", "expires_us"]),
                    [owner, now_us + ttl_us],
                ),
                (f"DELETE FROM {self.q}{WORKERS} WHERE expires_us < {self.p}", [now_us]),
            ]
        )
        row = self._one(f"SELECT COUNT(*) AS n FROM {self.q}{WORKERS}", [])
        return max(int(row["n"]) if row else 0, 1)

    def retire(self, owner: str) -> None:
        """Remove a stopping worker from the live workers."""
        self._update(f"DELETE FROM {self.q}{WORKERS} WHERE owner = {self.p}", [owner])

    # -- status -----------------------------------------------------------------

    def update_sync_status(self, account_id: str, **values: Any) -> None:
        """Set some :class:`SyncStatus` fields.

        :raises ValueError: for a name :class:`SyncStatus` does not have.
        """
        check_fields(values, STATUS_FIELDS, "the sync status")
        names = ["account_id", *values]
        sql = self._upsert_sql(SYNC_STATUS, "account_id", names)
        self._execute([(sql, [account_id, *values.values()])])

    def sync_status(self, account_id: str) -> SyncStatus:
        """Return an account's outbound progress and last error."""
        row = self._one(
            f"SELECT * FROM {self.q}{SYNC_STATUS} WHERE account_id = {self.p}", [account_id]
        )
        if row is None:
            return SyncStatus(account_id)
        return SyncStatus(**{k: v for k, v in row.items() if k in SyncStatus.__annotations__})


__all__ = ["SQLSyncState", "copy_record", "copy_values", "state_rows"]
