"""The calendar storage port over CalDAV: the reader and the writer behind one object."""

from __future__ import annotations

from collections.abc import Iterable

from caljournal.adapters.caldav_client import ServerAccess
from caljournal.adapters.calendar_reader import CalendarReader
from caljournal.adapters.calendar_writer import CalendarWriter
from caljournal.adapters.providers import ProviderProfile
from caljournal.adapters.retry import RetryPolicy
from caljournal.adapters.storage import Delta, Loaded, Written


class CalDAVStorage:
    """One CalDAV calendar collection (see ``adapters.storage`` for the vocabulary).

    Reads go through :class:`CalendarReader`, writes through
    :class:`CalendarWriter`; both retry transient faults as ``retry`` says.
    """

    def __init__(
        self,
        access: ServerAccess,
        calendar_url: str,
        profile: ProviderProfile,
        retry: RetryPolicy | None = None,
        full_timeout: float = 300.0,
    ) -> None:
        self.calendar_url = calendar_url if calendar_url.endswith("/") else calendar_url + "/"
        self.reader = CalendarReader(access, self.calendar_url, full_timeout, retry)
        self.writer = CalendarWriter(access.at(self.calendar_url), profile, retry)

    def listing(self) -> Delta:
        """Return every object's href and ETag."""
        return self.reader.listing()

    def changes_since(self, token: str | None) -> Delta:
        """Return what changed since ``token``.

        :raises SyncTokenInvalid: when the server refuses the token.
        """
        return self.reader.changes_since(token)

    def state_tag(self) -> str | None:
        """Return the collection's CTag (or sync token), or None."""
        return self.reader.state_tag()

    def load(self, hrefs: Iterable[str]) -> Loaded:
        """Load objects by calendar-multiget."""
        return self.reader.load(hrefs)

    def fetch(self, href: str) -> tuple[bytes, str | None] | None:
        """Return one object's bytes and ETag, or None."""
        return self.writer.fetch(href)

    def create(self, href: str, data: bytes) -> Written:
        """Store a new object.

        :raises PreconditionFailed: when one exists there.
        """
        return self.writer.create(href, data)

    def update(self, href: str, data: bytes, etag: str | None) -> Written:
        """Replace an object, only if it still has ``etag`` (when given).

        :raises PreconditionFailed: when it changed or is gone.
        """
        return self.writer.update(href, data, etag)

    def delete(self, href: str, etag: str | None) -> None:
        """Remove an object, only if it still has ``etag`` (when given).

        :raises PreconditionFailed: when it changed.
        """
        self.writer.delete(href, etag)

    def close(self) -> None:
        """Close the connections."""
        self.reader.close()
        self.writer.close()
