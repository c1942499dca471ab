"""The audit view: an account's chain entries as change records, field by field.

Each event is read from the journal through the account's audit chain (see
``adapters.audit_chain``), applied to the aggregate it belongs to, and
reported as the fields whose value it changed, old → new, plus the facts an
event records that no field keeps (:data:`EVENT_FACTS`, e.g. why an object was
quarantined). Only fields named in :data:`AUDITED_FIELDS` and
:data:`EVENT_FACTS` are ever shown: allow-lists per aggregate type and topic,
so a field added later (a secret, a hash) stays out of audit output until
someone decides it belongs there. Token hashes, link credentials and
sealed values are not on it.

Memory stays flat however long the account's history: the view keeps the
last state of at most ``cache_size`` aggregates; an aggregate it has
forgotten (or never saw, when reading starts mid-journal or events are
skipped by a filter) is rebuilt from the journal up to the version before the
event, or caught up from the version it remembers.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent

from caljournal.adapters.audit_chain import ChainEntry
from caljournal.domain.appointment import OVERRIDE_TEXTS, PERSONAL_FIELDS, erased_value
from caljournal.domain.values import rfc3339

#: The fields shown per aggregate type (the class name the topic names).
AUDITED_FIELDS: dict[str, tuple[str, ...]] = {
    "Appointment": (
        "status",
        "title",
        "start",
        "end",
        "timezone",
        "all_day",
        "floating",
        "recurrence",
        "location",
        "description",
        "customer_name",
        "customer_email",
        "cancel_reason",
        "cancel_origin",
        "sequence",
        "push_failure",
        "last_conflict",
        "calendar_uid",
        "erased_on",
    ),
    "CalendarLink": (
        "status",
        "server_url",
        "auth",
        "provider",
        "resolution",
        "calendar_url",
        "calendar_name",
        "calendar_chosen_on",
        "sync_tokens",
        "pause_reason",
        "poll_interval",
        "poll_requests",
        "credentials_serial",
        "last_resync",
        "resync_requests",
        "resync_requested",
    ),
    "Account": ("name", "last_rebuild"),
    "ApiToken": ("name", "account_name", "revoked"),
    # Its state is the set of objects held; each decision is shown by EVENT_FACTS.
    "QuarantineLog": (),
}

#: Facts an event records that no audited field keeps, by topic: shown as
#: changes of ``event.NAME`` from nothing to the recorded value.
EVENT_FACTS: dict[str, tuple[str, ...]] = {
    "caljournal:Appointment.PushFailed": ("sequence",),
    "caljournal:Appointment.Erased": ("reason",),
    "caljournal:QuarantineLog.ObjectQuarantined": ("href", "etag", "reason"),
    "caljournal:QuarantineLog.ObjectReleased": ("href",),
}

Change = tuple[str, Any, Any]
"""One changed field: (name, old value, new value); nested values use dotted names."""


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One recorded change of an account, as auditors read it.

    ``missing`` marks an entry of the chain whose event the journal no longer
    holds: its time, cause and changes are unknown.
    """

    position: int
    seq: int
    time: datetime | None
    account_id: str
    aggregate_type: str
    aggregate_id: str
    event_type: str
    origin: str
    actor: str
    correlation_id: str
    changes: list[Change] = field(default_factory=list)
    version: int = 0
    topic: str = ""
    missing: bool = False

    def as_dict(self) -> dict[str, Any]:
        """Return the record as JSON-ready values (changes as {field, old, new} objects)."""
        return {
            "position": self.position,
            "seq": self.seq,
            "time": self.time.isoformat() if self.time else None,
            "account_id": self.account_id,
            "aggregate_type": self.aggregate_type,
            "aggregate_id": self.aggregate_id,
            "version": self.version,
            "event_type": self.event_type,
            "topic": self.topic,
            "origin": self.origin,
            "actor": self.actor,
            "correlation_id": self.correlation_id,
            "missing": self.missing,
            "changes": [{"field": f, "old": old, "new": new} for f, old, new in self.changes],
        }


@functools.cache
def split_topic(topic: str) -> tuple[str, str]:
    """Return (aggregate type, event type) of a topic like ``caljournal:Appointment.Moved``."""
    name = topic.rsplit(":", 1)[-1]
    aggregate, _, event_type = name.rpartition(".")
    return aggregate, event_type or name


def audited_state(aggregate: Any) -> dict[str, Any]:
    """Return the allow-listed fields of an aggregate, nested values flattened to dotted names.

    Values are read from the aggregate's attributes (as its events set them),
    written the way its ``state()`` writes them for the API.
    """
    if aggregate is None:
        return {}
    kind = type(aggregate).__name__
    formats = _FORMATS.get(kind, {})
    flat: dict[str, Any] = {}
    for name in AUDITED_FIELDS.get(kind, ()):
        value = getattr(aggregate, name, None)
        if type(value) in _PLAIN:
            flat[name] = value
        elif name in formats:
            flat[name] = formats[name](value)
        else:
            _flatten(name, value, flat)
    return flat


# Fields written as the aggregate's ``state()`` writes them (when not None).
_FORMATS: dict[str, dict[str, Callable[[Any], Any]]] = {
    "Appointment": {"start": rfc3339, "end": rfc3339},
}


_PLAIN = frozenset({str, int, bool, float, type(None)})


