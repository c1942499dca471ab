"""Verify the audit chain: recompute every entry's hash and name the first one that is wrong.

:func:`verify` walks one account's chain (``adapters.audit_chain``) in seq
order, a page at a time, and recomputes each entry's hash from the previous
entry's recorded hash and the stored event as the journal holds it now. It
stops at the first problem and names the entry:

* ``missing``: the chain skips a seq (a chain row was removed), the event an
  entry names is no longer in the journal, or the chain is shorter than an
  exported head.
* ``altered``: the entry's hash does not recompute: its event's state or topic
  changed, or the recorded hash itself was edited (two events' contents or two
  entries' hashes swapped show here, at the earlier of the two). Against an
  exported head: the entry at the head's seq no longer has the head's hash, so
  something at or before it changed and the chain was recomputed after it.
* ``reordered``: the event an entry names now sits at another journal position
  than when it was written (rows moved or swapped in the journal: both entries
  fail this way, the earlier is named), or two entries follow each other out
  of journal order (positions moved in the chain too: the earlier of the pair
  is named).
* ``inserted``: the journal holds an event of the account's aggregates that no
  entry names (named at the seq it would have, i.e. one after the entries
  before it in the journal), an entry names an event another entry already
  names, or an entry does not link: the chain's hashes run around it (the next
  entry recomputes from the entry before it).

The position is not part of the hash (see ``audit_chain.entry_hash``): a move
shows through the positions recorded in the chain rows, not through a hash.

An exported head (:class:`ExportedHead`) proves that nothing up to it changed
even when the whole chain was recomputed: the entry at its seq must still carry
its hash, and the chain must reach it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from hashlib import sha256
from typing import NamedTuple, TypeVar
from uuid import UUID

from caljournal.adapters.audit_chain import GENESIS, ChainHead
from caljournal.adapters.audit_report import (
    CHAIN_FORMAT,
    ExportedHead,
    HeadFormatError,
    Kind,
    Problem,
    VerifyReport,
)
from caljournal.adapters.recorders import JournalRecorder, SQLiteJournalRecorder

PAGE = 5000
T = TypeVar("T")


class Entry(NamedTuple):
    """A chain row with its stored event as the journal holds it now (see ``chain_window``)."""

    seq: int
    position: int
    originator_id: str
    originator_version: int
    topic: str
    entry_hash: str
    stored_position: int | None
    stored_topic: str | None
    stored_state: bytes | None


def _later(pool: ThreadPoolExecutor | None, call: Callable[[], T]) -> Callable[[], T]:
    """Start ``call`` on ``pool`` and return what waits for its result; without a pool, run it now.

    Only PostgreSQL gains from a second thread: its driver lets go of the
    interpreter while the server works. SQLite works inside this process, where
    a second thread only contends with the first (measured: slower).
    """
    if pool is not None:
        return pool.submit(call).result
    result = call()
    return lambda: result


def _pool(recorder: JournalRecorder) -> ThreadPoolExecutor | None:
    return (
        None if isinstance(recorder, SQLiteJournalRecorder) else ThreadPoolExecutor(max_workers=1)
    )


def _entries(recorder: JournalRecorder, account_id: str, page: int) -> Iterator[Entry]:
    # The next window is read while this one is hashed (see ``_later``).
    reader = _pool(recorder)
    try:
        after = 0
        pending = _later(reader, partial(recorder.chain_window, account_id, after, after + page))
        while True:
            rows = pending()
            if not rows:
                # Past a hole in the seqs (removed rows, or a forged far seq).
                following = recorder.chain_next_seq(account_id, after)
                if following is None:
                    return
                after = following - 1
                pending = _later(
                    reader, partial(recorder.chain_window, account_id, after, after + page)
                )
                continue
            after += page
            pending = _later(
                reader, partial(recorder.chain_window, account_id, after, after + page)
            )
            yield from map(Entry._make, rows)
    finally:
        if reader is not None:
            reader.shutdown(wait=True)


def _recompute(previous: str, entry: Entry) -> str | None:
    """Return the hash ``audit_chain.entry_hash`` gives the entry's stored event now."""
    state = entry.stored_state
    if state is None:
        return None
    originator = entry.originator_id
    if len(originator) != 36 or not originator.islower():
        originator = str(UUID(originator))
    # entry_hash inlined: verifying spends most of its time here.
    head = f"{previous}\n{originator}\n{entry.originator_version}\n{entry.stored_topic}\n"
    digest = sha256(f"{head}{len(state)}\n".encode())
    digest.update(state)
    return digest.hexdigest()


