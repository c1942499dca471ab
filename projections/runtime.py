"""The account runtime: one per leased account, running its reconcilers one at a time.

The runtime owns what every kind of work on an account's calendar shares: the
lease deadline (nothing runs once the lease may have passed to another worker),
wake-ups, backoff (with the server's ``Retry-After``), asked-for runs that cut
a backoff short, and the error shown in the account's sync status. The work
itself is done by **reconcilers** (``projections.reconcilers``: push, poll, a
backfill or replay request), each a small object with the same interface:

* ``due(now)`` says in how many seconds it wants to run (``0`` or less: now;
  ``ASKED``: someone asked and waits, so it runs before anything else and a
  backoff ends early; ``math.inf``: only news will make it due);
* ``run()`` does one round, returns its outcome and raises on failure (see
  "Failures" below);
* ``heard(news)`` takes news: the journal changed for the account, the link
  changed, or another reconciler ran; it returns True when the news asks for
  a run now;
* ``close()`` releases what it holds (connections, threads).

The scheduler never steps an account twice at once, so two reconcilers of an
account never overlap: a backfill never writes while a push pass does. An
idle account runs in no thread of its own: the worker's scheduler
(``projections.scheduler``) keeps its next due time and steps it in a shared
pool when due.

Adding a kind of work (change webhooks, per-link settings choosing which
reconcilers run) means writing a reconciler and listing it in the factory the
worker passes in; the runtime does not change.

Failures: ``TransientPushError`` (the server is unavailable; its
``Retry-After`` is honoured) and ``LinkFailedError`` (credentials unusable)
back off and retry; anything else is a bug or a database outage, logged,
shown and retried with backoff. A reconciler's failure stays in the status
until that same reconciler runs cleanly: a clean push pass does not hide a
poll that keeps failing.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from caljournal.adapters.logs import sync_context
from caljournal.adapters.metrics import FAILURES
from caljournal.adapters.retry import RetryPolicy
from caljournal.links import LinkFailedError
from caljournal.projections.inbound import CheckPolicy
from caljournal.projections.push import TransientPushError
from caljournal.projections.scheduler import Scheduler

log = logging.getLogger("caljournal.outbound")

#: What ``Reconciler.due`` answers when someone asked for a run and waits for it.
ASKED = -math.inf


@dataclass(frozen=True)
class WorkerConfig:
    """Timing of a worker; the defaults suit production, tests shorten them."""

    lease_ttl: float = 10.0
    lease_renew: float = 2.0
    catch_up: float = 5.0
    # An idle account's catch-up passes space out up to this (see PushReconciler).
    idle_catch_up: float = 60.0
    poll: float = 0.1
    batch: int = 100
    max_backoff: float = 60.0
    # Threads stepping due accounts, and how many of them one server may hold
    # (0: half the pool), so a slow server never starves the others.
    pool: int = 8
    per_server: int = 0
    # A longer Retry-After is waited out in the runtime's backoff, which an
    # asked-for run or a stop cuts short, not inside a request.
    retry: RetryPolicy = RetryPolicy(longest_wait=30.0)
    check: CheckPolicy = CheckPolicy()
    # Backfills and replays run by the worker wait out a flaky server like an
    # operator's run does (see Settings.caldav_retry_budget).
    resync_retry: RetryPolicy = field(default_factory=lambda: RetryPolicy.patient(300.0))


@dataclass(frozen=True)
class JournalNews:
    """The journal changed for the account at ``position``."""

    position: int


@dataclass(frozen=True)
class LinkNews:
    """The account's link changed (poll interval, poll or resync requests …)."""

    link: dict[str, Any]


@dataclass(frozen=True)
class RanNews:
    """Another reconciler of the account ran (what it wrote may concern this one)."""

    name: str
    outcome: object = None


News = JournalNews | LinkNews | RanNews


class Reconciler(Protocol):
    """One kind of work on one account's calendar, run by the account's runtime."""

    name: str

    def due(self, now: float) -> float:
        """Return in how many seconds to run (``<= 0`` now, ``ASKED``, ``math.inf``)."""
        ...

    def run(self) -> object:
        """Do one round; return its outcome (told to the other reconcilers).

        :raises TransientPushError: the server is unavailable for now.
        :raises LinkFailedError: the link cannot be used (e.g. credentials).
        """
        ...

    def heard(self, news: News) -> bool:
        """Take news; return True when it asks for a run now (ends a backoff)."""
        ...

    def close(self) -> None:
        """Release connections and threads."""
        ...


