"""Backfill and replay: make a calendar equal to the journal, at server speed.

Both first read the calendar once (an ETag listing, then calendar-multiget in
batches, keeping only UID, href, ETag and a content hash per object), then
compare every appointment of the account with it by UID — so objects written
earlier, by caljournal or by a product before it, are matched instead of
duplicated — and write only what differs, with the same rendering and the same
conditional writes as the outbound worker. Both are idempotent (a second run
writes nothing) and resumable (an interrupted run is simply run again).

* **backfill** pushes the live appointments that are missing or differ;
* **replay** also deletes caljournal's own objects of cancelled appointments,
  can render the journal's state at an earlier moment (``as_of``), and can
  target another calendar. Foreign objects are always left alone.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from caljournal.adapters.ical import ICalendarError, content_hash, from_ical
from caljournal.adapters.journal import Journal
from caljournal.adapters.journal_ops import state_as_of
from caljournal.adapters.logs import sync_context
from caljournal.adapters.metrics import RESYNC_WRITES
from caljournal.adapters.storage import CalendarStorage, StorageError
from caljournal.adapters.syncstate import SyncStateStore
from caljournal.domain.cause import Cause
from caljournal.projections.executor import Action, ActionKind, CopyLog, Executor, Subject
from caljournal.projections.push import href_for, render

SCAN_BATCH = 100
PAGE = 500
CHUNK = 50
STOPPED = "not attempted: the run stopped"


@dataclass(frozen=True)
class RemoteCopy:
    """What the calendar holds under one UID (only what a comparison needs)."""

    href: str
    etag: str | None
    digest: str


@dataclass(frozen=True)
class Step:
    """One planned write (``RECORD``: the calendar holds it already).

    ``digest`` is the content hash of what is written, ``remote_digest`` that of
    the object the scan found (for an update).
    """

    kind: ActionKind
    appointment_id: str
    href: str
    etag: str | None = None
    digest: str | None = None
    sequence: int = 0
    title: str = ""
    remote_digest: str | None = None


@dataclass
class Summary:
    """What a run did (or, dry, would do)."""

    created: int = 0
    already_present: int = 0
    updated: int = 0
    deleted: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    foreign_left_alone: int = 0
    dry_run: bool = False
    sample: list[str] = field(default_factory=list)
    seconds: float = 0.0
    stopped: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """Return the summary as plain values."""
        return {
            "created": self.created,
            "already_present": self.already_present,
            "updated": self.updated,
            "deleted": self.deleted,
            "failed": [{"appointment_id": a, "reason": r} for a, r in self.failed],
            "foreign_left_alone": self.foreign_left_alone,
            "dry_run": self.dry_run,
            "sample": self.sample,
            "seconds": round(self.seconds, 2),
            "stopped": self.stopped,
        }


class MassDeleteRefusedError(Exception):
    """A replay would delete more than the limit allows."""


class RateLimiter:
    """Space request starts at least ``1 / rate`` seconds apart (shared by threads)."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        """Block until the next request may start."""
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        time.sleep(max(start - now, 0.0))


def scan(
    reader: CalendarStorage, progress: Callable[[int, int], None] | None = None
) -> tuple[dict[str, RemoteCopy], set[str]]:
    """Read the calendar once; return its objects by UID, and UIDs seen more than once."""
    listing = reader.listing()
    hrefs = sorted(listing.changed)
    found: dict[str, RemoteCopy] = {}
    duplicates: set[str] = set()
    for start in range(0, len(hrefs), SCAN_BATCH):
        loaded = reader.load(hrefs[start : start + SCAN_BATCH])
        for href, (data, etag) in loaded.objects.items():
            try:
                events = from_ical(data)
            except ICalendarError:
                continue
            uid = events[0].uid
            if uid in found:
                duplicates.add(uid)
                continue
            found[uid] = RemoteCopy(href, etag or listing.changed.get(href), content_hash(data))
        if progress:
            progress(min(start + SCAN_BATCH, len(hrefs)), len(hrefs))
    return found, duplicates


def appointment_states(
    journal: Journal, account_id: str, as_of: datetime | None
) -> Iterator[dict[str, Any]]:
    """Yield every appointment of the account (at ``as_of`` when given), page by page."""
    recorder = journal.journal_recorder
    last = ""
    while True:
        page = recorder.appointment_page(account_id, last, PAGE)
        if not page:
            return
        for state in page:
            last = state["id"]
            if as_of is None:
                yield state
                continue
            then = state_as_of(journal, uuid.UUID(state["id"]), as_of)
            if then is not None:
                yield then.state()


def one_state(journal: Journal, appointment_id: str, as_of: datetime | None) -> dict[str, Any]:
    """Return one appointment's state (at ``as_of`` when given)."""
    then = state_as_of(journal, uuid.UUID(appointment_id), as_of)
    assert then is not None, f"appointment {appointment_id} did not exist at {as_of}"
    return dict(then.state())


