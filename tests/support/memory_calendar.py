"""An in-memory stand-in for one CalDAV calendar: href → (bytes, ETag).

ETags come from one counter, so every write gives a new one. The conditional
writes behave like a CalDAV server's ``If-None-Match: *`` / ``If-Match``
requests: a failed precondition raises :class:`PreconditionFailed` and
changes nothing.
"""

from __future__ import annotations


class PreconditionFailed(Exception):
    """A conditional write found the object in another state (HTTP 412)."""


class MemoryCalendar:
    """The objects of one calendar collection, kept in a dict."""

    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, str]] = {}
        self._counter = 0

    def _next_etag(self) -> str:
        self._counter += 1
        return f'"{self._counter}"'

    # -- what the sync code's reader and writer see -------------------------------

    def listing(self) -> dict[str, str]:
        """Return every object's href and ETag."""
        return {href: etag for href, (_, etag) in self.objects.items()}

    def fetch(self, href: str) -> tuple[bytes, str] | None:
        """Return an object's data and ETag, or None when there is none."""
        return self.objects.get(href)

    def create(self, href: str, data: bytes) -> str:
        """Store a new object (``If-None-Match: *``); return its ETag.

        :raises PreconditionFailed: when an object exists at ``href``.
        """
        if href in self.objects:
            raise PreconditionFailed(href)
        return self.put(href, data)

    def update(self, href: str, data: bytes, etag: str | None) -> str:
        """Replace an object, only if it still has ``etag`` (when given); return the new ETag.

        :raises PreconditionFailed: when the object changed or is gone.
        """
        if etag is not None:
            current = self.objects.get(href)
            if current is None or current[1] != etag:
                raise PreconditionFailed(href)
        return self.put(href, data)

    def delete(self, href: str, etag: str | None) -> None:
        """Delete an object, only if it still has ``etag`` (when given); gone is done.

        :raises PreconditionFailed: when the object changed (or is gone, with ``etag``).
        """
        current = self.objects.get(href)
        if etag is not None and (current is None or current[1] != etag):
            raise PreconditionFailed(href)
        self.objects.pop(href, None)

    # -- what another calendar client does ----------------------------------------

    def put(self, href: str, data: bytes) -> str:
        """Store ``data`` at ``href`` unconditionally; return the new ETag."""
        etag = self._next_etag()
        self.objects[href] = (data, etag)
        return etag

    def remove(self, href: str) -> None:
        """Delete the object at ``href`` unconditionally."""
        del self.objects[href]
