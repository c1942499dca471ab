"""Application service: the sync status of every account, in one table.

Operators see all accounts at once (``caljournal status``, ``GET /status`` with
an operator token, and the metrics read at scrape time); one account's full
report stays with ``SyncService.status``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from caljournal.adapters.journal import Journal
from caljournal.adapters.status_sql import StatusQueries

SORT_KEYS = ("lag", "failures", "name")
DEFAULT_POLL_INTERVAL = 60
NO_LINK = "none"


def _iso(us: int | None) -> str | None:
    if us is None:
        return None
    return datetime.fromtimestamp(us / 1e6, UTC).isoformat()


@dataclass(frozen=True)
class AccountStatus:
    """One account's line in the overview.

    ``link_status`` is the link's state (``active``, ``linked``, ``paused``,
    ``unlinked``) or ``none``; ``lag_seconds`` the age of the oldest change
    waiting for a push (0 when none waits); ``failed`` counts pushes that failed
    for good, ``quarantined`` remote objects the poller would not import;
    ``worker`` is the worker holding the account's lease now.
    """

    name: str
    account_id: str
    link_status: str
    calendar_url: str | None
    lag_seconds: float
    pending: int
    failed: int
    quarantined: int
    last_poll: str | None
    next_poll: str | None
    last_success: str | None
    last_error: str | None
    last_error_at: str | None
    worker: str | None

    def as_dict(self) -> dict[str, Any]:
        """Return the line as plain values."""
        return asdict(self)


@dataclass(frozen=True)
class Overview:
    """Every account's status, the journal position and the running backfills and replays."""

    position: int
    rows: list[AccountStatus]
    resyncs_running: int
    resync_done: int
    resync_total: int

    def as_dict(self) -> dict[str, Any]:
        """Return the overview as plain values."""
        return {
            "journal_position": self.position,
            "accounts": [r.as_dict() for r in self.rows],
            "resyncs_running": self.resyncs_running,
        }


def sort_rows(rows: Sequence[AccountStatus], by: str) -> list[AccountStatus]:
    """Return ``rows`` in order: largest lag first, most failures first, or by name.

    Failures are pushes failed for good, then quarantined objects, then a
    standing error; ties go by name.

    :raises ValueError: when ``by`` is not one of :data:`SORT_KEYS`.
    """
    if by not in SORT_KEYS:
        raise ValueError(f"cannot sort by {by!r}; choose one of {', '.join(SORT_KEYS)}")
    if by == "lag":
        return sorted(rows, key=lambda r: (-r.lag_seconds, -r.pending, r.name))
    if by == "failures":
        return sorted(rows, key=lambda r: (-r.failed, -r.quarantined, r.last_error is None, r.name))
    return sorted(rows, key=lambda r: r.name)


class StatusService:
    """Build the status of all accounts in a fixed number of queries."""

    def __init__(self, journal: Journal) -> None:
        self.queries = StatusQueries(journal)

    def overview(self, only: str | None = None) -> Overview:
        """Return every account's status (only the account with id ``only``, when given)."""
        t = self.queries.tables()
        accounts = [a for a in t.accounts if only is None or a["id"] == only]
        calendars = {
            a["id"]: t.links[a["id"]]["calendar_url"]
            for a in accounts
            if a["id"] in t.links
            and t.links[a["id"]]["calendar_url"]
            and t.links[a["id"]]["calendar_chosen_on"]
        }
        pending = self.queries.pending(calendars)
        now_us = int(time.time() * 1e6)
        rows = []
        for account in accounts:
            account_id = account["id"]
            link = t.links.get(account_id)
            sync = t.sync.get(account_id, {})
            inbound = t.inbound.get(account_id, {})
            lease = t.leases.get(account_id)
            waiting = pending.get(account_id)
            oldest = waiting.oldest_us if waiting else None
            last_poll = inbound.get("last_poll_us")
            error = sync.get("last_error")
            active = link is not None and link["status"] == "active"
            interval = int((link or {}).get("poll_interval") or DEFAULT_POLL_INTERVAL)
            rows.append(
                AccountStatus(
                    name=account["name"],
                    account_id=account_id,
                    link_status=link["status"] if link else NO_LINK,
                    calendar_url=link["calendar_url"] if link else None,
                    lag_seconds=round(max(now_us - oldest, 0) / 1e6, 3) if oldest else 0.0,
                    pending=waiting.count if waiting else 0,
                    failed=t.failed.get(account_id, 0),
                    quarantined=t.quarantined.get(account_id, 0),
                    last_poll=_iso(last_poll),
                    next_poll=(
                        _iso(last_poll + interval * 1_000_000) if active and last_poll else None
                    ),
                    last_success=_iso(sync.get("last_success_us")),
                    last_error=error,
                    last_error_at=_iso(sync.get("last_error_us")) if error else None,
                    worker=lease["owner"] if lease and lease["expires_us"] > now_us else None,
                )
            )
        running = [r for r in t.running_resyncs if only is None or r["account_id"] == only]
        return Overview(
            position=t.position,
            rows=rows,
            resyncs_running=len(running),
            resync_done=sum(int(r["done"] or 0) for r in running),
            resync_total=sum(int(r["total"] or 0) for r in running),
        )


__all__ = ["SORT_KEYS", "AccountStatus", "Overview", "StatusService", "sort_rows"]
