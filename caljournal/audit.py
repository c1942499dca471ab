"""The account-wide change log: every recorded change of an account, in journal order.

Reads the account's audit chain page by page (constant memory), turns each
event into an :class:`~caljournal.projections.audit.AuditRecord` and applies the
filters while streaming. The event type and the appointment are filtered in
SQL; time, origin and actor after decoding, since the journal stores them
inside the event.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any
from uuid import UUID

import orjson
from cachetools import LRUCache
from eventsourcing.domain import DomainEvent
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic

from caljournal.adapters.audit_chain import ChainEntry
from caljournal.adapters.journal import Journal
from caljournal.domain.account import Account, ApiToken
from caljournal.domain.appointment import Appointment
from caljournal.domain.cause import Origin
from caljournal.domain.link import CalendarLink
from caljournal.domain.quarantine import QuarantineLog
from caljournal.errors import InvalidInputError
from caljournal.projections.audit import AuditRecord, AuditView

PAGE = 1000
APPOINTMENT = "caljournal:Appointment."
MAX_LIMIT = 5000
_TYPE = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,100}$")


@cache
def known_topics() -> dict[str, tuple[str, ...]]:
    """Return every event topic the journal can hold, by event type name (``Moved``)."""
    by_name: dict[str, list[str]] = {}
    for aggregate in (Appointment, CalendarLink, Account, ApiToken, QuarantineLog):
        for name, value in vars(aggregate).items():
            if isinstance(value, type) and issubclass(value, DomainEvent):
                topic = get_topic(value)
                if topic.startswith("caljournal:"):
                    by_name.setdefault(name, []).append(topic)
    return {name: tuple(topics) for name, topics in by_name.items()}


def topics_for(event_type: str) -> tuple[str, ...]:
    """Return the topics an event type filter names: a type name (``Moved``) or a full topic.

    :raises InvalidInputError: when no recorded event has that type or topic.
    """
    known = known_topics()
    if ":" in event_type:
        if any(event_type in topics for topics in known.values()):
            return (event_type,)
    elif _TYPE.match(event_type) and event_type in known:
        return known[event_type]
    names = ", ".join(sorted(known))
    raise InvalidInputError(
        f"unknown event type {event_type!r}; use a type name ({names}) or a full topic",
        field="type",
    )


def parse_time(value: str | None, name: str) -> datetime | None:
    """Return an ISO 8601 time with its offset (UTC when none is given), or None.

    :raises InvalidInputError: when ``value`` is not an ISO 8601 date or time.
    """
    if value is None or value == "":
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInputError(
            f"{name} {value!r} is not an ISO 8601 time (e.g. 2026-12-01T09:00:00+01:00)",
            field=name,
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


@dataclass(frozen=True)
class AuditQuery:
    """Which of an account's changes to list.

    :raises InvalidInputError: when the origin, type or time range is unusable.
    """

    account_id: UUID
    appointment_id: UUID | None = None
    since: datetime | None = None
    until: datetime | None = None
    origin: str | None = None
    actor: str | None = None
    event_type: str | None = None

    def __post_init__(self) -> None:
        if self.origin is not None and self.origin not in {o.value for o in Origin}:
            known = ", ".join(o.value for o in Origin)
            raise InvalidInputError(
                f"unknown origin {self.origin!r}; expected one of {known}", field="origin"
            )
        if self.event_type is not None:
            topics_for(self.event_type)
        if self.since and self.until and self.since > self.until:
            raise InvalidInputError("since is after until", field="since")

    @property
    def topics(self) -> tuple[str, ...]:
        """Return the topics to read, () for all."""
        return topics_for(self.event_type) if self.event_type else ()

    def matches(self, record: AuditRecord) -> bool:
        """Tell whether a record passes the filters applied after decoding."""
        if self.origin is not None and record.origin != self.origin:
            return False
        if self.actor is not None and record.actor != self.actor:
            return False
        if self.since is not None and (record.time is None or record.time < self.since):
            return False
        return not (self.until is not None and (record.time is None or record.time > self.until))


class AuditService:
    """List an account's recorded changes, streaming or a page at a time."""

    def __init__(self, journal: Journal, cache_size: int = 10_000, page: int = PAGE) -> None:
        self.journal = journal
        self.cache_size = cache_size
        self.page_size = page

    def stream(self, query: AuditQuery, after: int = 0) -> Iterator[AuditRecord]:
        """Yield the account's changes after journal position ``after`` that pass the filters.

        The next page of the chain is read in a second thread while this one
        is decoded: the database's answer and the decoding overlap.
        """
        keys = self.journal.personal_keys
        # Personal-data keys of the appointments met lately: bounded like the view's states.
        memo: LRUCache[UUID, Any] = LRUCache(maxsize=self.cache_size)

        def decode(stored: StoredEvent) -> Any:
            return self.journal.personal_mapper.to_domain_event(stored, memo)

        erased = keys.erased_of(str(query.account_id))
        view = AuditView(decode, self._history, self.cache_size, erased)
        recorder = self.journal.journal_recorder

        def read(seq: int, position: int) -> list[ChainEntry]:
            return recorder.audit_entries(
                str(query.account_id),
                after_seq=seq,
                after_position=position,
                limit=self.page_size,
                topics=query.topics,
                originator_id=query.appointment_id,
            )

        reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="caljournal-audit")
        try:
            pending: Future[list[ChainEntry]] | None = reader.submit(read, 0, after)
            while pending is not None:
                entries = pending.result()
                pending = None
                if len(entries) == self.page_size:
                    pending = reader.submit(read, entries[-1].seq, entries[-1].position)
                # One query for the page's personal-data keys not met yet, not one per event.
                wanted = {
                    e.originator_id
                    for e in entries
                    if e.topic.startswith(APPOINTMENT) and e.originator_id not in memo
                }
                if wanted:
                    memo.update(keys.keys_for(list(wanted)))
                for record in view.records(entries):
                    if query.matches(record):
                        yield record
        finally:
            reader.shutdown(wait=True, cancel_futures=True)

    def page(
        self, query: AuditQuery, after: int = 0, limit: int = 500
    ) -> tuple[list[AuditRecord], int | None]:
        """Return up to ``limit`` changes after ``after`` and the cursor of the next page.

        The cursor is the journal position of the last change returned; None
        when no further change passes the filters.

        :raises InvalidInputError: when ``limit`` is outside 1 .. 5,000 or ``after`` negative.
        """
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidInputError(f"limit must be 1 to {MAX_LIMIT}", field="limit")
        if after < 0:
            raise InvalidInputError("after must not be negative", field="after")
        items: list[AuditRecord] = []
        for record in self.stream(query, after):
            if len(items) == limit:
                return items, items[-1].position
            items.append(record)
        return items, None

    def _history(self, aggregate_id: UUID, after: int, up_to: int) -> Iterator[Any]:
        return iter(self.journal.events.get(aggregate_id, gt=after or None, lte=up_to))


