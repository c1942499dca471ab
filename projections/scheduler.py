"""The scheduler: one thread keeps every account's next due time; a bounded pool runs them.

An idle account costs an entry in a heap, not a thread. The scheduler thread
pops the accounts that are due and hands each to a pool of ``size`` threads,
where the account takes one **step** (runs at most one reconciler) and says
when it wants the next. Guarantees:

* an account never runs twice at once: news for an account in flight is kept
  and the account is due again at once when its step ends;
* one server never holds more than ``per_server`` pool threads (half the pool
  by default), nor more than its fair share of the pool while other servers'
  accounts wait too; the last quarter of the pool goes only to servers that
  have nothing running. Accounts of slow or failing servers (which hold a
  thread for as long as a request and its retries take) wait their turn
  among themselves; the accounts of every other server keep being served;
* due accounts run in order of due time (a parked account keeps its place).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

log = logging.getLogger("caljournal.outbound")


class Task(Protocol):
    """What the scheduler runs: an account's runtime."""

    #: Accounts of one server share its ``per_server`` threads.
    server: str

    def step(self) -> float | None:
        """Do one piece of work; return when (``time.monotonic()``) to step next, None: done."""
        ...


class _Entry:
    """The scheduler's bookkeeping of one task."""

    __slots__ = ("due", "parked", "running", "again", "done")

    def __init__(self) -> None:
        self.due = math.inf
        self.parked = False
        self.running = False
        self.again = False
        self.done = False


class Scheduler:
    """Runs tasks' steps when due, in a bounded pool of threads."""

    def __init__(self, size: int = 8, per_server: int = 0, name: str = "accounts") -> None:
        if size < 1:
            raise ValueError("the pool needs at least one thread")
        self.size = size
        self.per_server = per_server if per_server > 0 else max(1, math.ceil(size / 2))
        # Slots kept for servers with nothing running, so a newcomer is never
        # shut out by servers that already hold threads.
        self.reserve = size // 4
        self._name = name
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Task]] = []
        self._entries: dict[int, _Entry] = {}
        self._seq = itertools.count()
        self._running = 0
        self._busy: dict[str, int] = {}
        self._parked: dict[str, deque[Task]] = {}
        self._pool = ThreadPoolExecutor(size, thread_name_prefix=f"{name}-step")
        self._thread: threading.Thread | None = None
        self._stopped = False

    def start(self) -> Scheduler:
        """Start the scheduler thread (the pool's threads start as work comes)."""
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
        return self

    def stop(self) -> None:
        """Stop handing out work; wait for the steps in flight."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._pool.shutdown(wait=True)

    def schedule(self, task: Task, at: float = 0.0) -> None:
        """Have ``task`` step at ``at`` (monotonic seconds) or earlier, if it is due earlier."""
        with self._cond:
            entry = self._entries.get(id(task))
            if entry is None:
                entry = self._entries[id(task)] = _Entry()
            if entry.done or entry.parked:
                return
            if entry.running:
                entry.again = True
                return
            if at < entry.due:
                entry.due = at
                heapq.heappush(self._heap, (at, next(self._seq), task))
                self._cond.notify()

    def forget(self, task: Task) -> None:
        """Drop a task that will not step again (its runtime finished)."""
        with self._cond:
            self._entries.pop(id(task), None)

    def load(self) -> dict[str, int]:
        """Return how many tasks are known, running and parked."""
        with self._cond:
            return {
                "tasks": len(self._entries),
                "running": self._running,
                "parked": sum(len(q) for q in self._parked.values()),
            }

    # -- the scheduler thread --------------------------------------------------------

    def _loop(self) -> None:
        with self._cond:
            while not self._stopped:
                now = time.monotonic()
                while self._heap and self._running < self.size and self._heap[0][0] <= now:
                    at, _, task = heapq.heappop(self._heap)
                    entry = self._entries.get(id(task))
                    if entry is None or entry.running or entry.parked or entry.due != at:
                        continue  # stale: the task was due earlier, or is running
                    if not self._may_launch(task.server):
                        entry.parked = True
                        self._parked.setdefault(task.server, deque()).append(task)
                        continue
                    self._launch(task, entry)
                timeout = None
                if self._heap and self._running < self.size:
                    timeout = max(self._heap[0][0] - now, 0.0)
                self._cond.wait(timeout)

    def _may_launch(self, server: str) -> bool:
        """Return whether ``server`` may take a free thread now (called with the lock held)."""
        running = self._busy.get(server, 0)
        if running == 0:
            return True
        waiting = len(self._busy.keys() | self._parked.keys() | {server})
        share = max(1, self.size // waiting)
        return running < min(self.per_server, share) and self._running < self.size - self.reserve

    def _launch(self, task: Task, entry: _Entry) -> None:
        entry.running, entry.due = True, math.inf
        self._running += 1
        self._busy[task.server] = self._busy.get(task.server, 0) + 1
        self._pool.submit(self._step, task, entry)

    def _step(self, task: Task, entry: _Entry) -> None:
        try:
            at = task.step()
        except Exception:  # a bug in a step: the task tries again a little later
            log.exception("a step of %r failed", task)
            at = time.monotonic() + 1.0
        with self._cond:
            self._running -= 1
            self._busy[task.server] -= 1
            waiting = self._parked.get(task.server)
            if waiting:
                released = waiting.popleft()
                released_entry = self._entries.get(id(released))
                if released_entry is not None:
                    released_entry.parked = False
                    heapq.heappush(self._heap, (released_entry.due, next(self._seq), released))
            if not waiting and task.server in self._parked:
                del self._parked[task.server]
            if not self._busy[task.server]:
                del self._busy[task.server]
            entry.running = False
            if at is None:
                entry.done = True
                self._entries.pop(id(task), None)
            else:
                if entry.again:
                    entry.again = False
                    at = min(at, time.monotonic())
                entry.due = at
                heapq.heappush(self._heap, (at, next(self._seq), task))
            self._cond.notify()
