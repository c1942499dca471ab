"""The production sync code wired to an in-memory calendar and an SQLite journal, with crashes.

Used by the sync state machine (``tests/unit/test_sync_state_machine.py``). The
journal is a real :class:`Journal` on an in-memory SQLite database that outlives
the handles opened on it, so a *restart* (:meth:`SyncWorld.restart`) opens a new
journal and builds new pushers and pollers: nothing in memory survives it, only
the database and the calendar. The calendar is :class:`SyncCalendar`, a
:class:`MemoryStorage` with a trash bin that can also let one write of the sync
code through and then stop the process (:class:`Crash`); a poll can die at one
batch's commit, before it, inside its transaction or after it
(:meth:`SyncWorld.poll`).

Production objects are built in one place only: :func:`make_pusher`,
:func:`make_poller` and :func:`make_resync`, each over the calendar storage and
the journal's SQL sync-state store (:class:`SQLSyncState`).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from unittest import mock

from eventsourcing.utils import get_topic

from caljournal.adapters.journal import Journal, SQLiteJournalRecorder
from caljournal.adapters.memory_storage import MemoryStorage
from caljournal.adapters.storage import Written
from caljournal.adapters.syncstate_sql import SQLSyncState
from caljournal.domain.cause import Cause, Origin
from caljournal.projections import inbound_chunks
from caljournal.projections.inbound import CheckPolicy, Poller, PollReport
from caljournal.projections.push import Pusher, plan
from caljournal.projections.resync import Resync, Summary

ACCOUNT = "3f2c8a64-5b1e-4d7a-9c0e-2a6b8d4f1e90"
URL = "https://dav.example.org/calendars/alice/work/"
BATCH = 2  # pending pushes per query, small so that a pass takes several


class Crash(Exception):  # noqa: N818 - the process dies; not an error the code handles
    """The process died here (raised only by the test doubles)."""


def worker_cause() -> Cause:
    """Return the cause the worker records its events with."""
    return Cause(Origin.CALDAV, "worker:state-machine", f"sync-{uuid.uuid4()}")


# -- the one place that builds production objects ------------------------------------


def make_pusher(journal: Journal, storage: SyncCalendar, store: SQLSyncState) -> Pusher:
    """Return the production pusher of the account, writing into ``storage``."""
    return Pusher(journal, storage, store, ACCOUNT, URL, worker_cause)  # type: ignore[arg-type]


def make_poller(
    journal: Journal, storage: SyncCalendar, store: SQLSyncState, mode: PollMode
) -> Poller:
    """Return the production poller of the account, reading ``storage``."""
    link = {"calendar_url": URL, "sync_tokens": mode.sync_tokens, "provider": "radicale"}
    return Poller(
        journal,
        storage,  # type: ignore[arg-type]
        store,
        ACCOUNT,
        link,
        worker_cause,
        check=mode.check,
    )


def make_resync(
    journal: Journal, storage: SyncCalendar, store: SQLSyncState, *, delete: bool
) -> Resync:
    """Return a production backfill (``delete`` False) or replay run that records copies."""
    return Resync(
        journal,
        storage,  # type: ignore[arg-type]
        store,
        ACCOUNT,
        URL,
        worker_cause,
        delete=delete,
        record=True,
    )


# -- the calendar ----------------------------------------------------------------------


class SyncCalendar:
    """The calendar storage port in memory, with a trash bin and a crash switch.

    Every object deleted (by the sync code or another client) goes to
    ``trash``, whence another client may restore it. ``written`` lists the
    hrefs the sync code wrote since it was last cleared. With ``crash_after``
    set to ``n``, the sync code's ``n``-th next write reaches the calendar and
    then the process dies (:class:`Crash`): the answer is never processed.
    """

    def __init__(self, drops_short_lived: bool = False, inline_data: bool = True) -> None:
        self.storage = MemoryStorage(
            URL, drops_short_lived=drops_short_lived, inline_data=inline_data
        )
        self.calendar_url = URL
        self.trash: dict[str, bytes] = {}
        self.written: list[str] = []
        self.crash_after: int | None = None

    @property
    def objects(self) -> dict[str, tuple[bytes, str]]:
        """Return the calendar's objects: href → (data, ETag)."""
        return self.storage.objects

    def __getattr__(self, name: str) -> Any:
        # Reading (listing, changes_since, state_tag, load, fetch, close) as the port does.
        return getattr(self.storage, name)

    def create(self, href: str, data: bytes) -> Written:
        """Create an object (the port's ``create``)."""
        written = self.storage.create(href, data)
        self._wrote(href)
        return written

    def update(self, href: str, data: bytes, etag: str | None) -> Written:
        """Replace an object (the port's ``update``)."""
        written = self.storage.update(href, data, etag)
        self._wrote(href)
        return written

    def delete(self, href: str, etag: str | None) -> None:
        """Delete an object (the port's ``delete``); it goes to the trash."""
        before = self.storage.objects.get(href)
        self.storage.delete(href, etag)
        if before is not None:
            self.trash[href] = before[0]
        self._wrote(href)

    def _wrote(self, href: str) -> None:
        self.written.append(href)
        if self.crash_after is None:
            return
        if self.crash_after == 0:
            self.crash_after = None
            raise Crash(f"the process died after writing {href}")
        self.crash_after -= 1

    # -- another client of the same calendar --------------------------------------

    def put(self, href: str, data: bytes) -> str:
        """Store an object unconditionally; return its ETag."""
        return self.storage.put(href, data)

    def remove(self, href: str) -> None:
        """Delete an object unconditionally; it goes to the trash."""
        self.trash[href] = self.storage.objects[href][0]
        self.storage.remove(href)


