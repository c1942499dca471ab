"""Operator maintenance: rebuild the query tables from the journal.

The rebuild reads the journal once, in aggregate order (originator id, then
version: one range of the events table's primary key per page), so each
aggregate's history arrives whole and in order. Every stored event is decoded
once with the journal's mapper and applied to the aggregate being folded; when
the next aggregate begins, the finished one's rows go into a batch. Appointment
events carry personal fields sealed with the appointment's own key
(``adapters.personal_data``): the keys of a page's appointments are read in one
query per 500 and given to the mapper as its decode memo, as the repository's
load does for one appointment, so an erased appointment (key gone) reads
exactly as a normal load shows it. The journal keeps no snapshots.

Memory stays bounded whatever the journal's size: the page being decoded, the
pages read ahead (``AHEAD``), one aggregate, and two batches of rows (one being
built, one being written by a second thread).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Generator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import closing
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent

from caljournal.adapters.journal import Journal
from caljournal.adapters.personal_data import APPOINTMENT_TOPIC
from caljournal.adapters.readmodel import Row, rows_for, with_positions
from caljournal.adapters.recorders import JournalRecorder
from caljournal.domain.account import Account
from caljournal.domain.cause import Cause

TOPICS = (
    "caljournal:Appointment",
    "caljournal:Account",
    "caljournal:ApiToken",
    "caljournal:CalendarLink",
)
#: Stored events per page read.
PAGE = 2000
#: Rows per write transaction.
BATCH = 2000
#: Pages read ahead by the reading thread while the last one is decoded.
AHEAD = 2

History = tuple[Any, int, str, bytes, int]


def rebuild_read_models(
    journal: Journal,
    progress: Callable[[int, int], None] | None = None,
    cause: Cause | None = None,
    *,
    page: int = PAGE,
    batch: int = BATCH,
) -> tuple[int, float]:
    """Rebuild appointments, accounts, tokens and links tables; return (events read, seconds).

    Appointment rows get the journal position of their latest event, by which the
    outbound worker finds pending pushes. Sync state (calendar copies, sealed
    credentials, poll positions) is not derived from the journal alone and is kept.
    With ``cause``, the rebuild is recorded on every account (``ReadModelsRebuilt``)
    so that it shows in each account's change log. ``progress`` is called after
    every page with (events read, events expected): the journal's size when the
    rebuild began, or the events read once more were recorded meanwhile.

    Writers may go on meanwhile: the tables are cleared first, so every event
    recorded after that writes its aggregate's row itself, with its full state at
    the new version, and the rebuild's rows never replace a newer version.

    :raises ValueError: when ``page`` or ``batch`` is below 1.
    """
    if page < 1 or batch < 1:
        raise ValueError(f"page ({page}) and batch ({batch}) must be at least 1")
    began = time.monotonic()
    recorder = journal.journal_recorder
    total = recorder.max_notification_id() or 0
    recorder.clear_read_model()
    read = 0
    with ThreadPoolExecutor(1, thread_name_prefix="rebuild-writer") as writer:
        fold = _Fold(journal, batch, writer)
        try:
            with closing(_read_ahead(recorder, page)) as pages:
                for events in pages:
                    fold.feed(events)
                    read += len(events)
                    if progress:
                        progress(read, max(total, read))
            fold.finish()
        finally:
            fold.abandon()
    if cause is not None:
        for account_id in sorted(fold.accounts):
            account: Account = journal.repository.get(account_id)
            account.record_rebuild(events_read=read, cause=cause)
            journal.save(account)
    return read, time.monotonic() - began


class _Fold:
    """Aggregates folded from their histories, their rows written in batches."""

    def __init__(self, journal: Journal, batch: int, writer: ThreadPoolExecutor) -> None:
        self.recorder = journal.journal_recorder
        self.mapper = journal.personal_mapper
        self.keys = journal.personal_keys
        self.batch = batch
        self.writer = writer
        self.writing: Future[None] | None = None
        self.rows: list[Row] = []
        self.accounts: list[UUID] = []
        self.stored_id: Any = None
        self.originator_id: UUID | None = None
        self.aggregate: Any = None
        self.position = 0
        # Whether a topic's events belong to a rebuilt aggregate, by topic.
        self.wanted: dict[str, bool] = {}

    def feed(self, events: list[History]) -> None:
        """Apply a page of stored events (in aggregate order) to the aggregates they belong to."""
        memo = self._keys(events)
        decode = self.mapper.to_domain_event
        wanted = self.wanted
        for stored_id, version, topic, state, position in events:
            if stored_id != self.stored_id:
                self._close()
                self.stored_id = stored_id
                self.originator_id = UUID(str(stored_id))
            known = wanted.get(topic)
            if known is None:
                known = wanted[topic] = topic.split(".")[0] in TOPICS
            if not known:
                continue
            assert self.originator_id is not None
            stored = StoredEvent(
                originator_id=self.originator_id,
                originator_version=version,
                topic=topic,
                state=state,
            )
            event: Any = decode(stored, memo)
            self.aggregate = event.mutate(self.aggregate)
            self.position = position

    def finish(self) -> None:
        """Write the last aggregate's rows and every row still waiting."""
        self._close()
        self._write()
        self._written()

    def _write(self) -> None:
        """Hand the batch to the writing thread, once the one before is written."""
        self._written()
        self.writing = self.writer.submit(self.recorder.write_rows, self.rows)
        self.rows = []

    def _written(self) -> None:
        """Wait for the batch being written; raise its failure."""
        if self.writing is not None:
            self.writing.result()
            self.writing = None

    def abandon(self) -> None:
        """Wait for a batch still being written (after a failure: its own failure is dropped)."""
        if self.writing is not None:
            wait([self.writing])

    def _keys(self, events: list[History]) -> dict[UUID, Any]:
        """Return the personal-data keys of the page's appointments (None: erased or none)."""
        ids = {e[0] for e in events if e[2].startswith(APPOINTMENT_TOPIC)}
        return dict(self.keys.keys_for([UUID(str(i)) for i in ids])) if ids else {}

    def _close(self) -> None:
        aggregate, self.aggregate = self.aggregate, None
        if aggregate is None:
            return
        if isinstance(aggregate, Account):
            self.accounts.append(aggregate.id)
        self.rows.extend(with_positions(rows_for(aggregate), {str(aggregate.id): self.position}))
        if len(self.rows) >= self.batch:
            self._write()


def _read_ahead(recorder: JournalRecorder, page: int) -> Generator[list[History], None, None]:
    """Yield the journal's stored events page by page, in aggregate order.

    A second thread reads the next pages (up to ``AHEAD``) while the caller
    decodes: the database's work overlaps Python's. A failure of the reading
    thread is raised here.
    """
    pages: queue.Queue[list[History] | BaseException] = queue.Queue(maxsize=AHEAD)
    stop = threading.Event()

    def put(item: list[History] | BaseException) -> bool:
        while not stop.is_set():
            try:
                pages.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        after: tuple[Any, int] | None = None
        try:
            while True:
                events = recorder.select_histories(after, page)
                if not put(events) or not events:
                    return
                after = (events[-1][0], events[-1][1])
        except BaseException as exc:
            put(exc)

    reader = threading.Thread(target=read, name="rebuild-reader", daemon=True)
    reader.start()
    try:
        while True:
            item = pages.get()
            if isinstance(item, BaseException):
                raise item
            if not item:
                return
            yield item
    finally:
        stop.set()
        reader.join()
