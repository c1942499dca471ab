"""Personal data in the journal, encrypted with one key per appointment (crypto-erasure).

Events never change once written, so personal data is erased by destroying
the key it was encrypted with. :class:`PersonalDataMapper` takes the personal
fields (``domain.appointment.PERSONAL_FIELDS``, also inside the ``changes``,
``local`` and ``remote`` dicts of an event, and the texts of a recurring
appointment's changed instances) out of every appointment event before the
library's transcoder, compressor and cipher run, encrypts them with the
appointment's key (AES-GCM of the ``cryptography`` package, bound to the
appointment id) and stores them in the event as ``personal_sealed``; reading
puts them back. When the key is gone the fields read as erased
(``domain.appointment.erased_value``). The library's ``CIPHER_KEY`` still
encrypts the whole event on top when set.

:class:`PersonalKeys` keeps the keys in ``caljournal_personal_keys`` (appointment
id, key, created_us, erased_us, erased_by; made by schema version 5). The
journal writes a new key, and the erasure of a key, as rows in the transaction
of the events that need or destroy it (:meth:`PersonalKeys.rows_for`). With the
journal cipher key set, keys are stored sealed with it.

Caching: reading never trusts a key held in the process beyond one decode
batch (one ``EventStore.get``, i.e. one aggregate load or history): each batch
looks its key up once, so an erasure by another process takes effect at the
next load. Writing keeps keys in a small process cache; that is safe because an
erased appointment records no personal data, and a write racing an erasure
loses on the aggregate's version.
"""

from __future__ import annotations

import base64
import copy
import os
import threading
import time
from collections.abc import Iterator, MutableMapping, Sequence
from typing import Any, Protocol
from uuid import UUID

from cachetools import LRUCache
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Cipher, EventStore, Mapper, StoredEvent
from eventsourcing.utils import get_topic

from caljournal.adapters.readmodel import Row
from caljournal.domain.appointment import (
    OVERRIDE_TEXTS,
    PERSONAL_FIELDS,
    Appointment,
    erased_value,
)

PERSONAL_KEYS = "caljournal_personal_keys"
SEALED_FIELD = "personal_sealed"
APPOINTMENT_TOPIC = "caljournal:Appointment."
ERASED_TOPIC = get_topic(Appointment.Erased)
#: Dict-valued event fields that carry personal fields by name.
NESTED = ("changes", "local", "remote")
KEY_BYTES = 32
_ABSENT = object()


class PersonalKeyError(Exception):
    """A personal-data key cannot be opened (journal cipher key missing or wrong)."""


class KeyQueries(Protocol):
    """What the key store needs of the journal recorder."""

    qualify: str
    placeholder: str

    def _fetch(self, sql: str, params: Sequence[Any]) -> list[Any]: ...


def _personal_paths(state: dict[str, Any]) -> Iterator[tuple[Any, ...]]:
    """Yield the paths of the personal values (not None) in an event state."""
    for name in PERSONAL_FIELDS:
        if state.get(name) is not None:
            yield (name,)
    containers: list[tuple[tuple[Any, ...], Any]] = [((), state)]
    containers += [((outer,), state.get(outer)) for outer in NESTED]
    for prefix, inner in containers:
        if not isinstance(inner, dict):
            continue
        if prefix:
            yield from ((*prefix, k) for k in PERSONAL_FIELDS if inner.get(k) is not None)
        recurrence = inner.get("recurrence")
        overrides = recurrence.get("overrides") if isinstance(recurrence, dict) else None
        for number, item in enumerate(overrides or ()):
            if isinstance(item, dict):
                yield from (
                    (*prefix, "recurrence", "overrides", number, k)
                    for k in OVERRIDE_TEXTS
                    if item.get(k) is not None
                )


def split_personal(state: dict[str, Any]) -> dict[str, str]:
    """Remove the personal values (not None) from an event state; return them by path.

    A path joins its steps with "/": ``title``, ``changes/title`` (also in
    ``local`` and ``remote``), ``recurrence/overrides/0/title``. The nested
    containers are copied first, so the event itself is never changed.
    """
    paths = list(_personal_paths(state))
    for outer in {p[0] for p in paths if len(p) > 1}:
        state[outer] = copy.deepcopy(state[outer])
    taken: dict[str, str] = {}
    for path in paths:
        *steps, last = path
        container: Any = state
        for step in steps:
            container = container[step]
        taken["/".join(map(str, path))] = container.pop(last)
    return taken


def restore_personal(state: dict[str, Any], values: dict[str, Any]) -> None:
    """Put values taken by :func:`split_personal` back into an event state."""
    for path, value in values.items():
        *steps, last = path.split("/")
        container: Any = state
        for step in steps:
            container = container[int(step)] if isinstance(container, list) else container[step]
        container[last] = value


def field_of(path: str) -> str:
    """Return the field name a path ends in."""
    return path.rpartition("/")[2]


def seal_fields(key: bytes, appointment_id: UUID, plaintext: bytes) -> bytes:
    """Return ``plaintext`` encrypted with AES-GCM, bound to the appointment's id."""
    nonce = os.urandom(12)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, appointment_id.bytes)


