"""Operator maintenance: rebuild the query tables from the journal."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from uuid import UUID

from caljournal.adapters.journal import Journal
from caljournal.adapters.readmodel import rows_for, with_positions
from caljournal.domain.account import Account
from caljournal.domain.cause import Cause

TOPICS = (
    "caljournal:Appointment",
    "caljournal:Account",
    "caljournal:ApiToken",
    "caljournal:CalendarLink",
)
PAGE = 1000


def rebuild_read_models(
    journal: Journal,
    progress: Callable[[int, int], None] | None = None,
    cause: Cause | None = None,
) -> tuple[int, float]:
    """Rebuild appointments, accounts, tokens and links tables; return (events read, seconds).

    Appointment rows get the journal position of their latest event, by which the
    outbound worker finds pending pushes. Sync state (calendar copies, sealed
    credentials, poll positions) is not derived from the journal alone and is kept.
    With ``cause``, the rebuild is recorded on every account (``ReadModelsRebuilt``)
    so that it shows in each account's change log.
    """
    began = time.monotonic()
    recorder = journal.journal_recorder
    total = recorder.max_notification_id() or 0
    # Each aggregate's (version, journal position) of its last event read.
    last: dict[UUID, tuple[int, int]] = {}
    accounts: set[UUID] = set()
    position = 0
    read = 0
    while True:
        page = recorder.select_notifications(start=position, limit=PAGE, inclusive_of_start=False)
        if not page:
            break
        for notification in page:
            kind = notification.topic.split(".")[0]
            if kind in TOPICS:
                last[UUID(str(notification.originator_id))] = (
                    notification.originator_version,
                    notification.id,
                )
            if kind == "caljournal:Account":
                accounts.add(UUID(str(notification.originator_id)))
        read += len(page)
        position = page[-1].id
        if progress:
            progress(position, total)
    recorder.clear_read_model()
    batch = []
    for aggregate_id, (version, at) in last.items():
        aggregate: Any = journal.repository.get(aggregate_id)
        if aggregate.version != version:
            # Changed since the scan: its row needs the position of its new last event.
            at = recorder.select_positions(aggregate_id)[aggregate.version]
        batch.extend(with_positions(rows_for(aggregate), {str(aggregate_id): at}))
        if len(batch) >= 500:
            recorder.upsert_rows(batch)
            batch = []
    recorder.upsert_rows(batch)
    if cause is not None:
        for account_id in sorted(accounts):
            account: Account = journal.repository.get(account_id)
            account.record_rebuild(events_read=read, cause=cause)
            journal.save(account)
    return read, time.monotonic() - began
