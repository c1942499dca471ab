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

The keys come from ``adapters.personal_keys``; each ``EventStore.get`` is one
decode batch, which looks its appointment's key up once (see there).
"""

from __future__ import annotations

import base64
import copy
import os
from collections.abc import Iterator, MutableMapping
from typing import TYPE_CHECKING, Any
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import EventStore, Mapper, StoredEvent
from eventsourcing.utils import get_topic

from caljournal.domain.aggregates import aggregate_classes
from caljournal.domain.personal import (
    OVERRIDE_TEXTS,
    PERSONAL_FIELDS,
    erased_value,
)

if TYPE_CHECKING:
    from caljournal.adapters.personal_keys import PersonalKeys

SEALED_FIELD = "personal_sealed"
APPOINTMENT_TOPIC = "caljournal:Appointment."
#: Dict-valued event fields that carry personal fields by name.
NESTED = ("changes", "local", "remote")


def _personal_paths(state: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Return the paths of the personal values (not None) in an event state.

    In this order: the top-level fields, the texts of the top-level
    recurrence's changed instances, then for each of ``NESTED`` its fields and
    its recurrence's texts (the order of the values :func:`split_personal` takes).
    """
    get = state.get
    paths: list[tuple[Any, ...]] = [(name,) for name in PERSONAL_FIELDS if get(name) is not None]
    if get("recurrence") is not None:
        paths += _override_paths((), state)
    for outer in NESTED:
        inner = get(outer)
        if isinstance(inner, dict):
            paths += [(outer, k) for k in PERSONAL_FIELDS if inner.get(k) is not None]
            if inner.get("recurrence") is not None:
                paths += _override_paths((outer,), inner)
    return paths


def _override_paths(prefix: tuple[Any, ...], container: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Return the paths of the texts of a recurrence's changed instances."""
    recurrence = container.get("recurrence")
    overrides = recurrence.get("overrides") if isinstance(recurrence, dict) else None
    return [
        (*prefix, "recurrence", "overrides", number, k)
        for number, item in enumerate(overrides or ())
        if isinstance(item, dict)
        for k in OVERRIDE_TEXTS
        if item.get(k) is not None
    ]


def has_personal(state: dict[str, Any]) -> bool:
    """Tell whether an event state holds personal values (:func:`split_personal` takes some)."""
    get = state.get
    # A top-level field answers for most events (every new appointment has a
    # title) without listing the paths.
    return any(get(name) is not None for name in PERSONAL_FIELDS) or bool(_personal_paths(state))


def split_personal(state: dict[str, Any]) -> dict[str, str]:
    """Remove the personal values (not None) from an event state; return them by path.

    A path joins its steps with "/": ``title``, ``changes/title`` (also in
    ``local`` and ``remote``), ``recurrence/overrides/0/title``. The nested
    containers are copied first, so the event itself is never changed.
    """
    paths = _personal_paths(state)
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
        topic = get_topic(type(domain_event))
        if not topic.startswith(APPOINTMENT_TOPIC):
            return super().to_stored_event(domain_event)
        state = dict(vars(domain_event))
        taken = split_personal(state)
        if taken:
            key = self.keys.for_write(domain_event.originator_id) if self.keys else None
            if key is None:
                erased = {p: erased_value(field_of(p), v) for p, v in taken.items()}
                restore_personal(state, erased)
            else:
                data = seal_fields(key, domain_event.originator_id, self.transcoder.encode(taken))
                sealed = {"paths": sorted(taken), "data": base64.b64encode(data).decode()}
                state[SEALED_FIELD] = sealed
        return self._stored(type(domain_event), topic, state)

    def _stored(self, cls: type, topic: str, state: dict[str, Any]) -> StoredEvent:
        """Return the stored event of an event state, as the library's ``to_stored_event`` does.

        The library's method copies the event's attributes into a new dict and
        looks its topic up again; here the state at hand (already a copy) is used.
        """
        originator_id = state.pop("originator_id")
        originator_version = state.pop("originator_version")
        class_version = getattr(cls, "class_version", 1)
        if class_version > 1:
            state["class_version"] = class_version
        stored_state = self.transcoder.encode(state)
        if self.compressor:
            stored_state = self.compressor.compress(stored_state)
        if self.cipher:
            stored_state = self.cipher.encrypt(stored_state)
        return StoredEvent(
            originator_id=originator_id,
            originator_version=originator_version,
            topic=topic,
            state=stored_state,
        )

    def to_domain_event(
        self, stored_event: StoredEvent, memo: MutableMapping[UUID, Any] | None = None
    ) -> DomainEventProtocol[UUID]:
        """Return the domain event with its personal fields opened, or erased without a key.

        ``memo`` holds the keys looked up in the current decode batch.

        :raises ValueError: when sealed fields are damaged (a key that does not open them).
        """
        aggregate_classes()  # their topics, before the first event is resolved by its topic
        event = super().to_domain_event(stored_event)
        state = vars(event)
        sealed = state.pop(SEALED_FIELD, None)
        if sealed is None:
            return event
        stored_id = stored_event.originator_id
        appointment_id = stored_id if isinstance(stored_id, UUID) else UUID(str(stored_id))
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
        """Return the aggregate's events, with its key read in the same query."""
        memo: dict[UUID, Any] = {}
        both = getattr(self.recorder, "select_events_and_key", None)
        if both is not None and self.mapper.keys is not None:
            stored, key = both(originator_id, gt=gt, lte=lte, desc=desc, limit=limit)
            memo[originator_id] = self.mapper.keys.opened(key) if key else None
        else:
            stored = self.recorder.select_events(
                originator_id=originator_id, gt=gt, lte=lte, desc=desc, limit=limit
            )
        return (self.mapper.to_domain_event(s, memo) for s in stored)
