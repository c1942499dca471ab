"""Conditional writes of calendar objects, retried with tenacity.

The port the outbound projection talks to: ``create``/``update``/``delete``/
``fetch`` of one object by href, with ETags, raising :class:`CalDAVError`
subclasses (``PreconditionFailedError`` when the object changed or exists).
Transient failures (5xx, timeouts, resets, 429/503) are retried here as the
caller's :class:`~caljournal.adapters.retry.RetryPolicy` says.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from caljournal.adapters.caldav_client import (
    ObjectNotFoundError,
    ServerAccess,
    open_client,
    request,
)
from caljournal.adapters.providers import ProviderProfile
from caljournal.adapters.retry import RetryPolicy
from caljournal.adapters.storage import Written

T = TypeVar("T")
ICAL_TYPE = "text/calendar; charset=utf-8"


class CalendarWriter:
    """Write objects of one calendar collection."""

    def __init__(
        self,
        access: ServerAccess,
        profile: ProviderProfile,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.access = access
        self.profile = profile
        self.policy = policy or RetryPolicy()
        self._sleep = sleep
        self._client = open_client(access)

    def _retry(self, call: Callable[[], T]) -> T:
        return self.policy.call(call, self._sleep)

    def create(self, href: str, data: bytes) -> Written:
        """Create an object that must not exist yet (``If-None-Match: *`` where supported).

        :raises PreconditionFailedError: when an object exists at ``href``.
        """
        headers = {"Content-Type": ICAL_TYPE}
        if self.profile.supports_if_none_match:
            headers["If-None-Match"] = "*"
        return self._put(href, data, headers, "creating the calendar object")

    def update(self, href: str, data: bytes, etag: str | None) -> Written:
        """Replace an object; with ``etag`` only if it is still that version.

        :raises PreconditionFailedError: when the object changed (or is gone).
        """
        headers = {"Content-Type": ICAL_TYPE}
        if etag and not etag.startswith("W/"):
            headers["If-Match"] = etag
        return self._put(href, data, headers, "updating the calendar object")

    def _put(self, href: str, data: bytes, headers: dict[str, str], what: str) -> Written:
        def call() -> Written:
            response = request(
                self._client, href, "PUT", what, body=data, headers=headers, ok=(200, 201, 204)
            )
            etag = (response.headers or {}).get("ETag")
            return Written(etag or self._etag_of(href))

        return self._retry(call)

    def _etag_of(self, href: str) -> str | None:
        # A PUT answer without an ETag: read it back, so the next write can be
        # conditional (RFC 4791 5.3.4 allows servers to omit it).
        found = self.fetch(href)
        return found[1] if found else None

    def delete(self, href: str, etag: str | None) -> None:
        """Delete an object; gone already counts as done.

        :raises PreconditionFailedError: when it changed since ``etag``.
        """
        headers = {"If-Match": etag} if etag and not etag.startswith("W/") else {}

        def call() -> None:
            try:
                request(
                    self._client,
                    href,
                    "DELETE",
                    "deleting the calendar object",
                    headers=headers,
                    ok=(200, 204),
                )
            except ObjectNotFoundError:
                return

        self._retry(call)

    def fetch(self, href: str) -> tuple[bytes, str | None] | None:
        """Return an object's data and ETag, or None when it does not exist."""

        def call() -> tuple[bytes, str | None] | None:
            try:
                response = request(
                    self._client, href, "GET", "reading the calendar object", ok=(200,)
                )
            except ObjectNotFoundError:
                return None
            raw: Any = response.raw
            data = raw.encode() if isinstance(raw, str) else bytes(raw)
            return data, (response.headers or {}).get("ETag")

        return self._retry(call)

    def close(self) -> None:
        """Close the connection."""
        session = getattr(self._client, "session", None)
        if session is not None:
            session.close()
