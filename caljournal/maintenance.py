"""Operator maintenance: rebuild the query tables from the journal."""

from __future__ import annotations

import time
from collections.abc import Callable
from uuid import UUID

from caljournal.adapters.journal import Journal
from caljournal.adapters.readmodel import rows_for, with_positions

TOPICS = (
    "caljournal:Appointment",
    "caljournal:Account",
    "caljournal:ApiToken",
    "caljournal:CalendarLink",
)
PAGE = 1000


def rebuild_read_models(
    journal: Journal, progress: Callable[[int, int], None] | None = None
) -> tuple[int, float]:
    """Rebuild appointments, accounts, tokens and links tables; return (events read, seconds).

    Appointment rows get the journal position of their latest event, by which the
    outbound worker finds pending pushes. Sync state (calendar copies, sealed
    credentials, poll positions) is not derived from the journal alone and is kept.
    """
    began = time.monotonic()
    recorder = journal.journal_recorder
    total = recorder.max_notification_id() or 0
    # Each aggregate's (version, journal position) of its last event read.
    last: dict[UUID, tuple[int, int]] = {}
    position = 0
    read = 0
    while True:
        page = recorder.select_notifications(start=position, limit=PAGE, inclusive_of_start=False)
        if not page:
            break
        for notification in page:
            if notification.topic.split(".")[0] in TOPICS:
                last[UUID(str(notification.originator_id))] = (
                    notification.originator_version,
                    notification.id,
                )
        read += len(page)
        position = page[-1].id
        if progress:
            progress(position, total)
    recorder.clear_read_model()
    batch = []
    for aggregate_id, (version, at) in last.items():
        aggregate = journal.repository.get(aggregate_id)
        if aggregate.version != version:
            # Changed since the scan: its row needs the position of its new last event.
            at = recorder.select_positions(aggregate_id)[aggregate.version]
        batch.extend(with_positions(rows_for(aggregate), {str(aggregate_id): at}))
        if len(batch) >= 500:
            recorder.upsert_rows(batch)
            batch = []
    recorder.upsert_rows(batch)
    return read, time.monotonic() - began
