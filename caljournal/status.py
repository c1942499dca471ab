"""Application service: the sync status of every account, in one table, or of one.

Operators see all accounts at once (``caljournal status``, ``GET /status`` with
an operator token, and the metrics read at scrape time); one account's full
report is :func:`account_report` (``caljournal status ACCOUNT`` and
``SyncService.status``). Both only read the journal's database: this module
loads neither the CalDAV client nor the sync machinery.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from caljournal.adapters.fetch_mode import FetchMode
from caljournal.adapters.journal import Journal
from caljournal.adapters.status_sql import StatusQueries
from caljournal.adapters.syncstate import SyncStateStore
from caljournal.domain import ids
from caljournal.errors import NotFoundError

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


def find_account_id(journal: Journal, name: str) -> UUID:
    """Return the id of the account called ``name``, read from its query table.

    :raises NotFoundError: when there is none.
    """
    account_id = ids.account_id(name)
    if StatusQueries(journal).account_name(str(account_id)) is None:
        raise NotFoundError(f"no account named {name!r}")
    return account_id


def account_report(journal: Journal, store: SyncStateStore, account_id: UUID) -> dict[str, Any]:
    """Return the account's outbound status.

    Journal position, pushed position, pending count and the age of the
    oldest pending change (lag), failed pushes with their errors, last
    success, the worker holding the account, and the link's state.

    :raises NotFoundError: when the account has no calendar link.
    """
    account = str(account_id)
    queries = StatusQueries(journal)
    link = queries.link(account)
    if link is None:
        raise NotFoundError("this account has no calendar link")
    sync = store.sync_status(account)
    # Counted by the database, in the query the overview uses: the pending
    # changes themselves (possibly many thousands) are never loaded here.
    waiting = None
    if link["calendar_url"] and link["calendar_chosen_on"]:
        calendars = {account: link["calendar_url"]}
        waiting = queries.pending(calendars).get(account)
    oldest_us = waiting.oldest_us if waiting else None
    lease = store.leases().get(account)
    now_us = int(time.time() * 1e6)
    return {
        "account_id": account,
        "link_status": link["status"],
        "calendar_url": link["calendar_url"],
        "journal_position": journal.recorder.max_notification_id() or 0,
        "pushed_position": sync.pushed_position,
        "pending": waiting.count if waiting else 0,
        "lag_seconds": round(max(now_us - oldest_us, 0) / 1e6, 3) if oldest_us else 0.0,
        "failed": [
            {
                "appointment_id": f.appointment_id,
                "error": f.failure,
                "sequence": f.failed_sequence,
                "at": _iso(f.updated_us),
            }
            for f in store.failed_copies(account)
        ],
        "last_success": _iso(sync.last_success_us),
        "last_error": sync.last_error,
        "last_error_at": _iso(sync.last_error_us),
        "worker": lease.owner if lease and lease.expires_us > now_us else None,
        "inbound": _inbound(store, account),
        "resyncs": _resyncs(journal, account),
    }


def _resyncs(journal: Journal, account: str) -> list[dict[str, Any]]:
    """Return the account's latest backfill and replay requests, newest first."""
    return [
        {
            "request_id": r["request_id"],
            "kind": r["kind"],
            "state": r["state"],
            "options": r["options"],
            "requested": _iso(r["requested_us"]),
            "requested_by": r["actor"],
            "worker": r["worker"],
            "started": _iso(r["started_us"]),
            "finished": _iso(r["finished_us"]),
            "phase": r["phase"],
            "done": r["done"],
            "total": r["total"],
            "summary": r["summary"],
            "error": r["error"],
        }
        for r in journal.journal_recorder.recent_resyncs(account)
    ]


def _inbound(store: SyncStateStore, account: str) -> dict[str, Any]:
    state = store.inbound_state(account)
    quarantined = store.quarantined(account)
    return {
        "last_poll": _iso(state.last_poll_us),
        "last_poll_requests": state.last_requests,
        "sync_token": bool(state.sync_token),
        "initial_import": (
            {"done": state.import_done, "total": state.import_total}
            if state.import_total is not None
            else None
        ),
        "last_error": state.last_error,
        "mass_delete_breaker": state.breaker,
        "fetch_mode": _fetch_mode(state.fetch_mode),
        "calendar_check": _check(store, account),
        "quarantined": [
            {"href": q.href, "reason": q.reason, "at": _iso(q.at_us)} for q in quarantined.values()
        ],
    }


def _fetch_mode(recorded: str | None) -> dict[str, Any] | None:
    """Return how the polls found the server best asked for objects (None before any poll)."""
    if recorded is None:
        return None
    try:
        mode = FetchMode.from_text(recorded)
    except ValueError as exc:
        return {"unreadable": str(exc)}
    return asdict(mode)


def _check(store: SyncStateStore, account: str) -> dict[str, Any]:
    """Return the full comparisons of the calendar with the copy records, and their finds."""
    check = store.calendar_check(account)
    return {
        "last": _iso(check.last_us),
        "checks": check.checks,
        "differences": check.differences,
        "last_differences": json.loads(check.last_found) if check.last_found else {},
        "last_differences_at": _iso(check.last_found_us),
    }


__all__ = [
    "SORT_KEYS",
    "AccountStatus",
    "Overview",
    "StatusService",
    "account_report",
    "sort_rows",
]
