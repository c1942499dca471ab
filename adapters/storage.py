"""The calendar storage port: what the sync code may ask of one remote calendar.

Modelled on vdirsyncer's ``storage.base.Storage``: a calendar is a set of
objects, each under an href with an ETag; every write is conditional, and a
failed precondition is one exception, :class:`PreconditionFailed`, whatever the
server said. Two implementations exist and pass one contract suite
(``tests/contract/test_calendar_storage.py``):

* ``adapters.caldav_storage.CalDAVStorage`` over a CalDAV collection (the
  caldav library, guarded transport, tenacity retries);
* ``adapters.memory_storage.MemoryStorage``, a dict with a change log, used by
  unit and property tests (and a model for further providers).

Vocabulary:

``listing()``
    every object's href and ETag (a :class:`Delta` with ``complete=True``);
``changes_since(token)``
    what changed since a sync token (``None``: everything, complete); raises
    :class:`SyncTokenInvalid` when the server no longer knows the token. The
    answer may carry the changed objects' data (``Delta.data``) when the server
    sent it along; objects without it are loaded with ``load``;
``state_tag()``
    a value that changes whenever the collection changes (CTag), or None;
``load(hrefs)``
    many objects at once (calendar-multiget), keyed by the href asked for;
    objects gone meanwhile are named in ``Loaded.missing``;
``fetch(href)``
    one object's bytes and ETag, or None;
``create(href, data)``
    store a new object; :class:`PreconditionFailed` when one exists there;
``update(href, data, etag)``
    replace an object, only if it still has ``etag`` (when given);
    :class:`PreconditionFailed` when it changed or is gone;
``delete(href, etag)``
    remove an object, only if it still has ``etag`` (when given); an object
    already gone counts as deleted; :class:`PreconditionFailed` when it changed;
``close()``
    release connections.

``fetch_mode`` / ``use_fetch_mode(mode)``
    how the calendar's server is best asked for objects (a :class:`FetchMode`):
    what the storage learned while answering, to be recorded with the link and
    handed to the next storage of the same calendar, so a new process does not
    learn it again.

Every other failure is a :class:`StorageError` whose ``transient`` flag says
whether asking again later may help and whose ``message`` is one sentence for
the account holder.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from caljournal.adapters.caldav_client import CalDAVError as StorageError
from caljournal.adapters.caldav_client import PreconditionFailedError as PreconditionFailed
from caljournal.adapters.fetch_mode import MULTIGET_MOST, MULTIGET_START, FetchMode


class SyncTokenInvalid(StorageError):  # noqa: N818 - named for the protocol's vocabulary
    """The server no longer knows the sync token (expired or bogus)."""


@dataclass(frozen=True)
class Delta:
    """What changed in a calendar.

    ``changed`` maps hrefs to their current ETag. When ``complete`` is True it
    lists every object of the calendar (a full listing), so any known href
    missing from it was deleted; otherwise ``deleted`` names the deletions.
    ``data`` holds the bytes of those changed objects the server sent along
    (at the ETag in ``changed``): they need no ``load``.
    """

    changed: dict[str, str | None]
    deleted: frozenset[str] = frozenset()
    token: str | None = None
    complete: bool = False
    requests: int = 1
    data: dict[str, bytes] = field(default_factory=dict)


@dataclass
class Loaded:
    """Objects loaded by href: data and ETag; ``missing`` vanished meanwhile."""

    objects: dict[str, tuple[bytes, str | None]] = field(default_factory=dict)
    missing: set[str] = field(default_factory=set)
    requests: int = 0


@dataclass(frozen=True)
class Written:
    """The outcome of a write: the object's new ETag (None when the server sent none)."""

    etag: str | None


@runtime_checkable
class CalendarStorage(Protocol):
    """One remote calendar collection (see the module's vocabulary)."""

    calendar_url: str

    def listing(self) -> Delta: ...

    def changes_since(self, token: str | None) -> Delta: ...

    def state_tag(self) -> str | None: ...

    def load(self, hrefs: Iterable[str]) -> Loaded: ...

    def fetch(self, href: str) -> tuple[bytes, str | None] | None: ...

    def create(self, href: str, data: bytes) -> Written: ...

    def update(self, href: str, data: bytes, etag: str | None) -> Written: ...

    def delete(self, href: str, etag: str | None) -> None: ...

    def close(self) -> None: ...

    @property
    def fetch_mode(self) -> FetchMode: ...

    def use_fetch_mode(self, mode: FetchMode) -> None: ...


__all__ = [
    "MULTIGET_MOST",
    "MULTIGET_START",
    "CalendarStorage",
    "Delta",
    "FetchMode",
    "Loaded",
    "PreconditionFailed",
    "StorageError",
    "SyncTokenInvalid",
    "Written",
]
