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

from caljournal.adapters.caldav_client import CalDAVError, PreconditionFailedError, ServerAccess
from caljournal.adapters.calendar_reader import CalendarReader
from caljournal.adapters.calendar_writer import CalendarWriter
from caljournal.adapters.ical import ICalendarError, content_hash, from_ical
from caljournal.adapters.journal import Journal
from caljournal.adapters.providers import ProviderProfile
from caljournal.adapters.readmodel import APPOINTMENTS
from caljournal.adapters.retry import RetryPolicy
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
    """One planned write."""

    kind: str  # create | update | delete | present
    appointment_id: str
    href: str
    etag: str | None = None
    digest: str | None = None
    sequence: int = 0
    title: str = ""


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
    reader: CalendarReader, progress: Callable[[int, int], None] | None = None
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
    p = recorder.placeholder
    while True:
        rows = recorder._fetch(  # noqa: SLF001 - a paged scan of the query table
            f"SELECT id, doc FROM {recorder.qualify}{APPOINTMENTS} WHERE account_id = {p} "
            f"AND id > {p} ORDER BY id LIMIT {PAGE}",
            [account_id, last],
        )
        if not rows:
            return
        for row in rows:
            last = row["id"]
            if as_of is None:
                import json

                yield json.loads(row["doc"])
                continue
            state: Any = None
            for event in journal.events.get(uuid.UUID(row["id"])):
                if event.timestamp > as_of:
                    break
                state = event.mutate(state)
            if state is not None:
                yield state.state()


def one_state(journal: Journal, appointment_id: str, as_of: datetime | None) -> dict[str, Any]:
    """Return one appointment's state (at ``as_of`` when given)."""
    state: Any = None
    for event in journal.events.get(uuid.UUID(appointment_id)):
        if as_of is not None and event.timestamp > as_of:
            break
        state = event.mutate(state)
    assert state is not None
    return dict(state.state())


def plan_steps(
    states: Iterator[dict[str, Any]],
    remote: dict[str, RemoteCopy],
    calendar_url: str,
    delete: bool,
) -> Iterator[Step]:
    """Yield what to write so the calendar shows ``states`` (pure but for rendering)."""
    for state in states:
        uid = state.get("calendar_uid") or f"{state['id']}@caljournal"
        copy = remote.get(uid)
        if state["status"] != "booked":
            if delete and copy is not None:
                yield Step(
                    "delete",
                    state["id"],
                    copy.href,
                    copy.etag,
                    sequence=state["sequence"],
                    title=state["title"],
                )
            continue
        # Steps keep no rendered data (it is rendered when written), so a run
        # over 50,000 appointments holds only a small record per appointment.
        sequence, title = state["sequence"], state["title"]
        if copy is None:
            href = href_for(calendar_url, state["id"])
            yield Step("create", state["id"], href, None, None, sequence, title)
            continue
        digest = content_hash(render(state)[0])
        if copy.digest == digest:
            yield Step("present", state["id"], copy.href, copy.etag, digest, sequence, title)
        else:
            yield Step("update", state["id"], copy.href, copy.etag, digest, sequence, title)