def _problem(kind: Kind, account_id: str, entry: Entry, detail: str) -> Problem:
    return Problem(
        kind,
        account_id,
        entry.seq,
        entry.position,
        entry.originator_id,
        entry.originator_version,
        detail,
    )


def verify(
    recorder: JournalRecorder,
    account_id: str,
    *,
    head: ExportedHead | None = None,
    page: int = PAGE,
) -> VerifyReport:
    """Walk one account's chain and return what it found (the first bad entry, if any).

    :raises HeadFormatError: when ``head`` belongs to another chain.
    """
    if head is not None and head.account != account_id:
        raise HeadFormatError(f"the head is of chain {head.account}, not of {account_id}")
    started = time.perf_counter()
    # Looking for events no entry names takes a scan of the account's events:
    # it may run beside the walk (see ``_later``); its answer is placed in the
    # walk's order after.
    side = _pool(recorder)
    try:
        strays = _later(side, partial(recorder.unchained_events, account_id, limit=1))
        walk = _walk(recorder, account_id, head, page)
        stray = next(iter(strays()), None)
    finally:
        if side is not None:
            side.shutdown(wait=True)
    problem = walk.problem
    if stray is not None and (walk.stopped_at is None or stray[0] < walk.stopped_at):
        problem = _stray(recorder, account_id, stray, walk)
    last = walk.last
    verified = (
        None if last is None else ChainHead(account_id, last.seq, last.position, last.entry_hash)
    )
    checked = walk.expected - 1
    return VerifyReport(account_id, checked, time.perf_counter() - started, problem, verified)


@dataclass(frozen=True)
class _Walked:
    """Where a walk stopped: its problem and the journal position of the entry it stopped at.

    ``stopped_at`` is None when the walk reached the chain's end; ``gap`` when
    the problem is an entry missing right after ``last``.
    """

    problem: Problem | None
    stopped_at: int | None
    last: Entry | None
    expected: int
    gap: bool


def _walk(
    recorder: JournalRecorder, account_id: str, head: ExportedHead | None, page: int
) -> _Walked:
    entries = _entries(recorder, account_id, page)
    # The walk keeps the two hashes before the current entry: an entry that
    # does not link shows as its successor recomputing from the hash before it.
    before, previous = GENESIS, GENESIS
    last: Entry | None = None
    expected = 1
    for entry in entries:
        if entry.seq != expected:
            gone = f"the chain goes from entry {expected - 1} to entry {entry.seq}"
            problem = Problem("missing", account_id, expected, None, None, None, gone)
            return _Walked(problem, entry.position, last, expected, gap=True)
        if (
            entry.stored_position == entry.position
            and (last is None or entry.position > last.position)
            and _recompute(previous, entry) == entry.entry_hash
        ):
            if head is not None and entry.seq == head.seq and entry.entry_hash != head.entry_hash:
                problem = _problem(
                    "altered",
                    account_id,
                    entry,
                    f"it does not carry the exported head's hash ({head.verified_at}): the "
                    "chain up to it was changed and recomputed",
                )
                return _Walked(problem, entry.position, last, expected, gap=False)
            before, previous, last = previous, entry.entry_hash, entry
            expected += 1
            continue
        problem = _fault(recorder, account_id, entries, entry, last, before, previous)
        return _Walked(problem, entry.position, last, expected, gap=False)
    short = None
    if head is not None and expected - 1 < head.seq:
        short = Problem(
            "missing",
            account_id,
            expected,
            None,
            None,
            None,
            f"the chain ends at entry {expected - 1}, before the exported head's entry {head.seq}",
        )
    return _Walked(short, None, last, expected, gap=short is not None)


