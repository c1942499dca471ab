"""The one retry policy for calendar requests (tenacity).

Transient failures (5xx, timeouts, resets, 429 and 503) are retried with
exponential backoff and jitter; a server's ``Retry-After`` is waited out as
asked. A policy stops after a number of attempts, after an overall budget of
seconds (never sleeping past it), or at once when the server asks for a longer
pause than the caller is willing to sit through inline (the caller's own loop
then waits, e.g. the worker's interruptible backoff).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_never,
    wait_exponential_jitter,
)
from tenacity.stop import stop_base

from caljournal.adapters.caldav_client import (
    CalDAVError,
    DeadlineExceededError,
    RateLimitedError,
    ServerFailedError,
    TimedOutError,
    UnreachableError,
)
from caljournal.adapters.metrics import RETRIES

T = TypeVar("T")
log = logging.getLogger("caljournal.caldav")

# The causes a retry is counted under (a fixed set: a metric label).
_CAUSES: tuple[tuple[type[CalDAVError], str], ...] = (
    (RateLimitedError, "rate_limited"),
    (ServerFailedError, "server_error"),
    (TimedOutError, "timeout"),
    (UnreachableError, "unreachable"),
)


def retry_cause(exc: BaseException | None) -> str:
    """Return the label a retry after ``exc`` is counted under (``other`` when unknown)."""
    return next((name for kind, name in _CAUSES if isinstance(exc, kind)), "other")


def is_transient(exc: BaseException) -> bool:
    """Return whether retrying ``exc`` later may help.

    A request that ran into its overall deadline is not tried again at once:
    each attempt would hold the account for another whole deadline.
    """
    return (
        isinstance(exc, CalDAVError)
        and exc.transient
        and not isinstance(exc, DeadlineExceededError)
    )


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to retry one request before giving the failure to the caller.

    ``attempts`` (None: no limit) and ``budget`` (seconds from the first
    attempt, None: no limit) bound the effort; ``initial`` and ``maximum`` shape
    the backoff; a ``Retry-After`` longer than ``longest_wait`` is not waited
    out here but handed to the caller.
    """

    attempts: int | None = 4
    initial: float = 0.2
    maximum: float = 10.0
    budget: float | None = None
    longest_wait: float = 120.0

    @classmethod
    def patient(cls, budget: float) -> RetryPolicy:
        """Return a policy that keeps trying for ``budget`` seconds (operator runs)."""
        return cls(attempts=None, initial=0.5, maximum=30.0, budget=budget)

    def call(
        self,
        fn: Callable[[], T],
        sleep: Callable[[float], None] = time.sleep,
        retry_on: Callable[[BaseException], bool] = is_transient,
    ) -> T:
        """Return ``fn()``, retrying transient :class:`CalDAVError` as the policy allows.

        ``retry_on`` narrows which failures are retried.

        :raises CalDAVError: the last failure, when it is permanent or the policy gave up.
        """
        stop: stop_base = _asks_too_long(self.longest_wait)
        stop = stop | (stop_never if self.attempts is None else stop_after_attempt(self.attempts))
        if self.budget is not None:
            stop = stop | _out_of_budget(self.budget)
        retrying = Retrying(
            retry=retry_if_exception(retry_on),
            wait=_RetryAfterOrBackoff(self),
            stop=stop,
            sleep=sleep,
            before_sleep=_count_retry,
            reraise=True,
        )
        return retrying(fn)


def _count_retry(state: RetryCallState) -> None:
    """Count a retry by its cause and say so in the log."""
    exc = state.outcome.exception() if state.outcome else None
    cause = retry_cause(exc)
    RETRIES.labels(cause).inc()
    log.info(
        "retrying a calendar request in %.1f s after attempt %d (%s)",
        state.upcoming_sleep,
        state.attempt_number,
        cause,
        extra={"retry_cause": cause},
    )


def _retry_after(state: RetryCallState) -> float | None:
    exc = state.outcome.exception() if state.outcome else None
    if isinstance(exc, CalDAVError) and exc.retry_after is not None:
        return max(exc.retry_after, 0.0)
    return None


class _asks_too_long(stop_base):  # noqa: N801 - named like tenacity's own stop conditions
    """Stop when the server asks for a pause longer than the caller will wait inline."""

    def __init__(self, longest: float) -> None:
        self.longest = longest

    def __call__(self, state: RetryCallState) -> bool:
        asked = _retry_after(state)
        return asked is not None and asked > self.longest


class _out_of_budget(stop_base):  # noqa: N801 - named like tenacity's own stop conditions
    """Stop when the next sleep would end past the budget (like ``stop_before_delay``).

    Time spent is the clock's, or the sleeps' when larger (an injected sleep).
    """

    def __init__(self, budget: float) -> None:
        self.budget = budget

    def __call__(self, state: RetryCallState) -> bool:
        spent = max(state.seconds_since_start or 0.0, state.idle_for)
        return spent + state.upcoming_sleep >= self.budget


class _RetryAfterOrBackoff:
    """Wait what the server asked for (Retry-After), else exponential backoff with jitter."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.fallback = wait_exponential_jitter(
            multiplier=policy.initial, max=policy.maximum, jitter=min(5 * policy.initial, 1.0)
        )

    def __call__(self, state: RetryCallState) -> float:
        asked = _retry_after(state)
        if asked is not None:
            return asked
        return float(self.fallback(state))


__all__ = ["RetryPolicy", "is_transient", "retry_cause"]