CSV_HEADER = (
    "position",
    "seq",
    "time",
    "account_id",
    "aggregate_type",
    "aggregate_id",
    "version",
    "event_type",
    "origin",
    "actor",
    "correlation_id",
    "field",
    "old",
    "new",
)
# A cell starting with one of these is read as a formula by spreadsheets.
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> str:
    """Return a value as one spreadsheet-safe CSV cell.

    None is empty, booleans are ``true``/``false``, lists and objects are
    JSON, and text a spreadsheet would run as a formula gets a leading ``'``.
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    text = str(value)
    return "'" + text if text.startswith(_FORMULA) else text


def csv_rows(record: AuditRecord) -> Iterator[list[str]]:
    """Yield a record's CSV rows: one per changed field, or one with an empty field."""
    head = [
        str(record.position),
        str(record.seq),
        record.time.isoformat() if record.time else "",
        record.account_id,
        record.aggregate_type,
        record.aggregate_id,
        str(record.version),
        record.event_type,
        csv_cell(record.origin),
        csv_cell(record.actor),
        csv_cell(record.correlation_id),
    ]
    if not record.changes:
        yield [*head, "(missing from the journal)" if record.missing else "", "", ""]
        return
    for name, old, new in record.changes:
        yield [*head, name, csv_cell(old), csv_cell(new)]


def json_line(record: AuditRecord) -> str:
    """Return a record as one line of JSON (JSON Lines)."""
    return orjson.dumps(record.as_dict(), default=str).decode()


__all__ = [
    "CSV_HEADER",
    "MAX_LIMIT",
    "AuditQuery",
    "AuditService",
    "csv_cell",
    "csv_rows",
    "json_line",
    "known_topics",
    "parse_time",
    "topics_for",
]
