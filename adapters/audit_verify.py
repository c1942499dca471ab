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

import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Literal

from caljournal.adapters.audit_chain import GENESIS, ChainEntry, entry_hash
from caljournal.adapters.recorders import JournalRecorder

# Version of the chain's hash layout (``audit_chain.entry_hash``); an exported
# head from another layout cannot be compared.
CHAIN_FORMAT = 1
PAGE = 5000

Kind = Literal["missing", "altered", "reordered", "inserted"]


class HeadFormatError(ValueError):
    """An exported head that cannot be read or does not fit the chain it is checked against."""


@dataclass(frozen=True)
class Problem:
    """The first bad entry of a chain."""

    kind: Kind
    account_id: str | None
    seq: int | None
    position: int | None
    originator_id: str | None
    originator_version: int | None
    detail: str

    @property
    def message(self) -> str:
        """Return one line naming the entry and what is wrong with it."""
        where = f"entry {self.seq}" if self.seq is not None else "an event"
        event = (
            f" (event {self.originator_id} v{self.originator_version}"
            f"{'' if self.position is None else f' at position {self.position}'})"
            if self.originator_id is not None
            else ""
        )
        return f"{self.kind}: {where}{event} of chain {self.account_id}: {self.detail}"


@dataclass(frozen=True)
class ExportedHead:
    """A verified chain head, kept elsewhere to prove later that nothing before it changed."""

    account: str
    seq: int
    position: int
    entry_hash: str
    verified_at: str
    chain_format: int = CHAIN_FORMAT

    def to_json(self) -> str:
        """Return the head as a JSON document."""
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ExportedHead:
        """Read a head written by :meth:`to_json`.

        :raises HeadFormatError: when the text is not such a document.
        """
        try:
            doc = json.loads(text)
            head = cls(
                account=str(doc["account"]),
                seq=int(doc["seq"]),
                position=int(doc["position"]),
                entry_hash=str(doc["entry_hash"]),
                verified_at=str(doc["verified_at"]),
                chain_format=int(doc["chain_format"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise HeadFormatError(f"not an exported chain head: {exc}") from None
        if head.chain_format != CHAIN_FORMAT:
            raise HeadFormatError(
                f"the head is of chain format {head.chain_format}; this version reads "
                f"{CHAIN_FORMAT}"
            )
        if head.seq < 1 or len(head.entry_hash) != 64:
            raise HeadFormatError("not an exported chain head: bad seq or entry_hash")
        return head


@dataclass(frozen=True)
class VerifyReport:
    """What a verification checked, how long it took, and the first problem if any."""

    account_id: str | None
    checked: int
    seconds: float
    problem: Problem | None
    last: ChainEntry | None

    @property
    def ok(self) -> bool:
        """Return True when the chain verified clean."""
        return self.problem is None

    def export(self, now: datetime | None = None) -> ExportedHead:
        """Return the verified head to keep elsewhere.

        :raises ValueError: when the chain did not verify clean or is empty.
        """
        if self.problem is not None or self.last is None or self.account_id is None:
            raise ValueError("only a clean, non-empty chain has a head to export")
        stamp = (now or datetime.now(UTC)).isoformat(timespec="seconds")
        last = self.last
        return ExportedHead(self.account_id, last.seq, last.position, last.entry_hash, stamp)


def _entries(recorder: JournalRecorder, account_id: str, page: int) -> Iterator[ChainEntry]:
    after = 0
    while True:
        batch = recorder.audit_entries(account_id, after_seq=after, limit=page)
        yield from batch
        if len(batch) < page:
            return
        after = batch[-1].seq


def _recompute(previous: str, entry: ChainEntry) -> str | None:
    if entry.stored is None:
        return None
    return entry_hash(
        previous,
        entry.originator_id,
        entry.originator_version,
        entry.stored.topic,
        entry.stored.state,
    )


def _problem(kind: Kind, entry: ChainEntry, detail: str) -> Problem:
    return Problem(
        kind,
        entry.account_id,
        entry.seq,
        entry.position,
        str(entry.originator_id),
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
    # The first event of the account's aggregates that no entry names, if any.
    stray = next(iter(recorder.unchained_events(account_id, limit=1)), None)
    entries = _entries(recorder, account_id, page)
    # The walk keeps the two entries before the current one: an entry that does
    # not link shows as its successor recomputing from the hash before it.
    before, previous = GENESIS, GENESIS
    last: ChainEntry | None = None
    checked, expected = 0, 1
    problem: Problem | None = None
    for entry in entries:
        if entry.seq != expected:
            problem = Problem(
                "missing",
                account_id,
                expected,
                None,
                None,
                None,
                f"the chain goes from entry {expected - 1} to entry {entry.seq}",
            )
            if stray is not None and stray[0] < entry.position:
                problem = Problem(
                    "missing",
                    account_id,
                    expected,
                    stray[0],
                    str(stray[1]),
                    stray[2],
                    f"the chain row is gone (the chain goes from entry {expected - 1} to "
                    f"{entry.seq}) and its event has no entry",
                )
            break
        if stray is not None and stray[0] < entry.position:
            position, originator, version = stray
            problem = Problem(
                "inserted",
                account_id,
                expected,
                position,
                str(originator),
                version,
                f"the journal holds this event before entry {entry.seq}'s, and no entry names it",
            )
            break
        recomputed = _recompute(previous, entry)
        if entry.stored is None:
            fault: tuple[Kind, str] | None = ("missing", "the journal no longer holds its event")
        elif entry.stored_position != entry.position:
            fault = (
                "reordered",
                f"its event is now at journal position {entry.stored_position}, "
                f"it was written at {entry.position}",
            )
        elif last is not None and entry.position <= last.position:
            fault = ("reordered", "")
        elif recomputed != entry.entry_hash:
            fault = ("altered", "")
        else:
            fault = None
        if fault is not None:
            kind, detail = fault
            if last is not None and _recompute(before, entry) == entry.entry_hash:
                problem = _problem(
                    "inserted",
                    last,
                    f"the entry does not link: entry {entry.seq} follows entry {last.seq - 1}",
                )
                break
            following = next(entries, None)
            if following is not None and _recompute(previous, following) == following.entry_hash:
                problem = _problem(
                    "inserted",
                    entry,
                    f"the entry does not link: entry {following.seq} follows entry {entry.seq - 1}",
                )
                break
            if kind == "reordered" and not detail and last is not None:
                problem = _out_of_order(recorder, last, entry)
            elif kind == "altered":
                intact = (
                    following is not None
                    and _recompute(entry.entry_hash, following) == following.entry_hash
                )
                problem = _problem(
                    "altered",
                    entry,
                    "its event's topic changed"
                    if entry.stored and entry.stored.topic != entry.topic
                    else "its event's stored state changed"
                    if intact
                    else "its event or its recorded hash changed"
                    if following is None
                    else "its recorded hash changed",
                )
            else:
                problem = _problem(kind, entry, detail)
            break
        if head is not None and entry.seq == head.seq and entry.entry_hash != head.entry_hash:
            problem = _problem(
                "altered",
                entry,
                f"it does not carry the exported head's hash ({head.verified_at}): the chain "
                "up to it was changed and recomputed",
            )
            break
        before, previous, last = previous, entry.entry_hash, entry
        checked += 1
        expected += 1
    if problem is None and stray is not None:
        position, originator, version = stray
        problem = Problem(
            "inserted",
            account_id,
            expected,
            position,
            str(originator),
            version,
            "the journal holds this event after the chain's last entry, and no entry names it",
        )
    if problem is None and head is not None and checked < head.seq:
        problem = Problem(
            "missing",
            account_id,
            expected,
            None,
            None,
            None,
            f"the chain ends at entry {checked}, before the exported head's entry {head.seq}",
        )
    return VerifyReport(account_id, checked, time.perf_counter() - started, problem, last)


def _out_of_order(recorder: JournalRecorder, last: ChainEntry, entry: ChainEntry) -> Problem:
    earlier = [
        seq
        for account, seq in recorder.chain_entries_naming(
            entry.originator_id, entry.originator_version
        )
        if (account, seq) != (entry.account_id, entry.seq)
    ]
    if earlier:
        return _problem("inserted", entry, f"entry {earlier[0]} already names its event")
    return _problem(
        "reordered",
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
