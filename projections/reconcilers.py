"""The reconcilers an account runtime runs: push, poll, and backfill/replay requests.

Each follows ``projections.runtime.Reconciler``. The work itself is done by
``Pusher`` (``projections.push``), ``Poller`` (``projections.inbound``) and
the resync service (``caljournal.resyncs`` over ``projections.resync``); each
is built in one small factory function here (``make_pusher``, ``make_poller``,
``make_resyncs``), the one place that knows how.
"""

from __future__ import annotations

import math
import random
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from caljournal.adapters.caldav_client import CalDAVError
from caljournal.adapters.caldav_storage import CalDAVStorage
from caljournal.adapters.providers import get_profile
from caljournal.domain.errors import DomainError
from caljournal.errors import ApplicationError
from caljournal.projections.inbound import Poller, PollReport
from caljournal.projections.push import Pusher, TransientPushError, plan
from caljournal.projections.resync import MassDeleteRefusedError
from caljournal.projections.runtime import (
    ASKED,
    AccountRuntime,
    JournalNews,
    LinkNews,
    News,
    RanNews,
    Reconciler,
)

if TYPE_CHECKING:
    from caljournal.projections.worker import OutboundWorker
    from caljournal.resyncs import ResyncService


#: Up to this share of the poll interval is taken off each next poll (jitter).
POLL_JITTER = 0.05


# -- factories: how each piece of work is built ------------------------------------


def make_storage(worker: OutboundWorker, account_id: str, link: dict[str, Any]) -> CalDAVStorage:
    """Return the calendar storage of the link's calendar."""
    stored = worker.links._get(uuid.UUID(account_id))  # noqa: SLF001
    return CalDAVStorage(
        worker.links.access(stored),
        link["calendar_url"],
        get_profile(stored.provider),
        worker.config.retry,
    )


def make_pusher(worker: OutboundWorker, account_id: str, link: dict[str, Any]) -> Pusher:
    """Return a pusher writing into the link's calendar."""
    storage = make_storage(worker, account_id, link)
    return Pusher(
        worker.journal, storage, worker.store, account_id, link["calendar_url"], worker.cause
    )


def make_reader(worker: OutboundWorker, account_id: str, link: dict[str, Any]) -> CalDAVStorage:
    """Return the storage the poller reads the link's calendar from (kept between polls)."""
    return make_storage(worker, account_id, link)


def make_poller(
    worker: OutboundWorker, account_id: str, link: dict[str, Any], reader: CalDAVStorage
) -> Poller:
    """Return a poller of the link's calendar."""
    return Poller(
        worker.journal,
        reader,
        worker.store,
        account_id,
        link,
        worker.cause,
        check=worker.config.check,
        pool=worker.pool,
    )


def make_resyncs(worker: OutboundWorker) -> ResyncService:
    """Return the service that runs backfill and replay requests."""
    from caljournal.resyncs import ResyncService
    from caljournal.sync import SyncService

    sync = SyncService(worker.journal, worker.links, worker.config.resync_retry, worker.store)
    return ResyncService(worker.journal, worker.links, sync, worker.config.lease_ttl)


def reconcilers_for(worker: OutboundWorker) -> Callable[[AccountRuntime], Sequence[Reconciler]]:
    """Return the factory of an account's reconcilers, in priority order.

    Push comes first: a poll then finds the calendar holding our latest writes.
    """

    def build(runtime: AccountRuntime) -> Sequence[Reconciler]:
        account, link, leased = runtime.account_id, runtime.link, runtime.leased
        return [
            PushReconciler(worker, account, link, leased),
            PollReconciler(worker, account, link, leased),
            ResyncJob(worker, account, link, leased),
        ]

    return build


# -- push ----------------------------------------------------------------------------


