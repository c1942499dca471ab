"""The outbound worker: follows the journal and keeps every linked calendar current.

Threads, per worker process:

* the **reader** follows the journal's notification log and wakes the pusher of
  each account whose appointments changed. On PostgreSQL it sleeps on LISTEN
  (the library's NOTIFY on insert) and polls once a second anyway, so a lost
  notification never delays a change for long; on SQLite it wakes on saves made
  in this process and polls every 100 ms for saves made by other processes.
  (The library's own subscription blocks without a timeout and does not exist
  for SQLite, so the loop is written here.)
* the **lease keeper** takes and renews a lease on every actively linked
  account it can get; an account is served by exactly one worker at a time, and
  the lease of a worker that died expires and is taken by another.
* one **account pusher** per leased account: it asks the query tables which
  appointments' calendar copies are behind the journal and pushes them in order
  of change. A failing server only ever holds up its own account.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from caljournal.adapters.caldav_client import CalDAVError
from caljournal.adapters.caldav_storage import CalDAVStorage
from caljournal.adapters.journal import Journal
from caljournal.adapters.providers import get_profile
from caljournal.adapters.retry import RetryPolicy
from caljournal.adapters.syncstate import SyncStateStore
from caljournal.adapters.syncstate_sql import SQLSyncState
from caljournal.domain.cause import Cause, Origin
from caljournal.links import LinkFailedError, LinkService
from caljournal.projections.inbound import CheckPolicy, Poller, PollReport
from caljournal.projections.push import Pusher, TransientPushError, plan

log = logging.getLogger("caljournal.outbound")

APPOINTMENT_TOPIC = "caljournal:Appointment."
LINK_TOPIC = "caljournal:CalendarLink."


@dataclass(frozen=True)
class WorkerConfig:
    """Timing of a worker; the defaults suit production, tests shorten them."""

    lease_ttl: float = 10.0
    lease_renew: float = 2.0
    catch_up: float = 5.0
    poll: float = 0.1
    batch: int = 100
    max_backoff: float = 60.0
    # A longer Retry-After is waited out in the pusher's backoff, which a
    # requested poll or a stop cuts short, not inside a request.
    retry: RetryPolicy = RetryPolicy(longest_wait=30.0)
    check: CheckPolicy = CheckPolicy()


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


class AccountPusher(threading.Thread):
    """Pushes one account's changes while its worker holds the lease."""

    def __init__(self, worker: OutboundWorker, account_id: str, link: dict[str, Any]) -> None:
        super().__init__(name=f"push-{account_id[:8]}", daemon=True)
        self.worker = worker
        self.account_id = account_id
        self.link = link
        self.wakeup = Wakeup()
        self.stopping = threading.Event()
        # Set by a requested poll and by stop(): ends a backoff early.
        self._interrupt = threading.Event()
        self._poll_asked = False
        self.lease_deadline = 0.0
        self.routed_position = 0
        # Journal positions: changes after the event that chose the calendar are
        # pushed (older ones are the backfill's job); a complete pass moves the
        # watermark to the position read before it started.
        self.baseline = worker.journal.calendar_chosen_position(account_id)
        self.watermark = self.baseline
        self._pusher: Pusher | None = None
        self._renderer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="render")
        self._reader: CalDAVStorage | None = None
        self.next_poll = 0.0  # poll at once when the account is taken
        self.poll_requests_seen = int(link.get("poll_requests", 0))
        self.last_poll: PollReport | None = None
        # The last poll's failure, until a poll succeeds: a clean push pass in
        # between must not clear it from the status.
        self.poll_error: str | None = None

    def update_link(self, link: dict[str, Any]) -> None:
        """Take a newer state of the same link (interval, poll requests) and wake up.

        A requested poll runs now, also while the pusher backs off from a
        failing server: whoever asked is waiting for it.
        """
        self.link = link
        if int(link.get("poll_requests", 0)) > self.poll_requests_seen:
            self.poll_requests_seen = int(link.get("poll_requests", 0))
            self.next_poll = 0.0
            self._poll_asked = True
            self._interrupt.set()
        self.wakeup.set()

    def run_poll(self) -> PollReport | None:
        """Poll the calendar for remote changes (see ``projections.inbound``)."""
        if not self.leased():
            return None
        if self._reader is None:
            stored = self.worker.links._get(uuid.UUID(self.account_id))  # noqa: SLF001
            self._reader = CalDAVStorage(
                self.worker.links.access(stored),
                self.link["calendar_url"],
                get_profile(stored.provider),
                self.worker.config.retry,
            )
        poller = Poller(
            self.worker.journal,
            self._reader,
            self.worker.store,
            self.account_id,
            self.link,
            self.worker.cause,
            check=self.worker.config.check,
        )
        interval = float(self.link.get("poll_interval") or 60)
        try:
            report = poller.poll()
        except CalDAVError as exc:
            self.worker.store.update_inbound(self.account_id, last_error=exc.message)
            self.next_poll = time.monotonic() + (
                min(interval, self.worker.config.max_backoff) if exc.transient else interval
            )
            self.poll_error = exc.message
            raise TransientPushError(exc) from None
        self.next_poll = time.monotonic() + interval
        self.last_poll = report
        self.poll_error = None
        if report.counts.get("repush"):
            # Re-pushed appointments may have changed long before this pass's watermark.
            self.watermark = self.baseline
        return report

    def wake(self, position: int = 0) -> None:
        """Note a journal position with news for this account and wake up."""
        self.routed_position = max(self.routed_position, position)
        self.wakeup.set()

    def stop(self) -> None:
        """Stop after the push in flight."""
        self.stopping.set()
        self._interrupt.set()
        self.wakeup.set()

    def leased(self) -> bool:
        """Return True while the lease is certainly still ours."""
        return time.monotonic() < self.lease_deadline and not self.stopping.is_set()

    def run(self) -> None:
        backoff = 0.0
        try:
            while not self.stopping.is_set():
                try:
                    if self._poll_asked:
                        # Asked for: poll before a push to a failing server can stand in
                        # the way (our pending changes still win: see inbound_decide).
                        self._poll_asked = False
                        self._interrupt.clear()  # this request is being served now
                        self.run_poll()
                    # Push first: a poll then finds the calendar holding our latest
                    # writes (and their records), not older copies of them.
                    self.run_pass()
                    if time.monotonic() >= self.next_poll:
                        self.run_poll()
                        self.run_pass()
                    backoff = 0.0
                    until_poll = max(self.next_poll - time.monotonic(), 0.0)
                    self.wakeup.wait(min(self.worker.config.catch_up, until_poll))
                except TransientPushError as exc:
                    backoff = min(max(backoff * 2, 0.5), self.worker.config.max_backoff)
                    if exc.error.retry_after is not None:
                        backoff = min(max(exc.error.retry_after, backoff), 300.0)
                    self._note_error(exc.error.message)
                    self._back_off(backoff)
                except LinkFailedError as exc:
                    self._note_error(exc.message)
                    self._back_off(self.worker.config.max_backoff)
                except Exception as exc:  # a bug or a database outage: shown, then retried
                    log.exception("outbound pass for account %s failed", self.account_id)
                    self._note_error(f"internal error: {type(exc).__name__}: {exc}")
                    backoff = min(max(backoff * 2, 1.0), self.worker.config.max_backoff)
                    self._back_off(backoff)
        finally:
            self._renderer.shutdown(wait=False, cancel_futures=True)
            if self._reader is not None:
                self._reader.close()
            if self._pusher is not None:
                self._pusher.storage.close()

    def _back_off(self, seconds: float) -> None:
        """Wait ``seconds``, or less when a poll is requested or the pusher stops."""
        if not self._poll_asked:
            self._interrupt.wait(seconds)
        self._interrupt.clear()

    def _note_error(self, message: str) -> None:
        self.worker.store.update_sync_status(
            self.account_id, last_error=message, last_error_us=int(time.time() * 1e6)
        )

    def _pusher_for_link(self) -> Pusher:
        if self._pusher is None:
            link_service = self.worker.links
            stored = link_service._get(uuid.UUID(self.account_id))  # noqa: SLF001
            access = link_service.access(stored)
            storage = CalDAVStorage(
                access,
                self.link["calendar_url"],
                get_profile(stored.provider),
                self.worker.config.retry,
            )
            self._pusher = Pusher(
                self.worker.journal,
                storage,
                self.worker.store,
                self.account_id,
                self.link["calendar_url"],
                self.worker.cause,
            )
        return self._pusher

    def run_pass(self) -> int:
        """Push everything pending; return how many appointments were handled."""
        if not self.leased():
            return 0
        position = self.routed_position
        # Read before anything is queried. Positions commit in order (the library
        # inserts events under a table lock on PostgreSQL; SQLite has one writer),
        # so every change at or below this position is visible to this pass.
        started = self.worker.recorder.max_notification_id() or 0
        pusher = self._pusher_for_link()
        handled = 0
        while self.leased():
            items = self.worker.store.pending_pushes(
                self.account_id,
                self.link["calendar_url"],
                self.watermark,
                self.worker.config.batch,
            )
            if not items:
                break
            succeeded = False
            try:
                # Render the next objects while the server answers the current
                # write (the socket wait releases the GIL): the push loop then
                # runs at the server's speed.
                actions = self._renderer.map(lambda i: plan(i, pusher.calendar_url), items)
                for item, action in zip(items, actions, strict=True):
                    if not self.leased():
                        return handled
                    succeeded = pusher.push(item, action) is not None or succeeded
                    handled += 1
            finally:
                pusher.flush()
                if succeeded:
                    self.worker.store.update_sync_status(
                        self.account_id, last_success_us=int(time.time() * 1e6)
                    )
        else:
            return handled
        # Everything recorded before this pass is on the calendar: later passes need
        # only look at newer positions.
        self.watermark = max(self.baseline, started)
        self.worker.store.update_sync_status(
            self.account_id,
            pushed_position=position,
            last_error=self.poll_error,
            worker=self.worker.owner,
        )
        return handled


