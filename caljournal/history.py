"""The recorded changes of one aggregate, as auditors read them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol, runtime_checkable
from uuid import UUID

from caljournal.adapters.journal import Journal
from caljournal.domain.appointment import Appointment
from caljournal.domain.personal import PERSONAL_FIELDS, erased_value

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
    aggregate's ``state()`` before and after each one. Once an appointment's
    personal data is erased, every entry shows those fields erased, also the
    entries of events recorded in clear before personal data was encrypted; the
    ``Erased`` entry names the reason as a change of ``erasure_reason``.
    """
    positions = journal.journal_recorder.select_positions(aggregate_id)
    events = list(journal.events.get(aggregate_id))
    erased = any(isinstance(e, Appointment.Erased) for e in events)
    entries = []
    aggregate: Any = None
    before: dict[str, Any] = {}
    for event in events:
        if not isinstance(event, _RecordedChange):
            raise TypeError(f"{type(event).__name__} events carry no origin, actor or timestamp")
        aggregate = event.mutate(aggregate)
        after = _masked(aggregate.state()) if erased else aggregate.state()
        changes = {
            key: {"old": before.get(key), "new": value}
            for key, value in after.items()
            if key not in _VOLATILE and before.get(key) != value
        }
        if isinstance(event, Appointment.Erased):
            changes["erasure_reason"] = {"old": None, "new": event.reason}
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


def _masked(state: dict[str, Any]) -> dict[str, Any]:
    return {
        k: erased_value(k, v) if k in PERSONAL_FIELDS and v is not None else v
        for k, v in state.items()
    }