def open_fields(key: bytes, appointment_id: UUID, sealed: bytes) -> bytes:
    """Return the plaintext of :func:`seal_fields` output.

    :raises ValueError: when it was altered, or sealed with another key or appointment.
    """
    try:
        return AESGCM(key).decrypt(sealed[:12], sealed[12:], appointment_id.bytes)
    except InvalidTag:
        raise ValueError(
            f"the personal data of appointment {appointment_id} does not open with its key"
        ) from None


class PersonalKeys:
    """The per-appointment keys: looked up, created with new appointments, destroyed on erasure.

    ``seal`` is the journal's cipher (None without a journal cipher key).
    """

    def __init__(self, queries: KeyQueries, seal: Cipher | None) -> None:
        self.queries = queries
        self.seal = seal
        self._written: MutableMapping[UUID, bytes] = LRUCache(maxsize=10_000)
        # Stored (sealed) key text → key: spares unsealing on every lookup. Only a
        # row that still holds the text is ever opened, so erasure is not cached.
        self._opened_keys: MutableMapping[str, bytes] = LRUCache(maxsize=10_000)
        self._lock = threading.Lock()
        self._saving = threading.local()

    # -- rows written with the events ------------------------------------------

    def rows_for(self, aggregates: Sequence[Any]) -> list[Row]:
        """Return key rows for the appointments among ``aggregates`` about to be saved.

        A new appointment (pending events from version 1) whose events carry
        personal data gets a new key; one recorded before keys existed gets one
        with its next such event; pending ``Erased`` events destroy the key. The
        keys are held for this thread's save until :meth:`saved` or :meth:`failed`.
        """
        pending: dict[UUID, bytes | None] = {}
        rows: list[Row] = []
        for aggregate in aggregates:
            if not isinstance(aggregate, Appointment) or not aggregate.pending_events:
                continue
            events = aggregate.pending_events
            erasing = next((e for e in events if isinstance(e, Appointment.Erased)), None)
            personal = any(split_personal(dict(vars(e))) for e in events)
            if erasing is None and not personal:
                continue
            new = events[0].originator_version == 1
            if erasing is None and not new:
                key = self._cached(aggregate.id)
                if key is not None:
                    pending[aggregate.id] = key
                    continue
            known = None if new else self._lookup(aggregate.id)
            if erasing is not None:
                rows.append(self._erased_row(aggregate.id, known, erasing))
                pending[aggregate.id] = None
            elif known is None:
                key = AESGCM.generate_key(KEY_BYTES * 8)
                rows.append(self._key_row(aggregate.id, key))
                pending[aggregate.id] = key
            else:
                pending[aggregate.id] = known.get("key")
        self._saving.pending = pending
        return rows

    def saved(self) -> None:
        """Keep the keys of the save that just committed (erased ones leave the cache)."""
        pending: dict[UUID, bytes | None] = getattr(self._saving, "pending", {})
        with self._lock:
            for appointment_id, key in pending.items():
                if key is None:
                    self._written.pop(appointment_id, None)
                else:
                    self._written[appointment_id] = key
        self._saving.pending = {}

    def failed(self) -> None:
        """Forget the keys of a save that did not commit."""
        self._saving.pending = {}

    def _key_row(self, appointment_id: UUID, key: bytes) -> Row:
        values = {
            "appointment_id": str(appointment_id),
            "key": self._sealed(key),
            "created_us": time.time_ns() // 1000,
            "erased_us": None,
            "erased_by": None,
        }
        return Row(PERSONAL_KEYS, values, key="appointment_id", versioned=False)

    def _erased_row(
        self, appointment_id: UUID, known: dict[str, Any] | None, event: Appointment.Erased
    ) -> Row:
        at = event.timestamp
        values = {
            "appointment_id": str(appointment_id),
            "key": None,
            "created_us": known["created_us"] if known else None,
            "erased_us": int(at.timestamp() * 1_000_000),
            "erased_by": event.actor,
        }
        return Row(PERSONAL_KEYS, values, key="appointment_id", versioned=False)

    # -- keys for the mapper ---------------------------------------------------

    def for_write(self, appointment_id: UUID) -> bytes | None:
        """Return the key to encrypt an event of this appointment with (None: erased or none)."""
        pending: dict[UUID, bytes | None] = getattr(self._saving, "pending", {})
        if appointment_id in pending:
            return pending[appointment_id]
        cached = self._cached(appointment_id)
        if cached is not None:
            return cached
        found = self._lookup(appointment_id)
        return found.get("key") if found else None

    def _cached(self, appointment_id: UUID) -> bytes | None:
        with self._lock:
            return self._written.get(appointment_id)

    def for_read(self, appointment_id: UUID, memo: dict[UUID, Any] | None) -> bytes | None:
        """Return the key to decrypt with, looked up once per decode batch (``memo``)."""
        if memo is not None:
            hit = memo.get(appointment_id, _ABSENT)
            if hit is not _ABSENT:
                return hit
        found = self._lookup(appointment_id)
        key = found.get("key") if found else None
        if memo is not None:
            memo[appointment_id] = key
        return key

    def status(self, appointment_id: UUID) -> dict[str, Any] | None:
        """Return the key row without its key (created_us, erased_us, erased_by), or None."""
        found = self._lookup(appointment_id)
        if found is None:
            return None
        return {k: v for k, v in found.items() if k != "key"} | {"has_key": bool(found["key"])}

    def _lookup(self, appointment_id: UUID) -> dict[str, Any] | None:
        q = self.queries
        rows = q._fetch(
            f"SELECT key, created_us, erased_us, erased_by FROM {q.qualify}{PERSONAL_KEYS} "
            f"WHERE appointment_id = {q.placeholder}",
            [str(appointment_id)],
        )
        if not rows:
            return None
        row = dict(rows[0])
        row["key"] = self._opened(row["key"]) if row["key"] else None
        return row

    def _sealed(self, key: bytes) -> str:
        if self.seal is None:
            return "plain:" + base64.b64encode(key).decode()
        return "sealed:" + base64.b64encode(self.seal.encrypt(key)).decode()

    def _opened(self, stored: str) -> bytes:
        with self._lock:
            known = self._opened_keys.get(stored)
        if known is not None:
            return known
        key = self._unsealed(stored)
        with self._lock:
            self._opened_keys[stored] = key
        return key

    def _unsealed(self, stored: str) -> bytes:
        kind, _, body = stored.partition(":")
        raw = base64.b64decode(body)
        if kind == "plain":
            return raw
        if self.seal is None:
            raise PersonalKeyError(
                "the personal-data keys are sealed with the journal cipher key; "
                "set CALJOURNAL_JOURNAL_CIPHER_KEY to read them"
            )
        try:
            return self.seal.decrypt(raw)
        except ValueError:
            raise PersonalKeyError(
                "a personal-data key does not open with the journal cipher key"
            ) from None


