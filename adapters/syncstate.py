"""The sync-state store port: what caljournal knows about each linked calendar.

The journal holds what happened to appointments; this store holds what the
sync code knows about their calendar copies and about each account's calendar,
so a worker that restarts (or another worker) carries on where the last one
stopped. Concerns and vocabulary:

copies (one :class:`CopyRecord` per appointment)
    ``pending_pushes``, ``count_pending``, ``record_copies``, ``doubt_copies``, ``copy_of``,
    ``copies``, ``copies_by_href``, ``count_copies``, ``failed_copies``,
    ``clear_failure``, ``absent_live_copies``;
inbound state (one :class:`InboundState` per account)
    ``inbound_state``, ``update_inbound``, ``calendar_check``, ``quarantined``;
a poll's commit
    ``commit(aggregates, writes)``: the events a poll produced and the
    :class:`StateWrites` that go with them, in one transaction where the store
    shares the journal's database (a crash never loses or repeats a remote change);
leases and workers
    ``claim_lease``, ``claim_leases``, ``renew_leases``, ``release_lease``, ``leases``,
    ``heartbeat``, ``retire``;
per-account status (one :class:`SyncStatus` per account)
    ``update_sync_status``, ``sync_status``.

Two implementations: ``adapters.syncstate_sql.SQLSyncState`` (the journal's
SQLite or PostgreSQL database, tables of ``adapters.readmodel``) and
``adapters.syncstate_memory.MemorySyncState`` (dicts), both run by one
contract suite.

Records are frozen dataclasses; times are integer microseconds since the epoch
(UTC), journal positions are notification ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class CopyRecord:
    """What one appointment's calendar copy is, as far as caljournal knows.

    Recorded only after the server confirmed a write (or a poll saw the object).
    ``pushed_sequence`` is the appointment sequence the copy shows (-1: never
    pushed); ``failed_sequence``/``failure`` name a push that failed for good.
    A present copy without ``content_hash`` is *in doubt*: a write over it was
    under way and its answer may never have been recorded (``doubt_copies``),
    so the calendar may hold our newer write under another ETag.
    """

    appointment_id: str
    account_id: str
    calendar_url: str
    href: str
    etag: str | None
    pushed_sequence: int
    content_hash: str | None
    present: bool
    failed_sequence: int | None = None
    failure: str | None = None
    updated_us: int = 0


@dataclass(frozen=True)
class PendingPush:
    """An appointment whose calendar copy is missing or behind the journal.

    ``appointment`` is the appointment's ``state()``; ``copy`` is its record on
    the calendar being pushed to (None when it has none there).
    """

    appointment: dict[str, Any]
    copy: CopyRecord | None
    position: int = 0


@dataclass(frozen=True)
class InboundState:
    """Where an account's inbound poll stands (all None before the first poll)."""

    account_id: str
    calendar_url: str | None = None
    sync_token: str | None = None
    ctag: str | None = None
    last_poll_us: int | None = None
    last_requests: int | None = None
    import_total: int | None = None
    import_done: int | None = None
    last_error: str | None = None
    confirm_deletes: bool = False
    breaker: str | None = None
    last_full_us: int | None = None
    #: How the calendar's server is best asked for objects, as learned by the
    #: polls (``FetchMode.as_text``); None before the first complete poll.
    fetch_mode: str | None = None


@dataclass(frozen=True)
class Quarantined:
    """A remote object the poller would not import, and why."""

    account_id: str
    href: str
    etag: str | None
    reason: str
    at_us: int


@dataclass(frozen=True)
class CalendarCheck:
    """Full comparisons of an account's calendar with its copy records."""

    account_id: str
    last_us: int | None = None
    checks: int = 0
    differences: int = 0
    last_found: str | None = None
    last_found_us: int | None = None
    written_us: int | None = None


@dataclass(frozen=True)
class Lease:
    """Which worker serves an account, until when."""

    account_id: str
    owner: str
    expires_us: int


@dataclass(frozen=True)
class SyncStatus:
    """An account's outbound progress and last error."""

    account_id: str
    pushed_position: int | None = None
    last_success_us: int | None = None
    last_error: str | None = None
    last_error_us: int | None = None
    worker: str | None = None


@dataclass
class StateWrites:
    """What a poll of one account writes to the store together with its events.

    ``released`` names hrefs that leave the quarantine; ``inbound`` sets some
    :class:`InboundState` fields; ``check`` replaces the account's
    :class:`CalendarCheck` except ``written_us``, which only
    ``record_copies`` moves (caljournal's own writes, see the inbound poller).
    """

    account_id: str
    copies: list[CopyRecord] = field(default_factory=list)
    quarantine: list[Quarantined] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    inbound: dict[str, Any] | None = None
    check: CalendarCheck | None = None