class Resync:
    """One backfill or replay run for one account and one calendar."""

    def __init__(
        self,
        journal: Journal,
        account_id: str,
        access: ServerAccess,
        profile: ProviderProfile,
        calendar_url: str,
        *,
        delete: bool,
        record: bool,
        as_of: datetime | None = None,
        dry_run: bool = False,
        concurrency: int = 1,
        rate: float | None = None,
        progress: Callable[[str, int, int], None] | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.journal = journal
        self.account_id = account_id
        self.access = access.at(calendar_url)
        self.profile = profile
        self.calendar_url = calendar_url if calendar_url.endswith("/") else calendar_url + "/"
        self.delete = delete
        self.record = record
        self.as_of = as_of
        self.dry_run = dry_run
        self.concurrency = max(1, concurrency)
        self.limiter = RateLimiter(rate)
        self.progress = progress or (lambda phase, done, total: None)
        self.retry = retry or RetryPolicy.patient(300.0)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._unrecorded: list[dict[str, Any]] = []
        self._stopping = threading.Event()

    def plan(self) -> tuple[list[Step], Summary]:
        """Read the calendar and return the writes to make (nothing is written).

        :raises CalDAVError: when the calendar cannot be read (transient faults
            are retried as the run's retry policy allows).
        """
        reader = CalendarReader(self.access, self.calendar_url, retry=self.retry)
        try:
            remote, _ = scan(reader, lambda d, t: self.progress("reading the calendar", d, t))
        finally:
            reader.close()
        states = appointment_states(self.journal, self.account_id, self.as_of)
        steps = list(plan_steps(states, remote, self.calendar_url, self.delete))
        ours = {s.href for s in steps}
        summary = Summary(dry_run=self.dry_run)
        summary.foreign_left_alone = sum(1 for c in remote.values() if c.href not in ours)
        summary.already_present = sum(1 for s in steps if s.kind == "present")
        return steps, summary

    def run(self, steps: list[Step], summary: Summary, write: bool = True) -> Summary:
        """Make the writes (or only count them on a dry run, or when ``write`` is False).

        A server that keeps failing past the retry policy stops the run: the
        writes confirmed so far are recorded and ``summary.stopped`` says why
        (a later run finishes the rest).
        """
        began = time.monotonic()
        writes = [s for s in steps if s.kind != "present"]
        for step in writes[:10]:
            summary.sample.append(f"{step.kind} {step.title!r} ({step.appointment_id})")
        if self.dry_run or not write:
            for step in writes:
                self._count(summary, step.kind)
            summary.seconds = time.monotonic() - began
            return summary
        if self.record:
            self._record([s for s in steps if s.kind == "present"], present=True)
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
        except CalDAVError as exc:
            summary.stopped = exc.message
        finally:
            self._flush()  # after the pools: writes still in flight were confirmed or not
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
            jobs = [(step, bodies.get(step.appointment_id)) for step in chunk]
            # One request at a time runs here: a pool thread would only add a
            # GIL hand-over per object between it and this loop.
            run_all = map if self.concurrency == 1 else pool.map
            for step, error in run_all(lambda job: self._execute(*job), jobs):
                if error == STOPPED:
                    continue
                done += 1
                if error is None:
                    self._count(summary, step.kind)
                else:
                    summary.failed.append((step.appointment_id, error))
                self.progress("writing", done, total)
            self._flush()

    def _render_chunk(self, chunk: list[Step]) -> dict[str, tuple[bytes, str]]:
        ids = [s.appointment_id for s in chunk if s.kind in ("create", "update")]
        if self.as_of is not None:
            states = [one_state(self.journal, i, self.as_of) for i in ids]
        else:
            states = self.journal.journal_recorder.appointment_docs(ids)
        return {state["id"]: render(state) for state in states}

    @staticmethod
    def _count(summary: Summary, kind: str) -> None:
        if kind == "create":
            summary.created += 1
        elif kind == "update":
            summary.updated += 1
        elif kind == "delete":
            summary.deleted += 1

    def _writer(self) -> CalendarWriter:
        writer = getattr(self._local, "writer", None)
        if writer is None:
            writer = CalendarWriter(self.access, self.profile, self.retry)
            self._local.writer = writer
        return writer

    def _execute(self, step: Step, body: tuple[bytes, str] | None) -> tuple[Step, str | None]:
        if self._stopping.is_set():  # another write gave up on the server: do not start more
            return step, STOPPED
        writer = self._writer()
        try:
            self.limiter.wait()
            if step.kind == "delete":
                try:
                    writer.delete(step.href, step.etag)
                except PreconditionFailedError:
                    writer.delete(step.href, None)
                self._record([step], present=False)
                return step, None
            assert body is not None
            data, digest = body
            step = Step(
                step.kind,
                step.appointment_id,
                step.href,
                step.etag,
                digest,
                step.sequence,
                step.title,
            )
            try:
                if step.kind == "create":
                    written = writer.create(step.href, data)
                else:
                    written = writer.update(step.href, data, step.etag)
            except PreconditionFailedError:
                # Written meanwhile (by the worker, or a run before a crash): look again.
                found = writer.fetch(step.href)
                if found is not None and content_hash(found[0]) == digest:
                    written_etag = found[1]
                else:
                    self.limiter.wait()
                    written_etag = writer.update(step.href, data, found[1] if found else None).etag
                self._record([step], present=True, etag=written_etag)
                return step, None
            self._record([step], present=True, etag=written.etag)
            return step, None
        except CalDAVError as exc:
            if exc.transient:  # the server kept failing past the retry policy: stop the run
                self._stopping.set()
                raise
            return step, exc.message

    def _record(self, steps: list[Step], *, present: bool, etag: str | None = None) -> None:
        if not self.record or not steps:
            return
        now = int(time.time() * 1e6)
        records = [
            {
                "appointment_id": s.appointment_id,
                "account_id": self.account_id,
                "calendar_url": self.calendar_url,
                "href": s.href,
                "etag": etag if etag is not None else s.etag,
                "pushed_sequence": s.sequence,
                "content_hash": s.digest,
                "present": 1 if present else 0,
                "failed_sequence": None,
                "failure": None,
                "updated_us": now,
            }
            for s in steps
        ]
        with self._lock:
            self._unrecorded.extend(records)
            full = len(self._unrecorded) >= CHUNK
        if full:
            self._flush()

    def _flush(self) -> None:
        """Record confirmed writes (batched: a crash only repeats unrecorded ones)."""
        with self._lock:
            batch, self._unrecorded = self._unrecorded, []
        if batch:
            self.journal.journal_recorder.record_copies(batch)
