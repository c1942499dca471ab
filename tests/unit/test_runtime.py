"""The account runtime with fake reconcilers: order, backoff, asked-for runs, errors shown."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from caljournal.adapters.caldav_client import RateLimitedError
from caljournal.projections.push import TransientPushError
from caljournal.projections.runtime import (
    ASKED,
    AccountRuntime,
    LinkNews,
    News,
    RanNews,
    RunRecord,
    WorkerConfig,
)
from tests.support.calendars import wait_until

QUICK = WorkerConfig(catch_up=0.05, lease_renew=0.05, max_backoff=600.0)


class Fake:
    """A reconciler that runs a script of outcomes (None: clean; an exception: raised)."""

    def __init__(self, name: str, script: list[BaseException | None], every: float) -> None:
        self.name = name
        self.script = script
        self.every = every
        self.next = 0.0
        self.asked = False
        self.ran: list[str] = []
        self.heard_from: list[str] = []
        self.closed = False

    def due(self, now: float) -> float:
        if self.asked:
            return ASKED
        return self.next - now if self.script else math.inf

    def run(self) -> object:
        self.asked = False
        self.next = time.monotonic() + self.every
        outcome = self.script.pop(0)
        self.ran.append("failed" if outcome else "ok")
        if outcome is not None:
            raise outcome
        return self.name

    def heard(self, news: News) -> bool:
        if isinstance(news, RanNews):
            self.heard_from.append(news.name)
        if isinstance(news, LinkNews) and news.link.get("ask") == self.name:
            self.asked = True
            self.script.append(None)
            return True
        return False

    def close(self) -> None:
        self.closed = True


def slow_down(seconds: float) -> TransientPushError:
    return TransientPushError(
        RateLimitedError("the server asked to slow down", retry_after=seconds)
    )


@contextmanager
def running(
    reconcilers: list[Fake], shown: list[str | None], runs: list[RunRecord] | None = None
) -> Iterator[AccountRuntime]:
    def report(account_id: str, message: str | None) -> None:
        shown.append(message)

    observers: list[Callable[[RunRecord], None]] = [runs.append] if runs is not None else []
    runtime = AccountRuntime(
        "acct", {"version": 1}, QUICK, lambda _: reconcilers, report, observers
    )
    runtime.lease_deadline = math.inf
    runtime.start()
    try:
        yield runtime
    finally:
        runtime.stop()
        runtime.join(timeout=10)
    assert not runtime.is_alive() and all(r.closed for r in reconcilers)


def test_a_failure_stays_shown_until_the_same_reconciler_runs_cleanly() -> None:
    push = Fake("push", [None] * 6, every=0.01)
    poll = Fake("poll", [TransientPushError(RateLimitedError("polls fail")), None], every=0.3)
    shown: list[str | None] = []
    with running([push, poll], shown):
        wait_until(lambda: poll.ran == ["failed", "ok"] and not push.script, timeout=10)
    # Pushes ran cleanly between the two polls: the poll's failure stayed shown.
    assert push.ran.count("ok") == 6
    assert shown == [None, "polls fail", None]


def test_an_asked_for_run_cuts_a_long_backoff_short_and_goes_first() -> None:
    push = Fake("push", [slow_down(300)], every=0.01)
    poll = Fake("poll", [], every=0.01)
    shown: list[str | None] = []
    runs: list[RunRecord] = []
    with running([push, poll], shown, runs) as runtime:
        wait_until(lambda: push.ran == ["failed"], timeout=10)
        asked_at = time.time()
        runtime.update_link({"version": 2, "ask": "poll"})
        wait_until(lambda: poll.ran == ["ok"], timeout=10)
    # Well within the five minutes the server asked for.
    assert time.time() - asked_at < 30
    assert [r.reconciler for r in runs] == ["push", "poll"]
    assert shown == ["the server asked to slow down"]  # the push has not run cleanly since


def test_one_reconciler_runs_at_a_time_and_the_others_hear_of_it() -> None:
    order: list[str] = []
    lock = threading.Lock()
    active: list[str] = []

    class Tracked(Fake):
        def run(self) -> object:
            with lock:
                active.append(self.name)
                assert len(active) == 1, active
            time.sleep(0.01)
            with lock:
                active.remove(self.name)
            order.append(self.name)
            return super().run()

    first = Tracked("first", [None] * 3, every=0.0)
    second = Tracked("second", [None] * 3, every=0.0)
    shown: list[str | None] = []
    with running([first, second], shown):
        wait_until(lambda: not first.script and not second.script, timeout=10)
    # In list order when both are due, then taking turns; each heard of the other's runs.
    assert order == ["first", "second"] * 3
    assert "second" in first.heard_from and "first" in second.heard_from
    assert shown == [None]
