"""The per-appointment keys of personal data, in ``caljournal_personal_keys``.

:class:`PersonalKeys` keeps the keys in ``caljournal_personal_keys`` (appointment
id, key, created_us, erased_us, erased_by; made by schema version 5). The
journal writes a new key, and the erasure of a key, as rows in the transaction
of the events that need or destroy it (:meth:`PersonalKeys.rows_for`). With the
journal cipher key set, keys are stored sealed with it.

Caching: reading never trusts a key held in the process beyond one decode
batch (one ``EventStore.get``, i.e. one aggregate load or history): each batch
reads its key with its events (one query, see the recorders'
``select_events_and_key``), so an erasure by another process takes effect at
the next load. Writing keeps keys in a small process cache; that is safe because an
erased appointment records no personal data, and a write racing an erasure
loses on the aggregate's version.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import MutableMapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

from cachetools import LRUCache
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.persistence import Cipher

from caljournal.adapters.personal_data import has_personal
from caljournal.adapters.readmodel import APPOINTMENTS, Row
from caljournal.domain.aggregates import aggregate_classes

if TYPE_CHECKING:
    from caljournal.domain.appointment import Appointment

PERSONAL_KEYS = "caljournal_personal_keys"
KEY_BYTES = 32
_ABSENT = object()


class PersonalKeyError(Exception):
    """A personal-data key cannot be opened (journal cipher key missing or wrong)."""


class KeyQueries(Protocol):
    """What the key store needs of the journal recorder."""

    qualify: str
    placeholder: str

    def _fetch(self, sql: str, params: Sequence[Any]) -> list[Any]: ...


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
        Appointment = aggregate_classes().Appointment  # noqa: N806
        for aggregate in aggregates:
            if not isinstance(aggregate, Appointment) or not aggregate.pending_events:
                continue
            events = aggregate.pending_events
            erasing = next((e for e in events if isinstance(e, Appointment.Erased)), None)
            personal = any(has_personal(vars(e)) for e in events)
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

    def for_read(
        self, appointment_id: UUID, memo: MutableMapping[UUID, Any] | None
    ) -> bytes | None:
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

    def keys_for(self, appointment_ids: Sequence[UUID]) -> dict[UUID, bytes | None]:
        """Return the keys of many appointments (None when erased or absent), 500 per query.

        A memo for :meth:`for_read` when one batch decodes events of many
        appointments (the audit log's pages).
        """
        q = self.queries
        found: dict[UUID, bytes | None] = {
            i if isinstance(i, UUID) else UUID(str(i)): None for i in appointment_ids
        }
        ids = [str(i) for i in found]
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ", ".join(q.placeholder for _ in chunk)
            rows = q._fetch(
                f"SELECT appointment_id, key FROM {q.qualify}{PERSONAL_KEYS} "
                f"WHERE appointment_id IN ({marks})",
                chunk,
            )
            for row in rows:
                if row["key"]:
                    found[UUID(row["appointment_id"])] = self._opened(row["key"])
        return found

    def erased_of(self, account_id: str) -> set[UUID]:
        """Return the ids of the account's appointments whose personal data was erased."""
        q = self.queries
        rows = q._fetch(
            f"SELECT k.appointment_id FROM {q.qualify}{PERSONAL_KEYS} k "
            f"JOIN {q.qualify}{APPOINTMENTS} a ON a.id = k.appointment_id "
            f"WHERE a.account_id = {q.placeholder} AND k.erased_us IS NOT NULL",
            [account_id],
        )
        return {UUID(row["appointment_id"]) for row in rows}

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

    def opened(self, stored: str) -> bytes:
        """Return the key of a stored (sealed or plain) key text."""
        return self._opened(stored)

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
