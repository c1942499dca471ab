"""The scheduler: due order, one step per task at a time, per-server fairness, no idle threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from caljournal.projections.scheduler import Scheduler
from tests.support.calendars import wait_until


class Ticker:
    """A task that steps every ``every`` seconds, each step taking ``takes`` seconds."""

    def __init__(
        self,
        server: str,
        every: float = 0.01,
        takes: float = 0.0,
        steps: int = 0,
        gate: threading.Event | None = None,
    ):
        self.server = server
        self.gate = gate  # when given, each step waits until it is set (instead of ``takes``)
        self.every = every
        self.takes = takes
        self.left = steps  # 0: forever
        self.steps: list[tuple[float, float]] = []
        self.active = 0
        self.overlapped = False
        self._lock = threading.Lock()

    def step(self) -> float | None:
        with self._lock:
            self.active += 1
            self.overlapped = self.overlapped or self.active > 1
        began = time.monotonic()
        if self.gate is not None:
            assert self.gate.wait(timeout=60), "the test never opened the gate"
        else:
            time.sleep(self.takes)
        self.steps.append((began, time.monotonic()))
        with self._lock:
            self.active -= 1
        if self.left:
            self.left -= 1
            if not self.left:
                return None
        return time.monotonic() + self.every


@contextmanager
def scheduling(size: int, per_server: int = 0) -> Iterator[Scheduler]:
    scheduler = Scheduler(size, per_server).start()
    try:
        yield scheduler
    finally:
        scheduler.stop()


def test_a_task_never_steps_twice_at_once_and_news_during_a_step_runs_it_again() -> None:
    gate = threading.Event()
    task = Ticker("a", every=3600.0, gate=gate)
    with scheduling(4) as scheduler:
        scheduler.schedule(task)
        wait_until(lambda: task.active == 1, timeout=10)  # held inside its first step
        for _ in range(5):
            scheduler.schedule(task)  # news while it runs
        gate.set()
        wait_until(lambda: len(task.steps) == 2, timeout=10)
        time.sleep(0.2)
    # Five wake-ups during one step made exactly one more step, never overlapping.
    assert len(task.steps) == 2
    assert not task.overlapped
    assert task.steps[1][0] >= task.steps[0][1]


def test_a_slow_server_holds_at_most_its_share_of_the_pool() -> None:
    slow = [Ticker("slow:1", every=0.0, takes=0.5) for _ in range(20)]
    fast = [Ticker("fast:1", every=0.05) for _ in range(5)]
    with scheduling(4) as scheduler:
        for task in slow:
            scheduler.schedule(task)
        wait_until(lambda: scheduler.load()["parked"] > 0, timeout=10)
        began = time.monotonic()
        for task in fast:
            scheduler.schedule(task)
        wait_until(lambda: all(len(t.steps) >= 10 for t in fast), timeout=10)
        took = time.monotonic() - began
        busy = sum(t.active for t in slow)
    # Ten steps of each fast task took about 10 x 50 ms, not the slow tasks' queue.
    assert took < 3.0
    assert busy <= 2


def test_tasks_step_in_order_of_due_time() -> None:
    order: list[str] = []

    class Once:
        def __init__(self, name: str) -> None:
            self.name = name
            self.server = "s"

        def step(self) -> float | None:
            order.append(self.name)
            return None

    now = time.monotonic()
    with scheduling(1) as scheduler:
        for name, delay in (("third", 0.3), ("first", 0.1), ("second", 0.2)):
            scheduler.schedule(Once(name), now + delay)
        wait_until(lambda: len(order) == 3, timeout=10)
        assert scheduler.load()["tasks"] == 0
    assert order == ["first", "second", "third"]


def test_a_thousand_idle_tasks_hold_no_thread_of_their_own() -> None:
    before = threading.active_count()
    tasks = [Ticker(f"host{n % 10}:80", every=3600.0) for n in range(1000)]
    with scheduling(8) as scheduler:
        for task in tasks:
            scheduler.schedule(task)
        wait_until(lambda: all(t.steps for t in tasks), timeout=30)
        # The scheduler thread and at most its pool.
        assert threading.active_count() - before <= 9
        assert scheduler.load() == {"tasks": 1000, "running": 0, "parked": 0}


def test_two_slow_servers_together_cannot_starve_a_third() -> None:
    slow = [Ticker(f"slow{n % 2}:1", every=0.0, takes=0.5) for n in range(20)]
    fast = [Ticker("fast:1", every=0.05) for _ in range(5)]
    with scheduling(8) as scheduler:
        for task in slow:
            scheduler.schedule(task)
        # Both slow servers hold all they may: the pool but its last quarter.
        wait_until(lambda: scheduler.load()["running"] == 6, timeout=10)
        began = time.monotonic()
        for task in fast:
            scheduler.schedule(task)
        wait_until(lambda: all(len(t.steps) >= 10 for t in fast), timeout=10)
        took = time.monotonic() - began
    assert took < 3.0
