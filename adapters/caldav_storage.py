"""The calendar storage port over one CalDAV collection.

:class:`CalDAVStorage` puts the two HTTP-level pieces behind the port's one
vocabulary (``adapters.storage``): ``CalendarReader`` asks what changed
(sync-collection, PROPFIND listings, batched calendar-multiget) and
``CalendarWriter`` makes conditional writes. Size caps, deadlines, retries and
507 truncation are theirs; this module only composes them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from caljournal.adapters.caldav_client import ServerAccess
from caljournal.adapters.calendar_reader import CalendarReader
from caljournal.adapters.calendar_writer import CalendarWriter
from caljournal.adapters.providers import ProviderProfile, get_profile
from caljournal.adapters.retry import RetryPolicy
from caljournal.adapters.storage import Delta, FetchMode, Loaded, Written


class LinkedCalendar(Protocol):
    """What a stored calendar link says about its calendar (``CalendarLink`` has it)."""

    @property
    def calendar_url(self) -> str | None: ...

    @property
    def provider(self) -> str: ...


class CalDAVStorage:
    """One CalDAV calendar collection, as the calendar storage port.

    ``retry`` governs every request, reads and writes alike (None: the
    reader's and writer's own defaults); ``full_timeout`` is the patient
    deadline of a full listing or first sync of a large calendar.
    """

    def __init__(
        self,
        access: ServerAccess,
        calendar_url: str,
        profile: ProviderProfile,
        retry: RetryPolicy | None = None,
        full_timeout: float = 300.0,
    ) -> None:
        self.reader = CalendarReader(
            access, calendar_url, full_timeout=full_timeout, retry=retry, mode=profile.fetch_mode
        )
        self.calendar_url = self.reader.calendar_url
        self.profile = profile
        self.writer = CalendarWriter(access.at(self.calendar_url), profile, retry)

    @classmethod
    def of_link(
        cls,
        access: ServerAccess,
        link: LinkedCalendar,
        retry: RetryPolicy | None = None,
        full_timeout: float = 300.0,
    ) -> CalDAVStorage:
        """Return the storage of a link's chosen calendar (``access``: ``LinkService.access``).

        :raises ValueError: when the link has no calendar chosen.
        :raises UnknownProviderError: when the link names an unknown provider.
        """
        if not link.calendar_url:
            raise ValueError("the link has no calendar chosen")
        return cls(access, link.calendar_url, get_profile(link.provider), retry, full_timeout)

    @property
    def fetch_mode(self) -> FetchMode:
        """Return how the server is asked for objects now (the profile's preset, then learned)."""
        return self.reader.fetch_mode

    def use_fetch_mode(self, mode: FetchMode) -> None:
        """Ask the server for objects as ``mode`` says (recorded by an earlier poll)."""
        self.reader.use_fetch_mode(mode)

    def listing(self) -> Delta:
        """Return every object's href and ETag (complete)."""
        return self.reader.listing()

    def changes_since(self, token: str | None) -> Delta:
        """Return what changed since ``token`` (everything, complete, when None).

        :raises SyncTokenInvalid: when the server no longer knows the token.
        """
        return self.reader.changes_since(token)

    def state_tag(self) -> str | None:
        """Return the collection's CTag or sync-token property (None if it has neither)."""
        return self.reader.state_tag()

    def load(self, hrefs: Iterable[str]) -> Loaded:
        """Load many objects with calendar-multiget, keyed by the href asked for."""
        return self.reader.load(hrefs)

    def fetch(self, href: str) -> tuple[bytes, str | None] | None:
        """Return an object's bytes and ETag, or None when it does not exist."""
        return self.writer.fetch(href)

    def create(self, href: str, data: bytes) -> Written:
        """Store a new object.

        :raises PreconditionFailed: when an object exists at ``href``.
        """
        return self.writer.create(href, data)

    def update(self, href: str, data: bytes, etag: str | None) -> Written:
        """Replace an object, only if it still has ``etag`` (when given).

        :raises PreconditionFailed: when the object changed or is gone.
        """
        return self.writer.update(href, data, etag)

    def delete(self, href: str, etag: str | None) -> None:
        """Delete an object, only if it still has ``etag`` (when given); gone is done.

        :raises PreconditionFailed: when the object changed.
        """
        self.writer.delete(href, etag)

    def close(self) -> None:
        """Close the reader's and the writer's connections."""
        try:
            self.reader.close()
        finally:
            self.writer.close()
