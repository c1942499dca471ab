"""Conditional writes of calendar objects, retried with tenacity.

The port the outbound projection talks to: ``create``/``update``/``delete``/
``fetch`` of one object by href, with ETags, raising :class:`CalDAVError`
subclasses (``PreconditionFailedError`` when the object changed or exists).
Transient failures (5xx, timeouts, resets, 429/503) are retried here with
exponential backoff and jitter; a server's ``Retry-After`` is honoured.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from caljournal.adapters.caldav_client import (
    CalDAVError,
    DeadlineExceededError,
    ObjectNotFoundError,
    ServerAccess,
    open_client,
    request,
)
from caljournal.adapters.providers import ProviderProfile

T = TypeVar("T")
ICAL_TYPE = "text/calendar; charset=utf-8"
MAX_RETRY_AFTER = 120.0


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to retry one request before giving the failure to the caller."""

    attempts: int = 4
    initial: float = 0.2
    maximum: float = 10.0


def _is_transient(exc: BaseException) -> bool:
    # A request that ran into its deadline is not tried again at once: each
    # attempt would hold the account for another whole deadline.
    return (
        isinstance(exc, CalDAVError)
        and exc.transient
        and not isinstance(exc, DeadlineExceededError)
    )


class _RetryAfterOrBackoff:
    """Wait what the server asked for (Retry-After), else exponential backoff with jitter."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.fallback = wait_exponential_jitter(multiplier=policy.initial, max=policy.maximum)

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, CalDAVError) and exc.retry_after is not None:
            return min(max(exc.retry_after, 0.0), MAX_RETRY_AFTER)
        return float(self.fallback(state))


def retry_transient(
    call: Callable[[], T],
    policy: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
    retry_on: Callable[[BaseException], bool] = _is_transient,
) -> T:
    """Return ``call()``, retrying transient :class:`CalDAVError` (Retry-After honoured).

    ``retry_on`` narrows which failures are retried.

    :raises CalDAVError: the last failure once ``policy`` is used up, or at
        once when it is not transient.
    """
    retrying = Retrying(
        retry=retry_if_exception(retry_on),
        wait=_RetryAfterOrBackoff(policy),
        stop=stop_after_attempt(policy.attempts),
        sleep=sleep,
        reraise=True,
    )
    return retrying(call)


@dataclass(frozen=True)
class Written:
    """The outcome of a write: the object's new ETag (None when the server sent none)."""

    etag: str | None


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
        return retry_transient(call, self.policy, self._sleep)

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
