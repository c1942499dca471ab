"""The outbound worker: follows the journal and keeps every linked calendar current.

Threads, per worker process:

* the **reader** follows the journal's notification log and wakes the runtime
  of each account whose appointments changed. On PostgreSQL it sleeps on LISTEN
  (the library's NOTIFY on insert) and polls once a second anyway, so a lost
  notification never delays a change for long; on SQLite it wakes on saves made
  in this process and polls every 100 ms for saves made by other processes.
  (The library's own subscription blocks without a timeout and does not exist
  for SQLite, so the loop is written here.)
* the **lease keeper** takes a lease on the actively linked accounts it can
  get, up to its share (the accounts divided by the live workers), and renews
  them all in one statement; an account is served by exactly one worker at a
  time. A worker that died stops renewing: the keeper wakes when the first of
  its leases expires (not only every ``lease_renew``) and takes the expired
  leases, up to its share, in one statement per 500 accounts.
* the **scheduler** and its pool (``projections.scheduler``, ``pool`` threads):
  one **account runtime** per leased account (``projections.runtime``) runs
  the account's reconcilers one at a time, in a pool thread when the account
  is due: pushes of changes, polls of the calendar, backfill and replay
  requests (``projections.reconcilers``). An idle account runs in no thread; a
  failing server holds at most ``per_server`` pool threads and backs off, so
  it only ever holds up its own accounts.
"""

from __future__ import annotations

import logging
import math
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from caljournal.adapters.cpu_pool import INLINE, CpuPool
from caljournal.adapters.journal import Journal
from caljournal.adapters.syncstate import Lease, SyncStateStore
from caljournal.adapters.syncstate_sql import SQLSyncState
from caljournal.domain.cause import Cause, Origin
from caljournal.links import LinkService
from caljournal.projections.reconcilers import reconcilers_for
from caljournal.projections.runtime import AccountRuntime, RunRecord, Wakeup, WorkerConfig
from caljournal.projections.scheduler import Scheduler

log = logging.getLogger("caljournal.outbound")

APPOINTMENT_TOPIC = "caljournal:Appointment."
LINK_TOPIC = "caljournal:CalendarLink."
#: How long after another owner's lease expires the keeper wakes to take it.
EXPIRY_MARGIN = 0.01