class PushReconciler:
    """Pushes the account's pending changes, in order of change."""

    name = "push"

    def __init__(
        self,
        worker: OutboundWorker,
        account_id: str,
        link: dict[str, Any],
        leased: Callable[[], bool],
    ) -> None:
        self.worker = worker
        self.account_id = account_id
        self.link = link
        self.leased = leased
        self.routed_position = worker.position
        # Journal positions: changes after the event that chose the calendar are
        # pushed (older ones are the backfill's job); a complete pass moves the
        # watermark to the position read before it started.
        self.baseline = worker.journal.calendar_chosen_position(account_id)
        self.watermark = self.baseline
        self._woken = True
        self._next_pass = 0.0
        self._quiet = 0  # catch-up passes in a row that found nothing
        self._pusher: Pusher | None = None

    def due(self, now: float) -> float:
        """Run when woken by news, and every ``catch_up`` seconds anyway.

        Each catch-up pass that finds nothing doubles the wait for the next
        one, up to ``idle_catch_up``: news is routed to the account anyway, and
        a thousand idle accounts would otherwise query the store hundreds of
        times a second for nothing.
        """
        return 0.0 if self._woken else self._next_pass - now

    def heard(self, news: News) -> bool:
        """Wake on journal news and after a poll (it may ask for pushes again)."""
        if isinstance(news, JournalNews):
            self.routed_position = max(self.routed_position, news.position)
            self._woken = True
        elif isinstance(news, RanNews) and news.name != self.name:
            if isinstance(news.outcome, PollReport) and news.outcome.counts.get("repush"):
                # Re-pushed appointments may have changed long before the watermark.
                self.watermark = self.baseline
            self._woken = True
        elif isinstance(news, LinkNews):
            self.link = news.link
        return False

    def run(self) -> int:
        """Push everything pending (see :meth:`run_pass`)."""
        news, self._woken = self._woken, False
        try:
            handled = self.run_pass()
        except BaseException:
            self._woken = True  # try again after the backoff
            raise
        config = self.worker.config
        self._quiet = 0 if news or handled else self._quiet + 1
        wait = min(config.catch_up * 2**self._quiet, max(config.catch_up, config.idle_catch_up))
        self._next_pass = time.monotonic() + wait
        return handled

    def run_pass(self) -> int:
        """Push everything pending; return how many appointments were handled."""
        if not self.leased():
            return 0
        position = self.routed_position
        # Read before anything is queried. Positions commit in order (the library
        # inserts events under a table lock on PostgreSQL; SQLite has one writer),
        # so every change at or below this position is visible to this pass.
        started = self.worker.journal.journal_recorder.max_notification_id() or 0
        # A thread of its own only while a pass pushes: an idle account holds none.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="render") as renderer:
            return self._push_all(started, position, renderer)

    def _push_all(self, started: int, position: int, renderer: ThreadPoolExecutor) -> int:
        store = self.worker.store
        handled = 0
        while self.leased():
            items = store.pending_pushes(
                self.account_id,
                self.link["calendar_url"],
                self.watermark,
                self.worker.config.batch,
            )
            if not items:
                break
            if self._pusher is None:
                # Built on the first write: an account never written to holds
                # no connection (nor its pool's watcher thread) for pushes.
                self._pusher = make_pusher(self.worker, self.account_id, self.link)
            pusher = self._pusher
            succeeded = False
            try:
                # Render the next objects while the server answers the current
                # write (the socket wait releases the GIL): the push loop then
                # runs at the server's speed.
                actions = renderer.map(lambda i, url=pusher.calendar_url: plan(i, url), items)
                pusher.begin(items)
                for item, action in zip(items, actions, strict=True):
                    if not self.leased():
                        return handled
                    succeeded = pusher.push(item, action) is not None or succeeded
                    handled += 1
            finally:
                pusher.flush()
                if succeeded:
                    store.update_sync_status(
                        self.account_id, last_success_us=int(time.time() * 1e6)
                    )
        else:
            return handled
        # Everything recorded before this pass is on the calendar: later passes need
        # only look at newer positions.
        self.watermark = max(self.baseline, started)
        store.update_sync_status(
            self.account_id, pushed_position=position, worker=self.worker.owner
        )
        return handled

    def close(self) -> None:
        """Close the writer."""
        if self._pusher is not None:
            self._pusher.storage.close()


# -- poll ----------------------------------------------------------------------------


