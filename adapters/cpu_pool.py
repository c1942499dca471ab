"""Where pure CPU work on many items runs: in the calling thread, or in helper processes.

Parsing the objects of a large first import is pure work on bytes, about a third
of the import's time, and Python runs it under the GIL: a thread cannot take it
off the poll. A helper process can, while the poll decides and records the chunk
before (``Poller`` keeps one chunk ahead). The port is one call, ``submit(items)``,
whose job answers ``result()``: the function's results in order, or the
function's own exception. :class:`InlinePool` is the twin that runs the function
in the thread that asks for the result, exactly as a call would.

:class:`ProcessPool` starts its helpers on first use, each a fresh interpreter
(never a fork of a threaded worker), and keeps them for the life of the process;
a helper ends when its owner does. Should a helper die (killed, out of memory),
the job it held runs in the asking thread instead and the next job starts a new
helper: a lost helper costs time, never results.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from typing import Generic, Protocol, TypeVar, cast

from caljournal.adapters.cpu_helper import read_frame, write_frame
from caljournal.adapters.metrics import CPU_HELPERS

log = logging.getLogger("caljournal.cpu_pool")
In = TypeVar("In")
Out = TypeVar("Out")
_CLOSE_SECONDS = 10.0
_IDLE_CHECK_SECONDS = 0.5
_RETRY_SECONDS = 60.0


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


class HelperLost(Exception):  # noqa: N818 - names what happened
    """A helper process ended (killed, out of memory) before it answered."""


class _Helper:
    """One helper process (:mod:`caljournal.adapters.cpu_helper`) and its pipes."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(  # noqa: S603 - this interpreter, a fixed module
            [sys.executable, "-m", "caljournal.adapters.cpu_helper"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            # The owner's import path, for finding this module (the first frame sets it exactly).
            env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
            # Its own session: a Ctrl-C meant for the owner does not kill it; the
            # owner's end (even by SIGKILL) closes its standard input, which ends it.
            start_new_session=True,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self._in, self._out = self.process.stdin, self.process.stdout
        write_frame(self._in, list(sys.path))

    def call(self, function: Callable[[In], Out], items: Sequence[In]) -> list[Out]:
        """Run ``function`` over ``items`` in the helper; raise its exception, or HelperLost."""
        try:
            write_frame(self._in, (function, items))
            status, value = read_frame(self._out)
        except (EOFError, OSError) as exc:
            raise HelperLost(f"helper process {self.process.pid} ended: {exc}") from exc
        if status == "error":
            raise value
        return cast(list[Out], value)

    def close(self) -> None:
        """End the helper: close its input, then wait (and kill it if it lingers)."""
        with contextlib.suppress(OSError):
            self._in.close()
        try:
            self.process.wait(timeout=_CLOSE_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._out.close()


class _Remote(Generic[In, Out]):
    """A job for a helper process; run here instead when no helper took it yet, or one died.

    A caller never waits behind other callers' jobs: a job still queued when its
    result is asked for, with every helper busy, is taken back and run in the
    asking thread.
    """

    def __init__(
        self,
        future: Future[list[Out]],
        function: Callable[[In], Out],
        items: Sequence[In],
        all_busy: Callable[[], bool],
    ) -> None:
        self._future = future
        self._all_busy = all_busy
        self._function = function
        self._items = items

    def result(self) -> list[Out]:
        if self._all_busy() and self._future.cancel():  # not taken, and none free to take it
            return self._here()
        try:
            return self._future.result()
        except CancelledError:  # the pool closed before a helper took it
            return self._here()
        except HelperLost as exc:
            log.warning("%s; its work runs in this thread, a new helper follows", exc)
            return self._here()

    def _here(self) -> list[Out]:
        return _Later(self._function, self._items).result()


class ProcessPool:
    """Runs the function in up to ``processes`` helper processes.

    Why not ``multiprocessing``: its helpers run the owner's main module again
    (a script without a ``__main__`` guard, or code read from standard input,
    breaks them) and outlive an owner killed with SIGKILL, since each holds the
    writing end of the queue it waits on. A helper here is this interpreter
    running :mod:`caljournal.adapters.cpu_helper` on two pipes only the owner
    holds: the owner's end is the helper's end of file.

    Helpers start in the background on first use (a fresh interpreter imports
    the function's module first: keep it lean, as ``projections.inbound_parse``
    is, about 0.1 s); until one is ready, jobs run in the
    thread that asks for their result, so a first import never waits for a
    helper. ``processes`` threads hand jobs to idle helpers and wait on their
    pipes (not on the GIL).
    """

    def __init__(self, processes: int) -> None:
        if processes < 1:
            raise ValueError("a process pool needs at least one process")
        self.processes = processes
        self._lock = threading.Lock()
        self._threads = ThreadPoolExecutor(processes, thread_name_prefix="caljournal-cpu")
        self._idle: queue.SimpleQueue[_Helper] = queue.SimpleQueue()
        self._helpers: set[_Helper] = set()  # started, not lost
        self._starting = 0
        self._retry_at = 0.0  # no helper is started before this (monotonic) time
        self._all_ready = threading.Condition(self._lock)
        self._closed = False

    def submit(self, function: Callable[[In], Out], items: Sequence[In]) -> Job[Out]:
        items = list(items)
        with self._lock:
            if self._closed:
                raise RuntimeError("the process pool is closed")
            self._top_up(function)
            if not self._helpers:  # none ready yet: no waiting for one
                return _Later(function, items)
            future = self._threads.submit(self._call, function, items)
        return _Remote(future, function, items, self._idle.empty)

    def warm(self, function: Callable[[In], Out], timeout: float) -> None:
        """Start the helpers now and wait until each has imported ``function``'s module.

        :raises TimeoutError: when they are not all ready within ``timeout`` seconds.
        :raises HelperLost: when a helper did not start (jobs run in the asking thread).
        """

        def settled() -> bool:
            failed = not self._starting and time.monotonic() < self._retry_at
            return failed or len(self._helpers) == self.processes

        with self._lock:
            self._top_up(function)
            if not self._all_ready.wait_for(settled, timeout=timeout):
                raise TimeoutError(f"the helper processes were not ready within {timeout} s")
            if len(self._helpers) < self.processes:
                raise HelperLost("a helper process did not start")

    def _top_up(self, function: Callable[[In], Out]) -> None:
        """Start helpers in the background up to ``processes`` (with the lock held).

        After a helper failed to start, none is tried again for a while: jobs
        run in the asking thread meanwhile, instead of each paying for a start.
        """
        if time.monotonic() < self._retry_at:
            return
        for _ in range(self.processes - len(self._helpers) - self._starting):
            self._starting += 1
            threading.Thread(
                target=self._start_one, args=(function,), name="caljournal-cpu-start", daemon=True
            ).start()

    def _start_one(self, function: Callable[[In], Out]) -> None:
        """Start one helper and have it import ``function``'s module (on its own thread)."""
        helper: _Helper | None = None
        try:
            helper = _Helper()
            helper.call(function, [])
        except (OSError, HelperLost) as exc:
            log.warning(
                "a helper process did not start (%s); jobs run in the asking thread for %.0f s",
                exc,
                _RETRY_SECONDS,
            )
            if helper is not None:
                helper.close()
            helper = None
        CPU_HELPERS.labels("started" if helper is not None else "failed").inc()
        with self._lock:
            self._starting -= 1
            if helper is None:
                self._retry_at = time.monotonic() + _RETRY_SECONDS
                self._all_ready.notify_all()
            if helper is not None and not self._closed:
                self._helpers.add(helper)
                self._idle.put(helper)
                self._all_ready.notify_all()
                return
        if helper is not None:
            helper.close()

    def _call(self, function: Callable[[In], Out], items: Sequence[In]) -> list[Out]:
        """Run a job on an idle helper (on a pool thread); HelperLost when none is left."""
        while True:
            try:
                helper = self._idle.get(timeout=_IDLE_CHECK_SECONDS)
                break
            except queue.Empty:
                with self._lock:
                    if self._closed or not (self._helpers or self._starting):
                        raise HelperLost("no helper process is running") from None
        try:
            results = helper.call(function, items)
        except HelperLost:
            CPU_HELPERS.labels("lost").inc()
            with self._lock:
                self._helpers.discard(helper)
            helper.close()
            raise
        except BaseException:
            self._idle.put(helper)  # the function's own exception: the helper lives on
            raise
        self._idle.put(helper)
        return results

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._threads.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            helpers, self._helpers = self._helpers, set()
        for helper in helpers:
            helper.close()

    def pids(self) -> list[int]:
        """Return the process ids of the helpers ready for work."""
        with self._lock:
            return sorted(h.process.pid for h in self._helpers if h.process.poll() is None)


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