class OutboundWorker:
    """Runs the reader, the lease keeper and the account runtimes of one process."""

    def __init__(
        self,
        journal: Journal,
        links: LinkService,
        config: WorkerConfig | None = None,
        owner: str | None = None,
        postgres_listen: Callable[[], Any] | None = None,
        store: SyncStateStore | None = None,
        pool: CpuPool = INLINE,
    ) -> None:
        self.journal = journal
        self.links = links
        self.pool = pool  # parses the objects of large polls (see inbound_chunks)
        self.config = config or WorkerConfig()
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.recorder = journal.journal_recorder
        self.store = store or SQLSyncState(journal)
        self.runtimes: dict[str, AccountRuntime] = {}
        # Told of every reconciler run (account, reconciler, start, end, error).
        self.observers: list[Callable[[RunRecord], None]] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._journal_news = Wakeup()
        self._link_news = Wakeup()
        self._listen = postgres_listen
        self._threads: list[threading.Thread] = []
        self.scheduler = Scheduler(
            self.config.pool, self.config.per_server, name="outbound-scheduler"
        )
        self.position = 0

    def cause(self) -> Cause:
        """Return the cause recorded with events the worker writes."""
        return Cause(Origin.CALDAV, f"worker:{self.owner}", f"push-{uuid.uuid4()}")

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> OutboundWorker:
        """Start the threads."""
        self.position = self.recorder.max_notification_id() or 0
        self.journal.add_listener(self._journal_news.set)
        self.scheduler.start()
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
            runtimes = list(self.runtimes.values())
            self.runtimes.clear()
        for runtime in runtimes:
            runtime.stop()
        for runtime in runtimes:
            runtime.join(timeout=30)
            if release:
                self.store.release_lease(runtime.account_id, self.owner)
        for thread in self._threads:
            thread.join(timeout=10)
        self.scheduler.stop()
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

    def _route(self, notifications: Sequence[Any]) -> None:
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
                runtime = self.runtimes.get(account_id)
                if runtime is not None:
                    runtime.wake(changed[appointment_id])

    # -- leases -----------------------------------------------------------------

    def _keep_leases(self) -> None:
        while not self._stopping.is_set():
            wait = self.config.lease_renew
            try:
                wait = self._renew_leases()
            except Exception:
                log.exception("renewing leases failed; retrying")
            self._link_news.wait(wait)

    def _renew_leases(self) -> float:
        """Renew, drop and take leases; return how long to wait before the next round."""
        now_us = int(time.time() * 1e6)
        ttl_us = int(self.config.lease_ttl * 1e6)
        live = self.store.heartbeat(self.owner, now_us, ttl_us)
        active = {link["account_id"]: link for link in self.recorder.select_links("active")}
        # Each live worker serves at most its fair share, so adding a worker adds
        # capacity: a worker over its share lets the excess go for others to take.
        share = math.ceil(len(active) / live) if active else 0
        with self._lock:
            held = [a for a in self.runtimes if a in active]
        for account_id in held[share:]:
            self._drop(account_id)
        held = held[:share]
        # One statement renews every lease held: a thousand accounts cost what one does.
        asked = time.monotonic()
        self.store.renew_leases(self.owner, now_us, ttl_us)
        leases = self.store.leases()
        for account_id in held:
            ours = account_id in leases and leases[account_id].owner == self.owner
            self._hold(account_id, active[account_id], ttl_us, renewed_at=asked if ours else None)
        free = [
            a
            for a in active
            if a not in held
            and (a not in leases or leases[a].expires_us < now_us or leases[a].owner == self.owner)
        ]
        # In random order: two workers taking over a third's accounts take
        # different ones instead of contending for the same.
        random.shuffle(free)
        self._take(free, share, active, ttl_us)
        with self._lock:
            gone = [a for a in self.runtimes if a not in active]
        for account_id in gone:
            self._drop(account_id)
        return keeper_wait(
            leases.values(), self.owner, now_us, int(time.time() * 1e6), self.config.lease_renew
        )

    def _take(
        self, free: list[str], share: int, active: dict[str, dict[str, Any]], ttl_us: int
    ) -> None:
        """Take free accounts up to the share, a batch of leases per statement, and serve them."""
        while free and not self._stopping.is_set():
            with self._lock:
                wanted = share - len(self.runtimes)
            if wanted <= 0:
                return
            batch, free = free[:wanted], free[wanted:]
            asked = time.monotonic()
            taken = self.store.claim_leases(batch, self.owner, int(time.time() * 1e6), ttl_us)
            for account_id in batch:
                if account_id in taken:
                    self._hold(account_id, active[account_id], ttl_us, renewed_at=asked)

    def _hold(
        self,
        account_id: str,
        link: dict[str, Any],
        ttl_us: int,
        renewed_at: float | None = None,
    ) -> None:
        """Serve the account if its lease is ours (``renewed_at``: renewed then) or can be taken."""
        if renewed_at is not None:
            asked, held = renewed_at, True
        else:
            asked = time.monotonic()
            held = self.store.claim_lease(account_id, self.owner, int(time.time() * 1e6), ttl_us)
        with self._lock:
            # Checked under the lock: stop() collects the runtimes under it, so a
            # runtime started after that would outlive the worker and its journal.
            stopping = self._stopping.is_set()
            runtime = self.runtimes.get(account_id)
            if held and runtime is not None and _same_target(runtime.link, link):
                runtime.lease_deadline = asked + self.config.lease_ttl - 1.0
                if runtime.link.get("version") != link.get("version"):
                    runtime.update_link(link)
                return
            previous = runtime
            if runtime is not None:
                runtime.stop()
                del self.runtimes[account_id]
            if held and not stopping:
                runtime = AccountRuntime(
                    account_id,
                    link,
                    self.config,
                    reconcilers_for(self),
                    self._report_error,
                    self.observers,
                    previous=previous,
                    scheduler=self.scheduler,
                )
                runtime.lease_deadline = asked + self.config.lease_ttl - 1.0
                self.runtimes[account_id] = runtime
                runtime.start()
                log.info("serving account %s", account_id, extra={"account": account_id})
        if held and stopping:
            self.store.release_lease(account_id, self.owner)

    def _report_error(self, account_id: str, message: str | None) -> None:
        """Show an account's standing error in its sync status (None: clear it)."""
        if message is None:
            self.store.update_sync_status(account_id, last_error=None)
        else:
            self.store.update_sync_status(
                account_id, last_error=message, last_error_us=int(time.time() * 1e6)
            )

    def _drop(self, account_id: str) -> None:
        with self._lock:
            runtime = self.runtimes.pop(account_id, None)
        if runtime is not None:
            runtime.stop()
            runtime.join(timeout=30)
        self.store.release_lease(account_id, self.owner)
        log.info("released account %s", account_id, extra={"account": account_id})

    def served_accounts(self) -> set[str]:
        """Return the accounts this worker serves now."""
        with self._lock:
            return set(self.runtimes)


def keeper_wait(
    leases: Iterable[Lease], owner: str, judged_us: int, now_us: int, period: float
) -> float:
    """Return how long the lease keeper waits before its next round (seconds).

    Its period, unless a lease of another owner expires sooner: a worker that
    died stops renewing, and its accounts are taken just after its leases
    expire instead of up to a period later. ``judged_us`` is the time the round
    told expired leases from live ones by: a lease expired by then is not
    waited for (the round could take it, or its share was full), one that
    expired since is taken at once by the next round.
    """
    soonest = min(
        (
            lease.expires_us
            for lease in leases
            if lease.owner != owner and lease.expires_us >= judged_us
        ),
        default=None,
    )
    if soonest is None:
        return period
    # A lease is free once ``expires_us < now``: wake just past the expiry.
    return min(period, max(soonest - now_us, 0) / 1e6 + EXPIRY_MARGIN)


def _same_target(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keys = ("calendar_url", "server_url", "username", "auth", "credentials_serial", "status")
    return all(a.get(k) == b.get(k) for k in keys)
