"""A dead worker's accounts: taken when its leases expire, all in one claim."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence

from caljournal.adapters.journal import Journal
from caljournal.adapters.retry import RetryPolicy
from caljournal.adapters.secrets import Credentials
from caljournal.adapters.syncstate_sql import SQLSyncState
from caljournal.bootstrap import Container
from caljournal.projections.runtime import WorkerConfig
from caljournal.projections.worker import OutboundWorker
from tests.conftest import operator
from tests.support.calendars import wait_until
from tests.support.radicale import RadicaleProcess

# A long period: the old keeper took expired leases only at its next round,
# PERIOD after the first one; the dead worker's leases expire well before that.
PERIOD = 20.0
SLOW_KEEPER = WorkerConfig(
    lease_ttl=60.0,
    lease_renew=PERIOD,
    catch_up=1.0,
    poll=0.05,
    pool=2,
    retry=RetryPolicy(attempts=1, initial=0.05, maximum=0.3, longest_wait=1.0),
)


class CountedClaims(SQLSyncState):
    """The SQL store, noting every lease claim."""

    def __init__(self, journal: Journal) -> None:
        super().__init__(journal)
        self.batches: list[tuple[float, set[str]]] = []
        self.single: list[str] = []
        self._noted = threading.Lock()

    def claim_leases(
        self, account_ids: Sequence[str], owner: str, now_us: int, ttl_us: int
    ) -> set[str]:
        taken = super().claim_leases(account_ids, owner, now_us, ttl_us)
        with self._noted:
            self.batches.append((now_us / 1e6, taken))
        return taken

    def claim_lease(self, account_id: str, owner: str, now_us: int, ttl_us: int) -> bool:
        with self._noted:
            self.single.append(account_id)
        return super().claim_lease(account_id, owner, now_us, ttl_us)


def link(container: Container, radicale: RadicaleProcess, name: str) -> str:
    container.accounts.open_account(name, operator())
    account_id = container.accounts.find_account(name).id
    cal_id = f"{name}-{uuid.uuid4().hex[:6]}"
    radicale.make_calendar("alice", "secret", cal_id, cal_id=cal_id)
    container.links.link(
        account_id, f"{radicale.url}alice/{cal_id}/", Credentials("alice", "secret"), operator()
    )
    return str(account_id)


def test_a_dead_workers_leases_are_taken_in_one_claim_as_soon_as_they_expire(
    container: Container, radicale: RadicaleProcess
) -> None:
    accounts = {link(container, radicale, f"held{n}") for n in range(8)}
    store = CountedClaims(container.journal)
    # A worker that died a moment ago: its heartbeat and leases run out in 3 s.
    now_us = int(time.time() * 1e6)
    store.heartbeat("dead", now_us, 2_900_000)
    assert store.claim_leases(sorted(accounts), "dead", now_us, 3_000_000) == accounts
    expiry = (now_us + 3_000_000) / 1e6
    store.batches.clear()
    worker = OutboundWorker(container.journal, container.links, SLOW_KEEPER, store=store)
    worker.start()
    try:

        def held_by_worker() -> bool:
            leases = store.leases()
            return all(a in leases and leases[a].owner == worker.owner for a in accounts)

        wait_until(held_by_worker, timeout=PERIOD * 2, interval=0.05)
        wait_until(lambda: worker.served_accounts() == accounts, timeout=PERIOD)
    finally:
        worker.stop()

    # Not one account was taken before the leases expired, all of them in one
    # statement after: the keeper woke for the expiry, not at its next round.
    assert store.single == []
    assert [taken for _, taken in store.batches] == [accounts]
    claimed_at = store.batches[0][0]
    assert expiry < claimed_at < expiry + PERIOD / 2
