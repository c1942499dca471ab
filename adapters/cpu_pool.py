"""Where pure CPU work on many items runs: in the calling thread, or in helper processes.

Parsing the objects of a large first import is pure work on bytes, about a third
of the import's time, and Python runs it under the GIL: a thread cannot take it
off the poll. A helper process can, while the poll decides and records the chunk
before (``Poller`` keeps one chunk ahead). The port is one call, ``submit(items)``,
whose job answers ``result()``: the function's results in order, or the
function's own exception. :class:`InlinePool` is the twin that runs the function
in the thread that asks for the result, exactly as a call would.

:class:`ProcessPool` starts its processes on first use, from a ``forkserver``
(a clean interpreter, never a fork of a threaded worker), and keeps them for the
life of the process; helpers end by themselves once that process is gone.
Should a helper die (killed, out of memory), the job it held
runs in the asking thread instead and the next submit starts fresh helpers: a
lost helper costs time, never results.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Generic, Protocol, TypeVar

log = logging.getLogger("caljournal.cpu_pool")
In = TypeVar("In")
Out = TypeVar("Out")
_WATCH_SECONDS = 1.0


class Job(Protocol[Out]):
    """Work handed to a pool: ``result()`` waits for it and returns its results in order."""

    def result(self) -> list[Out]: ...


class CpuPool(Protocol):
    """Runs a module-level function over items (the port)."""

    def submit(self, function: Callable[[In], Out], items: Sequence[In]) -> Job[Out]:
        """Start ``function`` over ``items``; the job's ``result()`` returns what it returned."""
        ...

    def close(self) -> None:
        """Stop the pool's processes, if any."""
        ...


class _Later(Generic[In, Out]):
    """A job run by the thread that asks for its result, once."""

    def __init__(self, function: Callable[[In], Out], items: Sequence[In]) -> None:
        self._function = function
        self._items: Sequence[In] | None = items
        self._results: list[Out] | None = None

    def result(self) -> list[Out]:
        if self._results is None:
            assert self._items is not None
            self._results = [self._function(item) for item in self._items]
            self._items = None
        return self._results


class InlinePool:
    """Runs the function in the thread that asks for the result (the twin; no processes)."""

    processes = 0

    def submit(self, function: Callable[[In], Out], items: Sequence[In]) -> Job[Out]:
        return _Later(function, items)

    def close(self) -> None:
        return None


INLINE = InlinePool()


def _watch_owner(owner: int) -> None:
    """Start a thread that ends this helper once its owner process is gone (in a helper).

    A helper waits on a queue whose writing end it holds itself, so the owner's
    death (``kill -9`` included) never reaches it as an end of file: it checks.
    """
    forkserver = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(_WATCH_SECONDS)
            try:
                os.kill(owner, 0)
            except ProcessLookupError:
                os._exit(0)
            if os.getppid() != forkserver:  # the forkserver ended with its owner
                os._exit(0)

    threading.Thread(target=watch, name="caljournal-owner-watch", daemon=True).start()


def _run(function: Callable[[In], Out], items: Sequence[In]) -> list[Out]:
    """Run ``function`` over ``items`` (in a helper process)."""
    return [function(item) for item in items]


class _Remote(Generic[In, Out]):
    """A job in a helper process; run here instead should the helper die."""

    def __init__(
        self,
        pool: ProcessPool,
        executor: ProcessPoolExecutor,
        future: Future[list[Out]],
        function: Callable[[In], Out],
        items: Sequence[In],
    ) -> None:
        self._pool = pool
        self._executor = executor
        self._future = future
        self._function = function
        self._items = items

    def result(self) -> list[Out]:
        try:
            return self._future.result()
        except BrokenProcessPool:
            self._pool.lost(self._executor)
            return [self._function(item) for item in self._items]


class ProcessPool:
    """Runs the function in ``processes`` helper processes, started on first use."""

    def __init__(self, processes: int) -> None:
        if processes < 1:
            raise ValueError("a process pool needs at least one process")
        self.processes = processes
        self._lock = threading.Lock()
        self._executor: ProcessPoolExecutor | None = None
        self._closed = False

    def submit(self, function: Callable[[In], Out], items: Sequence[In]) -> Job[Out]:
        items = list(items)
        with self._lock:
            if self._closed:
                raise RuntimeError("the process pool is closed")
            if self._executor is None:
                self._executor = ProcessPoolExecutor(
                    self.processes,
                    mp_context=multiprocessing.get_context("forkserver"),
                    initializer=_watch_owner,
                    initargs=(os.getpid(),),
                )
            executor = self._executor
        try:
            future = executor.submit(_run, function, items)
        except BrokenProcessPool:
            self.lost(executor)
            return _Later(function, items)
        return _Remote(self, executor, future, function, items)

    def lost(self, executor: ProcessPoolExecutor) -> None:
        """Drop ``executor`` after a helper of it died, so the next submit starts new ones."""
        with self._lock:
            if self._executor is not executor:
                return  # dropped already by another job of it
            self._executor = None
        log.warning("a helper process died; its work runs in the asking thread, new helpers follow")
        executor.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
            self._closed = True
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def pids(self) -> list[int]:
        """Return the process ids of the running helpers (for tests and the status)."""
        with self._lock:
            executor = self._executor
        processes = getattr(executor, "_processes", None) or {}
        return sorted(int(pid) for pid in processes)


def default_processes(configured: int | None) -> int:
    """Return how many helper processes to run: as configured, else one when two CPUs exist."""
    if configured is not None:
        return configured
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cpus = os.cpu_count() or 1
    return 1 if cpus >= 2 else 0


def make_pool(processes: int) -> CpuPool:
    """Return a process pool of ``processes`` helpers, or the inline pool for 0."""
    return ProcessPool(processes) if processes > 0 else INLINE