@dataclass(frozen=True)
class RunRecord:
    """One reconciler run, as told to the worker's observers."""

    account_id: str
    reconciler: str
    started: float  # time.time(), comparable with other processes' clocks on the machine
    ended: float
    error: str | None


class Wakeup:
    """A flag with a wait that returns early when set."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        """Wake the waiter."""
        self._event.set()

    def wait(self, timeout: float) -> bool:
        """Wait until set or ``timeout``; clear and return whether it was set."""
        woken = self._event.wait(timeout)
        self._event.clear()
        return woken


#: Builds the reconcilers of one account: (runtime) -> reconcilers, in priority order.
ReconcilerFactory = Callable[["AccountRuntime"], Sequence[Reconciler]]


class AccountRuntime:
    """Runs one account's reconcilers while its worker holds the lease.

    The runtime has no thread of its own: the worker's scheduler
    (``projections.scheduler``) calls :meth:`step` whenever the account is due,
    in a thread of its pool. A runtime built without a scheduler gets one of
    its own, with one thread.
    """

    def __init__(
        self,
        account_id: str,
        link: dict[str, Any],
        config: WorkerConfig,
        reconcilers: ReconcilerFactory,
        report_error: Callable[[str, str | None], None],
        observers: Sequence[Callable[[RunRecord], None]] = (),
        previous: AccountRuntime | None = None,
        scheduler: Scheduler | None = None,
    ) -> None:
        self.account_id = account_id
        self.link = link
        self.config = config
        self.server = _server_of(link)
        self.stopping = threading.Event()
        self._finished = threading.Event()
        self._started = False
        self.lease_deadline = 0.0
        self._report_error = report_error
        self._observers = list(observers)
        # A runtime replacing another (the link's target changed) starts only
        # once the old one has finished what it was doing.
        self._previous = previous
        self._own_scheduler = scheduler is None
        self._scheduler = scheduler or Scheduler(1, name=f"account-{account_id[:8]}")
        self.reconcilers: list[Reconciler] = list(reconcilers(self))
        # The failure each reconciler last had, until it runs cleanly again.
        self._errors: dict[str, str] = {}
        self._last_run: dict[str, float] = {}
        self._shown: str | None | object = _UNKNOWN
        self._backoff = 0.0
        # Until then only asked-for runs run (a backoff); an asked-for run ends it.
        self._resume_at = 0.0

    def __repr__(self) -> str:
        return f"<AccountRuntime {self.account_id}>"

    # -- what the worker calls ---------------------------------------------------

    def start(self) -> None:
        """Have the scheduler step the runtime from now on."""
        self._started = True
        if self._own_scheduler:
            self._scheduler.start()
        self._scheduler.schedule(self)

    def leased(self) -> bool:
        """Return True while the lease is certainly still ours."""
        return time.monotonic() < self.lease_deadline and not self.stopping.is_set()

    def wake(self, position: int = 0) -> None:
        """Note a journal position with news for this account and wake up."""
        self._tell(JournalNews(position))

    def update_link(self, link: dict[str, Any]) -> None:
        """Take a newer state of the same link and wake up.

        A run asked for through the link (a poll, a backfill) runs now, also
        while the runtime backs off from a failing server: whoever asked is
        waiting for it.
        """
        self.link = link
        self._tell(LinkNews(link))

    def stop(self) -> None:
        """Stop after the reconciler in flight (a resync job stops at its next write)."""
        self.stopping.set()
        self._resume_at = 0.0
        if self._started:
            self._scheduler.schedule(self)
        else:
            self._close()

    def join(self, timeout: float | None = None) -> None:
        """Wait until the runtime stopped and closed its reconcilers."""
        self._finished.wait(timeout)

    def is_alive(self) -> bool:
        """Return True until the runtime stopped and closed its reconcilers."""
        return not self._finished.is_set()

    # -- the steps -----------------------------------------------------------------

    def _tell(self, news: News) -> None:
        asked = False
        for reconciler in self.reconcilers:
            asked = reconciler.heard(news) or asked
        if asked:
            self._resume_at = 0.0  # someone waits: the backoff ends
        if self._started:
            self._scheduler.schedule(self)

    def _next(self, now: float) -> tuple[Reconciler | None, float]:
        """Return the reconciler to run now, or None and how long to wait.

        Asked-for runs go first, also during a backoff. Among the others that
        are due, the one that waited longest since its last run goes next (list
        order breaks ties), so a push kept busy by a stream of changes never
        starves the poll.
        """
        waits = [(r.due(now), i, r) for i, r in enumerate(self.reconcilers)]
        asked = [r for d, _, r in waits if d == ASKED]
        if asked:
            return asked[0], 0.0
        if now < self._resume_at:
            return None, self._resume_at - now
        ready = [(self._last_run.get(r.name, 0.0), i, r) for d, i, r in waits if d <= 0]
        if ready:
            return min(ready, key=lambda entry: entry[:2])[2], 0.0
        return None, min((d for d, _, _ in waits), default=math.inf)

    def step(self) -> float | None:
        """Run the reconciler that is due, if any; return when to step next (None: done)."""
        now = time.monotonic()
        if self._previous is not None:
            if self._previous.is_alive():
                return now + 0.05
            self._previous = None
        if self.stopping.is_set():
            self._close()
            return None
        reconciler, wait = self._next(now)
        if reconciler is None:
            return now + min(self.config.idle_catch_up, wait)
        if not self.leased():
            # The lease keeper renews it shortly, or stops this runtime.
            return now + min(self.config.lease_renew, 0.2)
        try:
            self._run_one(reconciler)
            self._backoff = 0.0
        except TransientPushError as exc:
            self._backoff = min(max(self._backoff * 2, 0.5), self.config.max_backoff)
            if exc.error.retry_after is not None:
                self._backoff = min(max(exc.error.retry_after, self._backoff), 300.0)
            self._back_off(self._backoff)
        except LinkFailedError:
            self._back_off(self.config.max_backoff)
        except Exception:  # a bug or a database outage: shown, then retried
            log.exception("%s for account %s failed", reconciler.name, self.account_id)
            self._backoff = min(max(self._backoff * 2, 1.0), self.config.max_backoff)
            self._back_off(self._backoff)
        if self.stopping.is_set():
            self._close()
            return None
        now = time.monotonic()
        reconciler, wait = self._next(now)
        return now if reconciler is not None else now + min(self.config.idle_catch_up, wait)

    def _close(self) -> None:
        try:
            for reconciler in self.reconcilers:
                try:
                    reconciler.close()
                except Exception:
                    log.exception("closing %s of %s failed", reconciler.name, self.account_id)
        finally:
            self._scheduler.forget(self)
            self._finished.set()
            if self._own_scheduler:
                # Not joined from its own pool thread: the pool ends when idle.
                threading.Thread(target=self._scheduler.stop, daemon=True).start()

    def _run_one(self, reconciler: Reconciler) -> None:
        started = time.time()
        error: str | None = None
        try:
            with sync_context(account=self.account_id):
                outcome = reconciler.run()
        except TransientPushError as exc:
            error = exc.error.message
            FAILURES.labels(reconciler.name, "transient").inc()
            raise
        except LinkFailedError as exc:
            error = exc.message
            FAILURES.labels(reconciler.name, "link").inc()
            raise
        except Exception as exc:
            error = f"internal error: {type(exc).__name__}: {exc}"
            FAILURES.labels(reconciler.name, "internal").inc()
            raise
        finally:
            ended = time.time()
            self._last_run[reconciler.name] = time.monotonic()
            self._settle(reconciler.name, error)
            for observe in self._observers:
                observe(RunRecord(self.account_id, reconciler.name, started, ended, error))
        for other in self.reconcilers:
            if other is not reconciler:
                other.heard(RanNews(reconciler.name, outcome))

    def _settle(self, name: str, error: str | None) -> None:
        """Show a reconciler's failure, or clear it once it ran cleanly."""
        if error is not None:
            self._errors[name] = error
            self._shown = error
            self._report_error(self.account_id, error)
            return
        self._errors.pop(name, None)
        standing = next(reversed(self._errors.values()), None)
        if standing != self._shown:
            self._shown = standing
            self._report_error(self.account_id, standing)

    def _back_off(self, seconds: float) -> None:
        """Run nothing but asked-for runs for ``seconds`` (a stop or an ask ends it)."""
        self._resume_at = time.monotonic() + seconds


def _server_of(link: dict[str, Any]) -> str:
    """Return the host and port the link's calendar lives on."""
    return urlsplit(str(link.get("calendar_url") or "")).netloc.lower()


_UNKNOWN = object()