def _stray(
    recorder: JournalRecorder, account_id: str, stray: tuple[int, UUID, int], walk: _Walked
) -> Problem:
    """Return the problem of an event no entry names, found before where the walk stopped."""
    position, originator, version = stray
    if walk.gap and (walk.last is None or position > walk.last.position):
        # Right where the chain lacks an entry: the chain row is gone, its event is not.
        return Problem(
            "missing",
            account_id,
            walk.expected,
            position,
            str(originator),
            version,
            "the chain row is gone and its event has no entry",
        )
    seq = recorder.chain_count_before(account_id, position) + 1
    return Problem(
        "inserted",
        account_id,
        seq,
        position,
        str(originator),
        version,
        "the journal holds this event and no entry names it",
    )


def _fault(
    recorder: JournalRecorder,
    account_id: str,
    entries: Iterator[Entry],
    entry: Entry,
    last: Entry | None,
    before: str,
    previous: str,
) -> Problem:
    """Return what is wrong with an entry that failed a check (its predecessors were fine)."""
    if last is not None and _recompute(before, entry) == entry.entry_hash:
        return _problem(
            "inserted",
            account_id,
            last,
            f"the entry does not link: entry {entry.seq} follows entry {last.seq - 1}",
        )
    following = next(entries, None)
    if following is not None and _recompute(previous, following) == following.entry_hash:
        return _problem(
            "inserted",
            account_id,
            entry,
            f"the entry does not link: entry {following.seq} follows entry {entry.seq - 1}",
        )
    if entry.stored_state is None:
        return _problem("missing", account_id, entry, "the journal no longer holds its event")
    if entry.stored_position != entry.position:
        return _problem(
            "reordered",
            account_id,
            entry,
            f"its event is now at journal position {entry.stored_position}, "
            f"it was written at {entry.position}",
        )
    if last is not None and entry.position <= last.position:
        return _out_of_order(recorder, account_id, last, entry)
    if entry.stored_topic != entry.topic:
        detail = "its event's topic changed"
    elif following is None:
        detail = "its event or its recorded hash changed"
    elif _recompute(entry.entry_hash, following) == following.entry_hash:
        detail = "its event's stored state changed"
    else:
        detail = "its recorded hash changed"
    return _problem("altered", account_id, entry, detail)


def _out_of_order(recorder: JournalRecorder, account_id: str, last: Entry, entry: Entry) -> Problem:
    earlier = [
        seq
        for account, seq in recorder.chain_entries_naming(
            UUID(entry.originator_id), entry.originator_version
        )
        if (account, seq) != (account_id, entry.seq)
    ]
    if earlier:
        return _problem(
            "inserted", account_id, entry, f"entry {earlier[0]} already names its event"
        )
    return _problem(
        "reordered",
        account_id,
        last,
        f"entry {entry.seq} comes before it in the journal (position {entry.position} "
        f"≤ {last.position})",
    )


def verify_all(recorder: JournalRecorder, *, page: int = PAGE) -> list[VerifyReport]:
    """Verify every chain, then look for events that belong to no chain at all.

    The last report (account None) covers those events.
    """
    reports = [verify(recorder, account, page=page) for account in recorder.chain_accounts()]
    started = time.perf_counter()
    orphan = next(iter(recorder.unchained_events(None, limit=1)), None)
    problem = None
    if orphan is not None:
        position, originator, version = orphan
        problem = Problem(
            "inserted",
            None,
            None,
            position,
            str(originator),
            version,
            "the journal holds this event and no chain names its aggregate",
        )
    reports.append(VerifyReport(None, 0, time.perf_counter() - started, problem, None))
    return reports


__all__ = [
    "CHAIN_FORMAT",
    "ExportedHead",
    "HeadFormatError",
    "Problem",
    "VerifyReport",
    "verify",
    "verify_all",
]