class OutboundWorker:
    """Runs the reader, the lease keeper and the account pushers of one process."""

    def __init__(
        self,
        journal: Journal,
        links: LinkService,
        config: WorkerConfig | None = None,
        owner: str | None = None,
        postgres_listen: Callable[[], Any] | None = None,
        store: SyncStateStore | None = None,
    ) -> None:
        self.journal = journal
        self.links = links
        self.config = config or WorkerConfig()
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.recorder = journal.journal_recorder
        self.store = store or SQLSyncState(journal)
        self.pushers: dict[str, AccountPusher] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._journal_news = Wakeup()
        self._link_news = Wakeup()
        self._listen = postgres_listen
        self._threads: list[threading.Thread] = []
        self.position = 0

    def cause(self) -> Cause:
        """Return the cause recorded with events the worker writes."""
        return Cause(Origin.CALDAV, f"worker:{self.owner}", f"push-{uuid.uuid4()}")

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> OutboundWorker:
        """Start the threads."""
        self.position = self.recorder.max_notification_id() or 0
        self.journal.add_listener(self._journal_news.set)
        for target, name in (
            (self._read, "outbound-reader"),
            (self._keep_leases, "outbound-leases"),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, release: bool = True) -> None:
        """Stop all threads; give up the leases unless ``release`` is False."""
        self._stopping.set()
        self._journal_news.set()
        self._link_news.set()
        self.journal.remove_listener(self._journal_news.set)
        with self._lock:
            pushers = list(self.pushers.values())
            self.pushers.clear()
        for pusher in pushers:
            pusher.stop()
        for pusher in pushers:
            pusher.join(timeout=30)
            if release:
                self.store.release_lease(pusher.account_id, self.owner)
        for thread in self._threads:
            thread.join(timeout=10)
        self.store.retire(self.owner)

    # -- the reader -------------------------------------------------------------

    def _read(self) -> None:
        listener = self._listen() if self._listen else None
        try:
            while not self._stopping.is_set():
                try:
                    notifications = self.recorder.select_notifications(
                        start=self.position, limit=500, inclusive_of_start=False
                    )
                except Exception:
                    log.exception("reading the journal failed; retrying")
                    self._stopping.wait(1.0)
                    continue
                if notifications:
                    self._route(notifications)
                    self.position = notifications[-1].id
                    continue
                if listener is not None:
                    listener.wait(1.0)
                else:
                    self._journal_news.wait(self.config.poll)
        finally:
            if listener is not None:
                listener.close()

    def _route(self, notifications: list[Any]) -> None:
        changed: dict[str, int] = {}
        link_changed = False
        for n in notifications:
            if n.topic.startswith(APPOINTMENT_TOPIC):
                changed[str(n.originator_id)] = n.id
            elif n.topic.startswith(LINK_TOPIC):
                link_changed = True
        if link_changed:
            self._link_news.set()
        if not changed:
            return
        accounts = self.recorder.accounts_of(list(changed))
        with self._lock:
            for appointment_id, account_id in accounts.items():
                pusher = self.pushers.get(account_id)
                if pusher is not None:
                    pusher.wake(changed[appointment_id])

    # -- leases -----------------------------------------------------------------

    def _keep_leases(self) -> None:
        while not self._stopping.is_set():
            try:
                self._renew_leases()
            except Exception:
                log.exception("renewing leases failed; retrying")
            self._link_news.wait(self.config.lease_renew)

    def _renew_leases(self) -> None:
        now_us = int(time.time() * 1e6)
        ttl_us = int(self.config.lease_ttl * 1e6)
        live = self.store.heartbeat(self.owner, now_us, ttl_us)
        active = {link["account_id"]: link for link in self.recorder.select_links("active")}
        # Each live worker serves at most its fair share, so adding a worker adds
        # capacity: a worker over its share lets the excess go for others to take.
        share = math.ceil(len(active) / live) if active else 0
        with self._lock:
            held = [a for a in self.pushers if a in active]
        for account_id in held[share:]:
            self._drop(account_id)
        held = held[:share]
        leases = self.store.leases()
        free = [
            a
            for a in sorted(active)
            if a not in held
            and (a not in leases or leases[a].expires_us < now_us or leases[a].owner == self.owner)
        ]
        for account_id in held + free:
            if self._stopping.is_set():
                return
            with self._lock:
                serving = len(self.pushers)
            if account_id not in held and serving >= share:
                break
            self._hold(account_id, active[account_id], ttl_us)
        with self._lock:
            gone = [a for a in self.pushers if a not in active]
        for account_id in gone:
            self._drop(account_id)

    def _hold(self, account_id: str, link: dict[str, Any], ttl_us: int) -> None:
        asked = time.monotonic()
        held = self.store.claim_lease(account_id, self.owner, int(time.time() * 1e6), ttl_us)
        with self._lock:
            # Checked under the lock: stop() collects the pushers under it, so a
            # pusher started after that would outlive the worker and its journal.
            stopping = self._stopping.is_set()
            pusher = self.pushers.get(account_id)
            if held and pusher is not None and _same_target(pusher.link, link):
                pusher.lease_deadline = asked + self.config.lease_ttl - 1.0
                if pusher.link.get("version") != link.get("version"):
                    pusher.update_link(link)
                return
            if pusher is not None:
                pusher.stop()
                del self.pushers[account_id]
            if held and not stopping:
                pusher = AccountPusher(self, account_id, link)
                pusher.lease_deadline = asked + self.config.lease_ttl - 1.0
                pusher.routed_position = self.position
                self.pushers[account_id] = pusher
                pusher.start()
                log.info("serving account %s", account_id)
        if held and stopping:
            self.store.release_lease(account_id, self.owner)

    def _drop(self, account_id: str) -> None:
        with self._lock:
            pusher = self.pushers.pop(account_id, None)
        if pusher is not None:
            pusher.stop()
            pusher.join(timeout=30)
        self.store.release_lease(account_id, self.owner)
        log.info("released account %s", account_id)

    def served_accounts(self) -> set[str]:
        """Return the accounts this worker pushes for now."""
        with self._lock:
            return set(self.pushers)


def _same_target(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keys = ("calendar_url", "server_url", "username", "auth", "credentials_serial", "status")
    return all(a.get(k) == b.get(k) for k in keys)
