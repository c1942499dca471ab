"""The former in-memory calendar double, as a thin face of ``MemoryStorage``.

New tests use :class:`caljournal.adapters.memory_storage.MemoryStorage` (the
calendar storage port in memory) directly. :class:`MemoryCalendar` keeps the
older face some tests still use: ``create``/``update`` return the ETag string,
``listing`` returns a dict, and a conditional delete of an object already gone
raises :class:`PreconditionFailed` (the port counts it as deleted).
"""

from __future__ import annotations

from caljournal.adapters.memory_storage import MemoryStorage
from caljournal.adapters.storage import PreconditionFailed

__all__ = ["MemoryCalendar", "PreconditionFailed"]

DEFAULT_URL = "https://calendar.example/calendars/user/work/"


class MemoryCalendar:
    """The objects of one calendar collection, kept by a :class:`MemoryStorage`."""

    def __init__(self, drops_short_lived: bool = False, calendar_url: str = DEFAULT_URL) -> None:
        self.storage = MemoryStorage(calendar_url, drops_short_lived=drops_short_lived)

    @property
    def objects(self) -> dict[str, tuple[bytes, str]]:
        """Return the stored objects: href → (data, ETag)."""
        return self.storage.objects

    def listing(self) -> dict[str, str | None]:
        """Return every object's href and ETag."""
        return dict(self.storage.listing().changed)

    def fetch(self, href: str) -> tuple[bytes, str | None] | None:
        """Return an object's data and ETag, or None when there is none."""
        return self.storage.fetch(href)

    def create(self, href: str, data: bytes) -> str:
        """Store a new object; return its ETag.

        :raises PreconditionFailed: when an object exists at ``href``.
        """
        return self._etag(self.storage.create(href, data).etag)

    def update(self, href: str, data: bytes, etag: str | None) -> str:
        """Replace an object, only if it still has ``etag`` (when given); return the new ETag.

        :raises PreconditionFailed: when the object changed or is gone.
        """
        return self._etag(self.storage.update(href, data, etag).etag)

    def delete(self, href: str, etag: str | None) -> None:
        """Delete an object, only if it still has ``etag`` (when given).

        :raises PreconditionFailed: when the object changed (or is gone, with ``etag``).
        """
        if etag is not None and href not in self.storage.objects:
            raise PreconditionFailed(
                "the object changed on the server while deleting the calendar object", status=412
            )
        self.storage.delete(href, etag)

    def put(self, href: str, data: bytes) -> str:
        """Store ``data`` at ``href`` unconditionally; return the new ETag."""
        return self.storage.put(href, data)

    def remove(self, href: str) -> None:
        """Delete the object at ``href`` unconditionally."""
        self.storage.remove(href)

    def lose_changes(self) -> None:
        """Leave every change made so far out of later deltas."""
        self.storage.lose_changes()

    @staticmethod
    def _etag(etag: str | None) -> str:
        if etag is None:  # MemoryStorage always gives one
            raise AssertionError("the in-memory calendar wrote without an ETag")
        return etag