class PersonalDataMapper(Mapper[UUID]):
    """The library's mapper, encrypting appointments' personal fields with their own key.

    ``keys`` is attached by the journal once its recorder exists.
    """

    keys: PersonalKeys | None = None

    def to_stored_event(self, domain_event: DomainEventProtocol[UUID]) -> StoredEvent:
        """Return the stored event, its personal fields sealed with the appointment's key.

        Without a key (erased, or keys not attached) the fields are stored erased:
        personal data never reaches the journal in clear.
        """
        if not get_topic(type(domain_event)).startswith(APPOINTMENT_TOPIC):
            return super().to_stored_event(domain_event)
        state = dict(vars(domain_event))
        taken = split_personal(state)
        if not taken:
            return super().to_stored_event(domain_event)
        key = self.keys.for_write(domain_event.originator_id) if self.keys else None
        if key is None:
            restore_personal(state, {p: erased_value(field_of(p), v) for p, v in taken.items()})
        else:
            data = seal_fields(key, domain_event.originator_id, self.transcoder.encode(taken))
            state[SEALED_FIELD] = {"paths": sorted(taken), "data": base64.b64encode(data).decode()}
        copy = object.__new__(type(domain_event))
        object.__setattr__(copy, "__dict__", state)
        return super().to_stored_event(copy)

    def to_domain_event(
        self, stored_event: StoredEvent, memo: dict[UUID, Any] | None = None
    ) -> DomainEventProtocol[UUID]:
        """Return the domain event with its personal fields opened, or erased without a key.

        ``memo`` holds the keys looked up in the current decode batch.

        :raises ValueError: when sealed fields are damaged (a key that does not open them).
        """
        event = super().to_domain_event(stored_event)
        state = vars(event)
        sealed = state.pop(SEALED_FIELD, None)
        if sealed is None:
            return event
        appointment_id = UUID(str(stored_event.originator_id))
        key = self.keys.for_read(appointment_id, memo) if self.keys else None
        if key is None:
            values = {p: erased_value(field_of(p), "") for p in sealed["paths"]}
        else:
            data = open_fields(key, appointment_id, base64.b64decode(sealed["data"]))
            values = self.transcoder.decode(data)
        restore_personal(state, values)
        return event

    def holds_clear_personal_data(self, stored_event: StoredEvent) -> bool:
        """Return whether a stored appointment event holds personal data unencrypted.

        True for events written before personal data was encrypted.
        """
        if not stored_event.topic.startswith(APPOINTMENT_TOPIC):
            return False
        state = stored_event.state
        if self.cipher:
            state = self.cipher.decrypt(state)
        if self.compressor:
            state = self.compressor.decompress(state)
        return bool(split_personal(self.transcoder.decode(state)))


class PersonalEventStore(EventStore[UUID]):
    """The library's event store; each ``get`` is one decode batch for the personal keys."""

    mapper: PersonalDataMapper

    def get(
        self,
        originator_id: UUID,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Iterator[DomainEventProtocol[UUID]]:
        """Return the aggregate's events, looking its key up at most once."""
        stored = self.recorder.select_events(
            originator_id=originator_id, gt=gt, lte=lte, desc=desc, limit=limit
        )
        memo: dict[UUID, Any] = {}
        return (self.mapper.to_domain_event(s, memo) for s in stored)
