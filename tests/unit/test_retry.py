"""The one retry policy for calendar requests: what it retries, how long it waits, when it stops."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from caljournal.adapters.caldav_client import (
    AuthenticationFailedError,
    CalDAVError,
    RateLimitedError,
    ServerFailedError,
    UnreachableError,
)
from caljournal.adapters.retry import RetryPolicy


def failing(*errors: CalDAVError) -> tuple[Callable[[], str], list[int]]:
    """Return a call that raises ``errors`` one after another, then answers "ok"."""
    calls: list[int] = []

    def call() -> str:
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return "ok"

    return call, calls


def slow_down(seconds: float) -> RateLimitedError:
    return RateLimitedError("slow down", status=503, retry_after=seconds)


def test_transient_faults_are_retried_and_retry_after_is_waited_as_asked() -> None:
    call, calls = failing(slow_down(7), UnreachableError("reset"), ServerFailedError("502"))
    slept: list[float] = []
    assert RetryPolicy(attempts=4, initial=0.2, maximum=10).call(call, slept.append) == "ok"
    assert len(calls) == 4
    assert slept[0] == 7
    assert all(0 < s <= 10 for s in slept[1:])


def test_a_budget_stops_before_a_sleep_would_pass_it() -> None:
    call, calls = failing(*(slow_down(100) for _ in range(10)))
    slept: list[float] = []
    with pytest.raises(RateLimitedError):
        RetryPolicy.patient(250).call(call, slept.append)
    assert slept == [100, 100] and len(calls) == 3


def test_a_patient_policy_has_no_attempt_limit_within_its_budget() -> None:
    call, calls = failing(*(ServerFailedError("503") for _ in range(40)))
    slept: list[float] = []
    assert RetryPolicy.patient(100_000).call(call, slept.append) == "ok"
    assert len(calls) == 41


def test_a_pause_longer_than_the_caller_waits_is_handed_back_at_once() -> None:
    call, calls = failing(slow_down(300))
    slept: list[float] = []
    with pytest.raises(RateLimitedError) as raised:
        RetryPolicy(longest_wait=30).call(call, slept.append)
    assert raised.value.retry_after == 300 and slept == [] and len(calls) == 1


def test_permanent_errors_are_not_retried() -> None:
    call, calls = failing(AuthenticationFailedError("no", status=401))
    with pytest.raises(AuthenticationFailedError):
        RetryPolicy.patient(600).call(call, lambda seconds: None)
    assert len(calls) == 1


def test_attempts_bound_a_quick_policy() -> None:
    call, calls = failing(*(UnreachableError("reset") for _ in range(10)))
    with pytest.raises(UnreachableError):
        RetryPolicy(attempts=3).call(call, lambda seconds: None)
    assert len(calls) == 3