class PollReconciler:
    """Polls the calendar for remote changes every ``poll_interval``, or when asked."""

    name = "poll"

    def __init__(
        self,
        worker: OutboundWorker,
        account_id: str,
        link: dict[str, Any],
        leased: Callable[[], bool],
    ) -> None:
        self.worker = worker
        self.account_id = account_id
        self.link = link
        self.leased = leased
        self.next_poll = 0.0  # poll at once when the account is taken
        self.requests_seen = int(link.get("poll_requests", 0))
        self._asked = False
        self._reader: CalDAVStorage | None = None
        self.last_poll: PollReport | None = None

    def due(self, now: float) -> float:
        """Run when asked (before anything else), or when the interval has passed."""
        return ASKED if self._asked else self.next_poll - now

    def heard(self, news: News) -> bool:
        """Take a newer link; a new poll request asks for a poll now."""
        if not isinstance(news, LinkNews):
            return False
        self.link = news.link
        requests = int(news.link.get("poll_requests", 0))
        if requests > self.requests_seen:
            self.requests_seen = requests
            self.next_poll = 0.0
            self._asked = True
            return True
        return False

    def run(self) -> PollReport | None:
        """Poll the calendar (see ``projections.inbound``).

        :raises TransientPushError: when the server cannot be asked; the error
            is also recorded in the inbound status.
        """
        self._asked = False
        if not self.leased():
            return None
        if self._reader is None:
            self._reader = make_reader(self.worker, self.account_id, self.link)
        poller = make_poller(self.worker, self.account_id, self.link, self._reader)
        interval = float(self.link.get("poll_interval") or 60)
        try:
            report = poller.poll()
        except CalDAVError as exc:
            self.worker.store.update_inbound(self.account_id, last_error=exc.message)
            self.next_poll = time.monotonic() + (
                min(interval, self.worker.config.max_backoff) if exc.transient else interval
            )
            raise TransientPushError(exc) from None
        # A little early, by a random amount: accounts taken together (a worker
        # starting, a dead worker's accounts handed over) drift apart instead of
        # polling in bursts, and no poll is ever later than the interval.
        self.next_poll = time.monotonic() + interval * (1.0 - random.uniform(0.0, POLL_JITTER))
        self.last_poll = report
        return report

    def close(self) -> None:
        """Close the reader."""
        if self._reader is not None:
            self._reader.close()


# -- backfill and replay requests -----------------------------------------------------


class ResyncJob:
    """Runs the account's backfill and replay requests, oldest first, one at a time."""

    name = "resync"

    def __init__(
        self,
        worker: OutboundWorker,
        account_id: str,
        link: dict[str, Any],
        leased: Callable[[], bool],
    ) -> None:
        self.worker = worker
        self.account_id = account_id
        self.leased = leased
        self.requests_seen = int(link.get("resync_requests", 0))
        # Look once when the account is taken: requests made while no worker
        # held it, or left running by a worker that died.
        self._look = True
        self._asked = False
        self._resyncs: ResyncService | None = None

    def due(self, now: float) -> float:
        """Run when a request came in (asked for), or when there may be open ones."""
        if self._asked:
            return ASKED
        return 0.0 if self._look else math.inf

    def heard(self, news: News) -> bool:
        """A new request on the link asks for a run now."""
        if isinstance(news, LinkNews):
            requests = int(news.link.get("resync_requests", 0))
            if requests > self.requests_seen:
                self.requests_seen = requests
                self._look = self._asked = True
                return True
        return False

    def run(self) -> Any:
        """Run the oldest open request; its outcome is recorded on the link and its row.

        A request that fails (the link cannot be used, too many deletions) is
        finished as failed and does not stop the runtime.
        """
        from caljournal.resyncs import ResyncInterruptedError

        self._asked = False
        if self._resyncs is None:
            self._resyncs = make_resyncs(self.worker)
        open_requests = self._resyncs.open_requests(self.account_id)
        if not open_requests:
            self._look = False
            return None
        try:
            return self._resyncs.run(open_requests[0], self.worker.owner, self.leased)
        except ResyncInterruptedError:
            return None  # the next lease holder runs it again
        except (ApplicationError, DomainError, MassDeleteRefusedError) as exc:
            return exc  # recorded as the request's outcome

    def close(self) -> None:
        """Nothing to release: each run opens and closes its own connections."""