def plan_steps(
    states: Iterator[dict[str, Any]],
    remote: dict[str, RemoteCopy],
    calendar_url: str,
    delete: bool,
    recorded: dict[str, str] | None = None,
) -> Iterator[Step]:
    """Yield what to write so the calendar shows ``states`` (pure but for rendering).

    ``recorded`` maps appointment ids to the href their copy record names on
    this calendar: a copy missing from the calendar is written there again, as
    the worker's push would, so a write whose answer is lost in a crash lands
    where the record (marked in doubt) points and is not made a second time
    under another name.
    """
    recorded = recorded or {}
    for state in states:
        uid = state.get("calendar_uid") or f"{state['id']}@caljournal"
        copy = remote.get(uid)
        sequence, title = state["sequence"], state["title"]
        if state["status"] != "booked":
            if delete and copy is not None:
                yield Step(
                    ActionKind.DELETE, state["id"], copy.href, copy.etag, None, sequence, title
                )
            continue
        # Steps keep no rendered data (it is rendered when written), so a run
        # over 50,000 appointments holds only a small record per appointment.
        if copy is None:
            href = recorded.get(state["id"]) or href_for(calendar_url, state["id"])
            yield Step(ActionKind.CREATE, state["id"], href, None, None, sequence, title)
            continue
        digest = content_hash(render(state)[0])
        kind = ActionKind.RECORD if copy.digest == digest else ActionKind.UPDATE
        yield Step(kind, state["id"], copy.href, copy.etag, digest, sequence, title, copy.digest)