INBOUND_FIELDS = frozenset(f for f in InboundState.__dataclass_fields__ if f != "account_id")
STATUS_FIELDS = frozenset(f for f in SyncStatus.__dataclass_fields__ if f != "account_id")


def check_fields(values: dict[str, Any], allowed: frozenset[str], what: str) -> None:
    """Refuse field names a record does not have (a typo would otherwise be lost).

    :raises ValueError: naming the unknown fields.
    """
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise ValueError(f"{what} has no field(s) {', '.join(unknown)}")


class SyncStateStore(Protocol):
    """The sync state of every account (see the module's vocabulary)."""

    # -- copies -----------------------------------------------------------------
    def pending_pushes(
        self, account_id: str, calendar_url: str, after_position: int, limit: int
    ) -> list[PendingPush]:
        """Return appointments whose copy on ``calendar_url`` is missing or behind.

        Only appointments changed after journal position ``after_position``
        (older ones are the backfill's job); a booked appointment without a copy
        (or with a copy on another calendar) counts, a copy whose push failed for
        good counts again only after a newer change. Oldest change first.
        """
        ...

    def count_pending(self, account_id: str, calendar_url: str, after_position: int) -> int: ...

    def record_copies(self, records: Sequence[CopyRecord]) -> None:
        """Record what the calendar holds (after the server confirmed); notes the write time.

        Each account's ``CalendarCheck.written_us`` becomes the newest
        ``updated_us`` of its records: caljournal wrote to the calendar.
        """
        ...

    def doubt_copies(self, appointment_ids: Sequence[str]) -> None:
        """Mark the present copies of these appointments in doubt (one transaction).

        Called before writes over them are sent: until a confirmed write is
        recorded, the record claims no content (``content_hash`` None), so a
        crash between the server's answer and the record never leaves a record
        that claims the old content while the calendar holds the new.
        """
        ...

    def copy_of(self, appointment_id: str) -> CopyRecord | None: ...

    def copies(self, account_id: str) -> list[CopyRecord]: ...

    def copies_by_href(
        self, account_id: str, calendar_url: str, hrefs: set[str] | None = None
    ) -> dict[str, CopyRecord]: ...

    def count_copies(self, account_id: str) -> int: ...

    def failed_copies(self, account_id: str) -> list[CopyRecord]: ...

    def clear_failure(self, appointment_id: str) -> None: ...

    def absent_live_copies(self, account_id: str, calendar_url: str) -> list[CopyRecord]: ...

    # -- inbound ----------------------------------------------------------------
    def inbound_state(self, account_id: str) -> InboundState: ...

    def update_inbound(self, account_id: str, **values: Any) -> None: ...

    def calendar_check(self, account_id: str) -> CalendarCheck: ...

    def quarantined(self, account_id: str) -> dict[str, Quarantined]: ...

    def commit(self, aggregates: Sequence[Any], writes: StateWrites) -> None:
        """Save the aggregates' new events and apply ``writes``, together.

        :raises eventsourcing.persistence.IntegrityError: when another writer
            recorded an aggregate's next version first (nothing is written then).
        """
        ...

    # -- leases and workers -----------------------------------------------------
    def claim_lease(self, account_id: str, owner: str, now_us: int, ttl_us: int) -> bool: ...

    def claim_leases(
        self, account_ids: Sequence[str], owner: str, now_us: int, ttl_us: int
    ) -> set[str]:
        """Take or renew the leases on many accounts at once; return those ``owner`` holds now.

        Each lease is taken as ``claim_lease`` takes one (free, expired before
        ``now_us`` or already ``owner``'s), atomically per lease, so two owners
        never hold one at once; one statement per 500 accounts.
        """
        ...

    def renew_leases(self, owner: str, now_us: int, ttl_us: int) -> None:
        """Extend every lease ``owner`` holds to ``now_us + ttl_us`` (one statement)."""
        ...

    def release_lease(self, account_id: str, owner: str) -> None: ...

    def leases(self) -> dict[str, Lease]: ...

    def heartbeat(self, owner: str, now_us: int, ttl_us: int) -> int: ...

    def retire(self, owner: str) -> None: ...

    # -- status -----------------------------------------------------------------
    def update_sync_status(self, account_id: str, **values: Any) -> None: ...

    def sync_status(self, account_id: str) -> SyncStatus: ...
