"""What verifying an audit chain found, and the chain head an auditor keeps elsewhere.

``adapters.audit_verify`` fills a :class:`VerifyReport`; its :class:`Problem`
names the first bad entry. :class:`ExportedHead` is the small JSON document
``audit head`` writes and ``audit verify --head`` reads back.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Literal

from caljournal.adapters.audit_chain import ChainHead

# Version of the chain's hash layout (``audit_chain.entry_hash``); an exported
# head from another layout cannot be compared.
CHAIN_FORMAT = 1

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
        chain = "" if self.account_id is None else f" of chain {self.account_id}"
        return f"{self.kind}: {where}{event}{chain}: {self.detail}"


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
    """What a verification checked, how long it took, and the first problem if any.

    ``last`` is the last entry that verified (the head to export when clean).
    """

    account_id: str | None
    checked: int
    seconds: float
    problem: Problem | None
    last: ChainHead | None

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


__all__ = ["CHAIN_FORMAT", "ExportedHead", "HeadFormatError", "Kind", "Problem", "VerifyReport"]
