"""QuarantineLog: the calendar objects an account's poller set aside, and when they came back.

A remote object caljournal cannot take in (not iCalendar, too large, a time it
cannot represent) is quarantined: the poll leaves it alone until it changes.
The sync state keeps the current set for the poller; these events keep the
record for auditors: which object, which version (ETag), why, and who (the
worker) decided, in journal order with everything else of the account. Only
the worker holding the account's lease writes the log, so it never races.
"""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import Aggregate, event

from caljournal.domain import ids
from caljournal.domain.cause import Cause

MAX_REASON_LENGTH = 500


class QuarantineLog(Aggregate):
    """One account's quarantine decisions."""

    TOPIC = "caljournal:QuarantineLog"

    class Event(Aggregate.Event):
        origin: str
        actor: str
        correlation_id: str

    class Created(Event, Aggregate.Created):
        TOPIC = "caljournal:QuarantineLog.Created"

    @staticmethod
    def id_for(account_id: UUID) -> UUID:
        """Return the quarantine log id of an account."""
        return ids.quarantine_log_id(account_id)

    @classmethod
    def open(cls, account_id: UUID, cause: Cause) -> QuarantineLog:
        """Start an account's log (with its first quarantine decision to follow)."""
        return cls(id=cls.id_for(account_id), account_id=account_id, **cause.fields())

    @event("Opened", topic="caljournal:QuarantineLog.Opened")
    def __init__(
        self,
        *,
        id: UUID,
        account_id: UUID,
        origin: str,
        actor: str,
        correlation_id: str,  # noqa: A002
    ) -> None:
        self.account_id = account_id
        self.held: dict[str, str | None] = {}

    def quarantine(self, href: str, etag: str | None, reason: str, cause: Cause) -> None:
        """Record that the object at ``href`` (version ``etag``) is set aside, and why."""
        self._quarantined(href=href, etag=etag, reason=reason[:MAX_REASON_LENGTH], **cause.fields())

    @event("ObjectQuarantined", topic="caljournal:QuarantineLog.ObjectQuarantined")
    def _quarantined(
        self,
        *,
        href: str,
        etag: str | None,
        reason: str,
        origin: str,
        actor: str,
        correlation_id: str,
    ) -> None:
        self.held[href] = etag

    def release(self, href: str, cause: Cause) -> None:
        """Record that the object at ``href`` left the quarantine (changed, or gone)."""
        self._released(href=href, **cause.fields())

    @event("ObjectReleased", topic="caljournal:QuarantineLog.ObjectReleased")
    def _released(self, *, href: str, origin: str, actor: str, correlation_id: str) -> None:
        self.held.pop(href, None)
