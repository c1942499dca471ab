"""The recorded changes of one aggregate, as auditors read them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol, runtime_checkable
from uuid import UUID

from caljournal.adapters.journal import Journal

_VOLATILE = {"version", "modified_on", "created_on"}


@runtime_checkable
class _RecordedChange(Protocol):
    """What the audit view reads of an event: every aggregate's ``Event`` base carries it."""

    originator_version: int
    timestamp: datetime
    origin: str
    actor: str
    correlation_id: str

    def mutate(self, aggregate: Any) -> Any:
        """Return ``aggregate`` with this event applied."""


def history_of(journal: Journal, aggregate_id: UUID) -> list[dict[str, Any]]:
    """Return every event of an aggregate: position, time, type, origin, actor, old → new.

    ``old → new`` is computed by replaying the events in order and comparing the
    aggregate's ``state()`` before and after each one.
    """
    positions = journal.journal_recorder.select_positions(aggregate_id)
    entries = []
    aggregate: Any = None
    before: dict[str, Any] = {}
    for event in journal.events.get(aggregate_id):
        if not isinstance(event, _RecordedChange):
            raise TypeError(f"{type(event).__name__} events carry no origin, actor or timestamp")
        aggregate = event.mutate(aggregate)
        after = aggregate.state()
        changes = {
            key: {"old": before.get(key), "new": value}
            for key, value in after.items()
            if key not in _VOLATILE and before.get(key) != value
        }
        entries.append(
            {
                "position": positions.get(event.originator_version),
                "version": event.originator_version,
                "timestamp": event.timestamp.isoformat(),
                "type": type(event).__name__,
                "origin": event.origin,
                "actor": event.actor,
                "correlation_id": event.correlation_id,
                "changes": changes,
            }
        )
        before = after
    return entries
