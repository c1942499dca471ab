"""A first import is fetched, decided and recorded chunk by chunk, on SQLite and PostgreSQL.

The calendar is the in-memory storage port (the journal is real): with data
sent along with the delta (a server that answers sync-collection with calendar
data) and without (one that needs multigets).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from uuid import UUID

import pytest

from caljournal.adapters.cpu_pool import Job, ProcessPool
from caljournal.adapters.memory_storage import MemoryStorage
from caljournal.adapters.storage import Loaded, StorageError
from caljournal.adapters.syncstate import StateWrites
from caljournal.bootstrap import Container
from caljournal.domain.cause import Cause, Origin
from caljournal.projections import inbound_chunks
from caljournal.projections.inbound import Poller
from caljournal.projections.inbound_decide import parse_object
from tests.support.patience import MIN_WAIT

URL = "https://dav.example.org/calendars/alice/work/"
EVENT = (
    "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//tests//EN\r\nBEGIN:VEVENT\r\n"
    "UID:import-{n}@example.org\r\nDTSTAMP:20260101T000000Z\r\n"
    "DTSTART:202603{day:02d}T090000Z\r\nDTEND:202603{day:02d}T100000Z\r\n"
    "SUMMARY:Import {n}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
)


class Died(Exception):  # noqa: N818 - the process dies here
    """The process died at a commit (raised by the test's store)."""


def calendar(count: int, inline_data: bool) -> MemoryStorage:
    """Return a calendar holding ``count`` events."""
    storage = MemoryStorage(URL, inline_data=inline_data)
    for n in range(count):
        storage.put(f"{URL}import-{n}.ics", EVENT.format(n=n, day=1 + n % 28).encode())
    return storage


def small_chunks(monkeypatch: pytest.MonkeyPatch, size: int) -> None:
    """Make the poll fetch, decide and record ``size`` objects at a time."""
    monkeypatch.setattr(inbound_chunks, "BATCH", size)


def poller(container: Container, storage: MemoryStorage, account: str) -> Poller:
    """Return the production poller of ``account`` over ``storage``."""
    link = {"calendar_url": URL, "sync_tokens": True, "provider": "radicale"}
    return Poller(
        container.journal,
        storage,
        container.sync_state,
        account,
        link,
        lambda: Cause(Origin.CALDAV, "worker:test", f"poll-{uuid.uuid4()}"),
    )


class Watched:
    """The sync-state store, noting each commit's progress and the requests made before it."""

    def __init__(self, store: Any, storage: MemoryStorage, die_at: int | None = None) -> None:
        self.store = store
        self.storage = storage
        self.die_at = die_at
        self.commits: list[tuple[int | None, int]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def commit(self, aggregates: Any, writes: StateWrites) -> None:
        """Commit (or die before the ``die_at``-th commit), noting the progress written."""
        if self.die_at is not None and len(self.commits) == self.die_at:
            raise Died("the process died before this commit")
        self.store.commit(aggregates, writes)
        done = (writes.inbound or {}).get("import_done")
        self.commits.append((done, len(self.storage.requests)))


@pytest.mark.parametrize("inline_data", [True, False], ids=["data-inline", "multiget"])
def test_the_import_counter_moves_with_every_chunk_and_loads_interleave(
    container: Container, monkeypatch: pytest.MonkeyPatch, inline_data: bool
) -> None:
    small_chunks(monkeypatch, 4)
    storage = calendar(10, inline_data)
    account = str(uuid.uuid4())
    watched = Watched(container.sync_state, storage)
    polling = poller(container, storage, account)
    polling.store = watched

    report = polling.poll()

    assert report.counts == {"import": 10}
    assert [done for done, _ in watched.commits] == [4, 8, 10, 10]
    state = container.sync_state.inbound_state(account)
    assert (state.import_done, state.import_total) == (10, 10)
    requests_before = [asked for _, asked in watched.commits]
    if inline_data:
        # One request answered everything, before the first commit.
        assert storage.requests == ["sync-collection"] and requests_before[0] == 1
    else:
        # Chunks are loaded as the import goes, not all before the first commit: the
        # chunk after the one being recorded is decided (to know whether that one is
        # the last), and one more load may be on its way meanwhile.
        assert storage.requests == ["sync-collection"] + ["multiget"] * 3
        assert requests_before[0] in (3, 4) and requests_before[1:3] == [4, 4]


class Slow(MemoryStorage):
    """A calendar whose loads are watched: which chunk each began, and when to fail."""

    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__(URL, inline_data=False)
        self.fail_at = fail_at
        self.loads: list[str] = []
        self.third_load = threading.Event()

    def load(self, hrefs: Iterable[str]) -> Loaded:
        wanted = list(hrefs)
        self.loads.append(threading.current_thread().name)
        if len(self.loads) == 3:
            self.third_load.set()
        if self.fail_at == len(self.loads):
            raise StorageError("the server broke off the answer", status=503)
        return super().load(wanted)


def test_the_next_chunk_is_loaded_while_one_is_recorded(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    small_chunks(monkeypatch, 4)
    storage = Slow()
    for n in range(12):
        storage.put(f"{URL}import-{n}.ics", EVENT.format(n=n, day=1 + n % 28).encode())
    account = str(uuid.uuid4())
    waited: list[bool] = []
    polling = poller(container, storage, account)
    store = polling.store

    class Waiting(Watched):
        def commit(self, aggregates: Any, writes: StateWrites) -> None:
            if not waited:  # the first chunk's commit: the third chunk's load has begun
                waited.append(storage.third_load.wait(timeout=MIN_WAIT))
            super().commit(aggregates, writes)

    polling.store = Waiting(store, storage)
    report = polling.poll()

    assert report.counts == {"import": 12}
    # Without loading ahead, the third chunk would be loaded only after this commit
    # (the wait would time out): the second is decided before it, the third after.
    assert waited == [True]
    assert all(name.startswith("caljournal-load") for name in storage.loads)
    assert not [t for t in threading.enumerate() if t.name.startswith("caljournal-load")]


def test_a_load_that_fails_ahead_fails_the_poll_and_leaves_no_thread(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    small_chunks(monkeypatch, 4)
    storage = Slow(fail_at=2)
    for n in range(12):
        storage.put(f"{URL}import-{n}.ics", EVENT.format(n=n, day=1 + n % 28).encode())
    account = str(uuid.uuid4())

    with pytest.raises(StorageError, match="broke off"):
        poller(container, storage, account).poll()

    assert not [t for t in threading.enumerate() if t.name.startswith("caljournal-load")]
    state = container.sync_state.inbound_state(account)
    assert state.sync_token is None  # nothing moved on: the next poll starts over
    storage.fail_at = None
    report = poller(container, storage, account).poll()
    assert report.counts == {"import": 12}  # each object once


def test_an_import_that_died_midway_resumes_without_duplicates(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    small_chunks(monkeypatch, 3)
    storage = calendar(10, inline_data=True)
    account = str(uuid.uuid4())
    dying = poller(container, storage, account)
    dying.store = Watched(container.sync_state, storage, die_at=2)

    with pytest.raises(Died):
        dying.poll()
    recorded = container.sync_state.inbound_state(account)
    assert recorded.import_done == 6 and recorded.sync_token is None
    report = poller(container, storage, account).poll()

    assert report.counts == {"import": 4}
    assert container.sync_state.count_copies(account) == 10
    ids = {
        record.appointment_id
        for record in container.sync_state.copies_by_href(account, URL, None).values()
    }
    assert len(ids) == 10
    again = poller(container, storage, account).poll()
    assert again.idle and not again.counts


class Counted(ProcessPool):
    """A process pool that counts the items handed to it."""

    def __init__(self) -> None:
        super().__init__(1)
        self.items = 0

    def submit(self, function: Callable[[Any], Any], items: Sequence[Any]) -> Job[Any]:
        self.items += len(items)
        return super().submit(function, items)


@pytest.mark.parametrize("inline_data", [True, False], ids=["data-inline", "multiget"])
def test_a_poll_of_many_chunks_is_parsed_in_a_helper_process(
    container: Container, monkeypatch: pytest.MonkeyPatch, inline_data: bool
) -> None:
    small_chunks(monkeypatch, 4)
    helpers = Counted()
    try:
        single = poller(container, calendar(3, inline_data), str(uuid.uuid4()))
        single.pool = helpers
        assert single.poll().counts == {"import": 3}
        # One chunk: parsed in the poll's thread, no helper started.
        assert helpers.items == 0 and helpers.pids() == []

        helpers.warm(parse_object, MIN_WAIT)  # as in a worker that imported before
        storage = calendar(10, inline_data)
        account = str(uuid.uuid4())
        polling = poller(container, storage, account)
        polling.pool = helpers
        report = polling.poll()
        started = helpers.pids()
    finally:
        helpers.close()

    assert report.counts == {"import": 10}
    assert helpers.items == 10 and len(started) == 1  # every object went to the helper
    records = container.sync_state.copies_by_href(account, URL, None)
    assert sorted(records) == sorted(f"{URL}import-{n}.ics" for n in range(10))
    states = [container.appointments.get(None, UUID(r.appointment_id)) for r in records.values()]
    titles = [state["title"] for state in states]
    assert sorted(titles) == sorted(f"Import {n}" for n in range(10))
