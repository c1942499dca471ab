"""Application service for sync status and operator retries."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from caljournal.adapters.journal import Journal
from caljournal.adapters.readmodel import to_us
from caljournal.domain.appointment import Appointment
from caljournal.domain.cause import Cause
from caljournal.links import LinkService


def _iso(us: int | None) -> str | None:
    if us is None:
        return None
    return datetime.fromtimestamp(us / 1e6, UTC).isoformat()


class SyncService:
    """Report how far each account's calendar is behind, and retry failed pushes."""

    def __init__(self, journal: Journal, links: LinkService) -> None:
        self.journal = journal
        self.links = links
        self.recorder = journal.journal_recorder

    def status(self, account_id: UUID) -> dict[str, Any]:
        """Return the account's outbound status.

        Journal position, pushed position, pending count and the age of the
        oldest pending change (lag), failed pushes with their errors, last
        success, the worker holding the account, and the link's state.
        """
        link = self.links.get(account_id)
        account = str(account_id)
        sync = self.recorder.sync_status(account)
        pending: list[dict[str, Any]] = []
        if link["calendar_url"] and link["calendar_chosen_on"]:
            since = to_us(datetime.fromisoformat(link["calendar_chosen_on"]))
            pending = self.recorder.pending_pushes(account, link["calendar_url"], since, 100_000)
        oldest = min(
            (datetime.fromisoformat(p["appointment"]["modified_on"]) for p in pending), default=None
        )
        lease = self.recorder.leases().get(account)
        now_us = int(time.time() * 1e6)
        return {
            "account_id": account,
            "link_status": link["status"],
            "calendar_url": link["calendar_url"],
            "journal_position": self.recorder.max_notification_id() or 0,
            "pushed_position": sync.get("pushed_position"),
            "pending": len(pending),
            "lag_seconds": (
                round((datetime.now(UTC) - oldest).total_seconds(), 3) if oldest else 0.0
            ),
            "failed": [
                {
                    "appointment_id": f["appointment_id"],
                    "error": f["failure"],
                    "sequence": f["failed_sequence"],
                    "at": _iso(f["updated_us"]),
                }
                for f in self.recorder.failed_copies(account)
            ],
            "last_success": _iso(sync.get("last_success_us")),
            "last_error": sync.get("last_error"),
            "last_error_at": _iso(sync.get("last_error_us")),
            "worker": lease["owner"] if lease and lease["expires_us"] > now_us else None,
            "inbound": self._inbound(account),
        }

    def _inbound(self, account: str) -> dict[str, Any]:
        state = self.recorder.inbound_state(account)
        quarantined = self.recorder.quarantined(account)
        return {
            "last_poll": _iso(state.get("last_poll_us")),
            "last_poll_requests": state.get("last_requests"),
            "sync_token": bool(state.get("sync_token")),
            "initial_import": (
                {"done": state.get("import_done"), "total": state.get("import_total")}
                if state.get("import_total") is not None
                else None
            ),
            "last_error": state.get("last_error"),
            "mass_delete_breaker": state.get("breaker"),
            "quarantined": [
                {"href": q["href"], "reason": q["reason"], "at": _iso(q["at_us"])}
                for q in quarantined.values()
            ],
        }

    def retry_failed(self, account_id: UUID, cause: Cause) -> int:
        """Clear the account's failed pushes so the worker tries them again; return how many."""
        failed = self.recorder.failed_copies(str(account_id))
        for copy in failed:
            self.recorder.clear_failure(copy["appointment_id"])
            for _ in range(20):
                appointment = self.journal.repository.get(UUID(copy["appointment_id"]))
                assert isinstance(appointment, Appointment)
                if not appointment.clear_push_failure(cause=cause):
                    # Nothing recorded on the appointment; touch it so the worker looks again.
                    break
                try:
                    self.journal.save(appointment)
                    break
                except IntegrityError:
                    continue
        return len(failed)