class Resync:
    """One backfill or replay run for one account and one calendar.

    ``storage`` reads the calendar and makes the writes; with ``concurrency``
    above 1 each further writing thread gets its own from ``open_storage``
    (closed by the run). Writes go through the worker's executor, so a
    precondition that fails on an object someone else changed is resolved and
    recorded (``ConflictResolved``, with ``cause``) exactly as the worker does.
    """

    def __init__(
        self,
        journal: Journal,
        storage: CalendarStorage,
        store: SyncStateStore,
        account_id: str,
        calendar_url: str,
        cause: Callable[[], Cause],
        *,
        delete: bool,
        record: bool,
        as_of: datetime | None = None,
        dry_run: bool = False,
        concurrency: int = 1,
        rate: float | None = None,
        progress: Callable[[str, int, int], None] | None = None,
        open_storage: Callable[[], CalendarStorage] | None = None,
    ) -> None:
        if concurrency > 1 and open_storage is None:
            raise ValueError("writing with more than one thread needs open_storage")
        self.journal = journal
        self.storage = storage
        self.store = store
        self.open_storage = open_storage
        self.account_id = account_id
        self.calendar_url = calendar_url if calendar_url.endswith("/") else calendar_url + "/"
        self.cause = cause
        self.delete = delete
        self.record = record
        self.as_of = as_of
        self.dry_run = dry_run
        self.concurrency = max(1, concurrency)
        self.limiter = RateLimiter(rate)
        self.progress = progress or (lambda phase, done, total: None)
        self.copies = CopyLog(store, flush_at=CHUNK) if record else None
        self._local = threading.local()
        self._opened: list[CalendarStorage] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def plan(self) -> tuple[list[Step], Summary]:
        """Read the calendar and return the writes to make (nothing is written).

        :raises StorageError: when the calendar cannot be read (transient faults
            are retried as the storage's retry policy allows).
        """
        remote, _ = scan(self.storage, lambda d, t: self.progress("reading the calendar", d, t))
        states = appointment_states(self.journal, self.account_id, self.as_of)
        recorded = {
            c.appointment_id: c.href
            for c in self.store.copies(self.account_id)
            if c.calendar_url.rstrip("/") == self.calendar_url.rstrip("/")
        }
        steps = list(plan_steps(states, remote, self.calendar_url, self.delete, recorded))
        ours = {s.href for s in steps}
        summary = Summary(dry_run=self.dry_run)
        summary.foreign_left_alone = sum(1 for c in remote.values() if c.href not in ours)
        summary.already_present = sum(1 for s in steps if s.kind is ActionKind.RECORD)
        return steps, summary

    def run(self, steps: list[Step], summary: Summary, write: bool = True) -> Summary:
        """Make the writes (or only count them on a dry run, or when ``write`` is False).

        A server that keeps failing past the retry policy stops the run: the
        writes confirmed so far are recorded and ``summary.stopped`` says why
        (a later run finishes the rest).
        """
        # The run's log lines (and its CalDAV requests') carry its request's correlation id.
        with sync_context(account=self.account_id, correlation_id=self.cause().correlation_id):
            return self._run(steps, summary, write)

    def _run(self, steps: list[Step], summary: Summary, write: bool) -> Summary:
        began = time.monotonic()
        writes = [s for s in steps if s.kind is not ActionKind.RECORD]
        for step in writes[:10]:
            summary.sample.append(f"{step.kind} {step.title!r} ({step.appointment_id})")
        if self.dry_run or not write:
            for step in writes:
                self._count(summary, step.kind)
            summary.seconds = time.monotonic() - began
            return summary
        if self.record:
            executor = self._executor()
            for step in steps:
                if step.kind is ActionKind.RECORD:
                    executor.perform(self._action(step, None), self._subject(step))
            self._flush()
        total = len(writes)
        self.progress("writing", 0, total)
        chunks = [writes[i : i + CHUNK] for i in range(0, len(writes), CHUNK)]
        # Render the next chunk while the server answers this one's writes; one
        # chunk ahead at most, so a large run holds two chunks' bodies, not all.
        try:
            with (
                ThreadPoolExecutor(max_workers=1) as renderer,
                ThreadPoolExecutor(max_workers=self.concurrency) as pool,
            ):
                self._write_chunks(chunks, summary, renderer, pool, total)
        except StorageError as exc:
            summary.stopped = exc.message
        finally:
            self._flush()  # after the pools: writes still in flight were confirmed or not
            for opened in self._opened:
                opened.close()
            self._opened.clear()
        summary.seconds = time.monotonic() - began
        return summary

    def _write_chunks(
        self,
        chunks: list[list[Step]],
        summary: Summary,
        renderer: ThreadPoolExecutor,
        pool: ThreadPoolExecutor,
        total: int,
    ) -> None:
        done = 0
        ahead = renderer.submit(self._render_chunk, chunks[0]) if chunks else None
        for number, chunk in enumerate(chunks):
            assert ahead is not None
            bodies = ahead.result()
            if number + 1 < len(chunks):
                ahead = renderer.submit(self._render_chunk, chunks[number + 1])
            if self.copies is not None:
                # The records of the copies this chunk writes over claim no
                # content until the writes are recorded (see projections.executor).
                writing = (ActionKind.CREATE, ActionKind.UPDATE)
                self.copies.doubt([s.appointment_id for s in chunk if s.kind in writing])
            jobs = [(step, bodies.get(step.appointment_id)) for step in chunk]
            # One request at a time runs here: a pool thread would only add a
            # GIL hand-over per object between it and this loop.
            run_all = map if self.concurrency == 1 else pool.map
            for step, error in run_all(lambda job: self._execute(*job), jobs):
                if error == STOPPED:
                    continue
                done += 1
                RESYNC_WRITES.labels(self.kind, "ok" if error is None else "failed").inc()
                if error is None:
                    self._count(summary, step.kind)
                else:
                    summary.failed.append((step.appointment_id, error))
                self.progress("writing", done, total)
            self._flush()

    def _state(self, appointment_id: str) -> dict[str, Any]:
        if self.as_of is not None:
            return one_state(self.journal, appointment_id, self.as_of)
        (state,) = self.journal.journal_recorder.appointment_docs([appointment_id])
        return state

    def _render_chunk(self, chunk: list[Step]) -> dict[str, tuple[bytes, str]]:
        ids = [s.appointment_id for s in chunk if s.kind in (ActionKind.CREATE, ActionKind.UPDATE)]
        if self.as_of is not None:
            states = [one_state(self.journal, i, self.as_of) for i in ids]
        else:
            states = self.journal.journal_recorder.appointment_docs(ids)
        return {state["id"]: render(state) for state in states}

    @staticmethod
    def _count(summary: Summary, kind: ActionKind) -> None:
        if kind is ActionKind.CREATE:
            summary.created += 1
        elif kind is ActionKind.UPDATE:
            summary.updated += 1
        elif kind is ActionKind.DELETE:
            summary.deleted += 1

    def _executor(self) -> Executor:
        executor: Executor | None = getattr(self._local, "executor", None)
        if executor is None:
            if threading.current_thread() is threading.main_thread() or self.concurrency == 1:
                storage = self.storage
            else:
                assert self.open_storage is not None
                storage = self.open_storage()
                with self._lock:
                    self._opened.append(storage)
            executor = Executor(
                self.journal,
                storage,
                self.copies,
                self.account_id,
                self.calendar_url,
                self.cause,
                states=self._state,
            )
            self._local.executor = executor
        return executor

    @staticmethod
    def _action(step: Step, body: tuple[bytes, str] | None) -> Action:
        if body is None:
            return Action(step.kind, step.href, digest=step.digest, etag=step.etag)
        data, digest = body
        return Action(step.kind, step.href, data, digest, step.etag)

    @staticmethod
    def _subject(step: Step) -> Subject:
        return Subject(step.appointment_id, step.sequence, step.remote_digest)

    def _execute(self, step: Step, body: tuple[bytes, str] | None) -> tuple[Step, str | None]:
        if self._stopping.is_set():  # another write gave up on the server: do not start more
            return step, STOPPED
        with sync_context(
            account=self.account_id,
            appointment=step.appointment_id,
            correlation_id=self.cause().correlation_id,
        ):
            return self._write_one(step, body)

    def _write_one(self, step: Step, body: tuple[bytes, str] | None) -> tuple[Step, str | None]:
        executor = self._executor()
        try:
            self.limiter.wait()
            executor.perform(self._action(step, body), self._subject(step))
            return step, None
        except StorageError as exc:
            if exc.transient:  # the server kept failing past the retry policy: stop the run
                self._stopping.set()
                raise
            return step, exc.message

    @property
    def kind(self) -> str:
        """Return ``replay`` or ``backfill`` (a replay may delete, a backfill never does)."""
        return "replay" if self.delete else "backfill"

    def _flush(self) -> None:
        """Record confirmed writes (batched: a crash only repeats unrecorded ones)."""
        if self.copies is not None:
            self.copies.flush()