# -- one worker process ----------------------------------------------------------------


@dataclass(frozen=True)
class PollMode:
    """How the account's server is asked what changed."""

    name: str
    sync_tokens: bool
    check: CheckPolicy
    drops_short_lived: bool = False
    # Whether the server sends calendar data with a listing or delta (Radicale) or
    # only ETags, so that changed objects are loaded by multiget (Xandikos).
    inline_data: bool = True


NO_CHECK = CheckPolicy(interval=3600, spacing=3600)
MODES = (
    PollMode("ctag", sync_tokens=False, check=NO_CHECK),
    PollMode("delta", sync_tokens=True, check=NO_CHECK),
    # Deltas that miss short-lived objects, made up for by a check after our writes,
    # and that carry ETags only (like Xandikos): changed objects are loaded by multiget.
    PollMode(
        "delta+check",
        sync_tokens=True,
        check=CheckPolicy(interval=3600, spacing=0),
        drops_short_lived=True,
        inline_data=False,
    ),
)


@dataclass(frozen=True)
class PollCrash:
    """Where a poll dies: at its ``save``-th batch, ``before`` / ``inside`` / ``after`` commit."""

    save: int
    when: str


class SyncWorld:
    """A journal, a calendar, and the worker process that syncs them (restartable)."""

    def __init__(self, mode: PollMode) -> None:
        self.mode = mode
        self.calendar = SyncCalendar(
            drops_short_lived=mode.drops_short_lived, inline_data=mode.inline_data
        )
        self._dbname = f"file:sync-machine-{uuid.uuid4().hex}?mode=memory&cache=shared"
        self.journal = self._open()
        self.store = SQLSyncState(self.journal)
        self.pusher = make_pusher(self.journal, self.calendar, self.store)
        self.poller = make_poller(self.journal, self.calendar, self.store, mode)
        self.restarts = 0

    def _open(self) -> Journal:
        env = {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": self._dbname,
            "APPLICATION_RECORDER_TOPIC": get_topic(SQLiteJournalRecorder),
            "CREATE_TABLE": "y",
        }
        return Journal(env={**env, **{f"CALJOURNAL_{k}": v for k, v in env.items()}})

    def restart(self) -> None:
        """Start the process anew: a new journal handle, store, pusher and poller."""
        old, self.journal = self.journal, self._open()
        old.close()  # the new handle keeps the in-memory database alive
        self.store = SQLSyncState(self.journal)
        self.pusher = make_pusher(self.journal, self.calendar, self.store)
        self.poller = make_poller(self.journal, self.calendar, self.store, self.mode)
        self.restarts += 1

    def close(self) -> None:
        """Close the journal (the in-memory database goes with it)."""
        self.journal.close()

    @property
    def recorder(self) -> SQLiteJournalRecorder:
        """Return the journal's recorder (events, query tables)."""
        recorder = self.journal.journal_recorder
        assert isinstance(recorder, SQLiteJournalRecorder)
        return recorder

    # -- the worker's jobs --------------------------------------------------------------

    def push_pass(self) -> None:
        """Push everything pending, as ``AccountPusher.run_pass`` does.

        :raises Crash: when the calendar's crash switch fires: the batch's
            confirmed writes are not recorded (the pusher is gone with them).
        """
        for _ in range(20):
            items = self.store.pending_pushes(ACCOUNT, URL, 0, BATCH)
            if not items:
                return
            self.pusher.begin(items)
            for item in items:
                self.pusher.push(item, plan(item, URL))
            self.pusher.flush()
        pending = self.store.pending_pushes(ACCOUNT, URL, 0, 100)
        raise AssertionError(f"still pending after 20 passes: {pending}")

    def poll(self, crash: PollCrash | None = None) -> PollReport:
        """Poll once; with ``crash``, in batches of one decision, dying where it says.

        :raises Crash: when the poll reached the batch ``crash`` names.
        """
        if crash is None:
            return self.poller.poll()
        with (
            mock.patch.object(inbound_chunks, "BATCH", 1),
            self._dying_save(crash),
        ):
            return self.poller.poll()

    def resync(self, *, delete: bool) -> Summary:
        """Run a backfill (or, with ``delete``, a replay) of the account."""
        run = make_resync(self.journal, self.calendar, self.store, delete=delete)
        steps, summary = run.plan()
        return run.run(steps, summary)

    @contextlib.contextmanager
    def _dying_save(self, crash: PollCrash) -> Iterator[None]:
        """Let the poll's ``crash.save``-th commit die where ``crash.when`` says."""
        store = self.store
        real_commit: Callable[..., Any] = store.commit
        recorder = self.recorder
        real_insert = recorder._insert_events
        calls = 0

        def dying_insert(*args: Any, **kwargs: Any) -> Any:
            real_insert(*args, **kwargs)
            raise Crash("the process died inside the poll's commit")

        def dying_execute_many(statements: Any) -> None:
            # A commit without events writes its rows in a transaction of its own.
            with recorder.datastore.transaction(commit=True) as cursor:
                for sql, params in statements:
                    cursor.executemany(sql, [list(p) for p in params])
                raise Crash("the process died inside the poll's commit")

        def commit(aggregates: Any, writes: Any) -> None:
            nonlocal calls
            calls += 1
            if calls - 1 != crash.save:
                real_commit(aggregates, writes)
                return
            before = self.snapshot()
            try:
                if crash.when == "before":
                    raise Crash("the process died before the poll's commit")
                if crash.when == "inside":
                    with (
                        mock.patch.object(recorder, "_insert_events", dying_insert),
                        mock.patch.object(recorder, "_execute_many", dying_execute_many),
                    ):
                        real_commit(aggregates, writes)
                    raise AssertionError("the batch was committed without writing anything")
                real_commit(aggregates, writes)
                raise Crash("the process died after the poll's commit")
            except Crash:
                if crash.when != "after":
                    assert self.snapshot() == before, "a batch that died was partly committed"
                raise

        with mock.patch.object(store, "commit", commit):
            yield

    def snapshot(self) -> tuple[Any, ...]:
        """Return what the database holds of the account's sync (events, copies, inbound)."""
        store = self.store
        return (
            self.recorder.max_notification_id(),
            store.copies(ACCOUNT),
            store.inbound_state(ACCOUNT),
            store.quarantined(ACCOUNT),
        )

    def notifications_since(self, position: int) -> list[Any]:
        """Return the journal's notifications after ``position``."""
        return list(
            self.recorder.select_notifications(
                start=position, limit=10_000, inclusive_of_start=False
            )
        )

    def position(self) -> int:
        """Return the journal's last notification id."""
        return self.recorder.max_notification_id() or 0
