"""The resync requests table: backfills and replays asked for, who runs them, how far they are.

A request's row is written in the transaction that records its
``ResyncRequested`` event (``Journal.save(..., extra_rows=[request_row(...)])``)
and finished in the one that records its ``ResyncRan``; in between, the run
writes its phase and counts here for ``GET /link/status``. The events are the
audit trail; this table is the queue and the progress.

Shared by the SQLite and PostgreSQL recorders like ``adapters.outbound_store``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from caljournal.adapters.readmodel import WORKERS, Row

RESYNCS = "caljournal_resyncs"

#: The states of a request: waiting for the lease holder, running, finished well or not.
REQUESTED, RUNNING, DONE, FAILED = "requested", "running", "done", "failed"

RESYNC_COLUMNS = (
    "request_id",
    "account_id",
    "kind",
    "options",
    "origin",
    "actor",
    "correlation_id",
    "state",
    "requested_us",
    "worker",
    "started_us",
    "finished_us",
    "phase",
    "done",
    "total",
    "summary",
    "error",
)


def resync_row(values: dict[str, Any]) -> Row:
    """Return a request's row, to be written with the event that changes it.

    ``values`` has every column; ``options`` and ``summary`` as plain values.
    """
    row = {name: values.get(name) for name in RESYNC_COLUMNS}
    row["options"] = json.dumps(row["options"] or {}, sort_keys=True)
    if row["summary"] is not None:
        row["summary"] = json.dumps(row["summary"], sort_keys=True)
    return Row(RESYNCS, row, key="request_id", versioned=False)


def _decoded(row: Any) -> dict[str, Any]:
    found = dict(row)
    found["options"] = json.loads(found["options"]) if found["options"] else {}
    found["summary"] = json.loads(found["summary"]) if found["summary"] else None
    return found


class ResyncQueries:
    """Queries of the resync requests table (mixed into the journal recorders)."""

    qualify: str
    placeholder: str

    def _fetch(self, sql: str, params: Sequence[Any]) -> list[Any]:
        raise NotImplementedError

    def _execute(self, statements: Iterable[tuple[str, Sequence[Any]]]) -> None:
        raise NotImplementedError

    def _update(self, sql: str, params: Sequence[Any]) -> int:
        raise NotImplementedError

    def resync(self, request_id: str) -> dict[str, Any] | None:
        """Return one request (options and summary decoded), or None."""
        rows = self._fetch(
            f"SELECT * FROM {self.qualify}{RESYNCS} WHERE request_id = {self.placeholder}",
            [request_id],
        )
        return _decoded(rows[0]) if rows else None

    def open_resyncs(self, account_id: str) -> list[dict[str, Any]]:
        """Return the account's requests not finished yet, oldest first."""
        p = self.placeholder
        rows = self._fetch(
            f"SELECT * FROM {self.qualify}{RESYNCS} WHERE account_id = {p} "
            f"AND state IN ({p}, {p}) ORDER BY requested_us, request_id",
            [account_id, REQUESTED, RUNNING],
        )
        return [_decoded(r) for r in rows]

    def recent_resyncs(self, account_id: str, limit: int = 5) -> list[dict[str, Any]]:
        """Return the account's latest requests, newest first."""
        p = self.placeholder
        rows = self._fetch(
            f"SELECT * FROM {self.qualify}{RESYNCS} WHERE account_id = {p} "
            f"ORDER BY requested_us DESC, request_id LIMIT {p}",
            [account_id, limit],
        )
        return [_decoded(r) for r in rows]

    def update_resync(self, request_id: str, **values: Any) -> None:
        """Set some columns of a request (its state, worker, phase and counts)."""
        p = self.placeholder
        assignments = ", ".join(f"{name} = {p}" for name in values)
        self._update(
            f"UPDATE {self.qualify}{RESYNCS} SET {assignments} WHERE request_id = {p}",
            [*values.values(), request_id],
        )

    def live_workers(self, now_us: int) -> set[str]:
        """Return the owners of the workers alive at ``now_us``."""
        rows = self._fetch(
            f"SELECT owner FROM {self.qualify}{WORKERS} WHERE expires_us > {self.placeholder}",
            [now_us],
        )
        return {r["owner"] for r in rows}