def _flatten(name: str, value: Any, into: dict[str, Any]) -> None:
    if isinstance(value, dict):
        if not value:
            into[name] = {}
        for key, inner in value.items():
            _flatten(f"{name}.{key}", inner, into)
    elif isinstance(value, datetime | date):
        into[name] = value.isoformat()
    elif isinstance(value, UUID):
        into[name] = str(value)
    elif isinstance(value, tuple | list):
        into[name] = [str(v) if isinstance(v, UUID) else v for v in value]
    else:
        into[name] = value


def diff(before: dict[str, Any], after: dict[str, Any]) -> list[Change]:
    """Return the fields whose value differs, in the order of ``after`` then removed ones."""
    changes = [(k, old, v) for k, v in after.items() if (old := before.get(k)) != v]
    gone = before.keys() - after.keys()
    if gone:
        changes.extend((k, v, None) for k, v in before.items() if k in gone and v is not None)
    return changes


def _facts(topic: str, event: Any) -> list[Change]:
    return [
        (f"event.{name}", None, _plain(getattr(event, name, None)))
        for name in EVENT_FACTS.get(topic, ())
    ]


def _plain(value: Any) -> Any:
    return value if type(value) in _PLAIN else str(value)


History = Callable[[UUID, int, int], Iterable[Any]]
"""Return an aggregate's decoded events with ``after < version <= up_to``."""


class AuditView:
    """Turn chain entries into :class:`AuditRecord` s, keeping a bounded cache of states."""

    def __init__(
        self,
        decode: Callable[[StoredEvent], Any],
        history: History,
        cache_size: int = 10_000,
        erased: Collection[UUID] = (),
    ) -> None:
        self._decode = decode
        # Appointments whose personal data was erased: their older events show
        # it erased too, also events written before personal data was encrypted.
        self._erased = frozenset(erased)
        self._history = history
        self._cache_size = cache_size
        # aggregate id -> (version, aggregate, audited state at that version)
        self._known: OrderedDict[UUID, tuple[int, Any, dict[str, Any]]] = OrderedDict()
        self.rebuilt = 0

    def records(self, entries: Iterable[ChainEntry]) -> Iterator[AuditRecord]:
        """Yield one record per entry, in the entries' order."""
        for entry in entries:
            yield self.record(entry)

    def record(self, entry: ChainEntry) -> AuditRecord:
        """Return the record of one chain entry."""
        aggregate_type, event_type = split_topic(entry.topic)
        if entry.stored is None:
            return AuditRecord(
                position=entry.position,
                seq=entry.seq,
                time=None,
                account_id=entry.account_id,
                aggregate_type=aggregate_type,
                aggregate_id=str(entry.originator_id),
                event_type=event_type,
                origin="",
                actor="",
                correlation_id="",
                version=entry.originator_version,
                topic=entry.topic,
                missing=True,
            )
        event = self._decode(entry.stored)
        version = int(event.originator_version)
        aggregate, before = self._before(entry.originator_id, version)
        aggregate = event.mutate(aggregate)
        after = audited_state(aggregate)
        self._remember(entry.originator_id, version, aggregate, after)
        return AuditRecord(
            position=entry.position,
            seq=entry.seq,
            time=getattr(event, "timestamp", None),
            account_id=entry.account_id,
            aggregate_type=aggregate_type,
            aggregate_id=str(entry.originator_id),
            event_type=event_type,
            origin=str(getattr(event, "origin", "") or ""),
            actor=str(getattr(event, "actor", "") or ""),
            correlation_id=str(getattr(event, "correlation_id", "") or ""),
            changes=self._masked(entry.originator_id, diff(before, after))
            + _facts(entry.topic, event),
            version=version,
            topic=entry.topic,
        )

    def _masked(self, aggregate_id: UUID, changes: list[Change]) -> list[Change]:
        if aggregate_id not in self._erased:
            return changes
        masked = []
        for name, old, new in changes:
            last = name.rsplit(".", 1)[-1]
            if last in PERSONAL_FIELDS or last in OVERRIDE_TEXTS:
                # Kept even when both sides read the same once erased: that the
                # field changed is still part of the record.
                old, new = erased_value(last, old), erased_value(last, new)
            masked.append((name, old, new))
        return masked

    def _before(self, aggregate_id: UUID, version: int) -> tuple[Any, dict[str, Any]]:
        """Return the aggregate at ``version - 1`` and its audited state."""
        known = self._known.pop(aggregate_id, None)
        if known is not None and known[0] == version - 1:
            return known[1], known[2]
        if version <= 1:
            return None, {}
        aggregate: Any = None
        after = 0
        if known is not None and known[0] < version:
            # Events were skipped (a filter, a cursor): catch up from what is known.
            aggregate, after = known[1], known[0]
        self.rebuilt += 1
        for event in self._history(aggregate_id, after, version - 1):
            aggregate = event.mutate(aggregate)
        return aggregate, audited_state(aggregate)

    def _remember(
        self, aggregate_id: UUID, version: int, aggregate: Any, state: dict[str, Any]
    ) -> None:
        self._known[aggregate_id] = (version, aggregate, state)
        if len(self._known) > self._cache_size:
            self._known.popitem(last=False)


__all__ = [
    "AUDITED_FIELDS",
    "EVENT_FACTS",
    "AuditRecord",
    "AuditView",
    "Change",
    "History",
    "audited_state",
    "diff",
    "split_topic",
]
