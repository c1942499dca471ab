"""Many accounts on one worker: a slow server holds its share of the pool, no more."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from caljournal.adapters.retry import RetryPolicy
from caljournal.adapters.secrets import Credentials
from caljournal.appointments import Booking
from caljournal.bootstrap import Container
from caljournal.domain.cause import Cause, Origin
from caljournal.projections.outbound import WorkerConfig
from caljournal.projections.runtime import RunRecord
from tests.conftest import operator
from tests.support.calendars import wait_until
from tests.support.faultproxy import FaultProxy
from tests.support.radicale import RadicaleProcess

BERLIN = ZoneInfo("Europe/Berlin")
INTERVAL = 5  # the shortest poll interval a link takes
SMALL_POOL = WorkerConfig(
    lease_ttl=5.0,
    lease_renew=0.2,
    catch_up=1.0,
    poll=0.02,
    pool=4,
    retry=RetryPolicy(attempts=1, initial=0.05, maximum=0.3, longest_wait=1.0),
)


def link(container: Container, base_url: str, radicale: RadicaleProcess, name: str) -> str:
    container.accounts.open_account(name, operator())
    account_id = container.accounts.find_account(name).id
    cal_id = f"{name}-{uuid.uuid4().hex[:6]}"
    radicale.make_calendar("alice", "secret", cal_id, cal_id=cal_id)
    container.links.link(
        account_id, f"{base_url}alice/{cal_id}/", Credentials("alice", "secret"), operator()
    )
    container.links.set_poll_interval(account_id, INTERVAL, operator())
    return str(account_id)


def most_at_once(runs: list[RunRecord]) -> int:
    edges = sorted([(r.started, 1) for r in runs] + [(r.ended, -1) for r in runs])
    running = peak = 0
    for _, change in edges:
        running += change
        peak = max(peak, running)
    return peak


def test_accounts_of_a_slow_server_do_not_delay_the_others_polls_or_pushes(
    container: Container, radicale: RadicaleProcess
) -> None:
    runs: list[RunRecord] = []
    with FaultProxy(radicale.url, upstream_timeout=120.0) as proxy:
        slow = [link(container, proxy.url, radicale, f"slow{n}") for n in range(6)]
        healthy = [link(container, radicale.url, radicale, f"ok{n}") for n in range(3)]
        worker = container.outbound_worker(SMALL_POOL)
        worker.observers.append(runs.append)
        worker.start()
        try:
            polled = lambda a: container.sync_state.inbound_state(a).last_poll_us  # noqa: E731
            wait_until(lambda: all(polled(a) for a in slow + healthy), timeout=60)
            # From now on the slow server answers each request after 4 s, and its
            # six accounts want a poll every 5 s: more work than the pool has threads.
            proxy.delay_next(10**6, 4.0)
            began = time.time()
            time.sleep(INTERVAL)
            start = datetime(2027, 5, 3, 9, tzinfo=BERLIN)
            booked = container.appointments.book(
                uuid.UUID(healthy[0]),
                Booking("Booked meanwhile", start, start + timedelta(hours=1), "Europe/Berlin"),
                Cause(Origin.API, "test", "test"),
            )
            booked_at = time.monotonic()
            appointment = str(booked.state["id"])
            wait_until(
                lambda: (copy := container.sync_state.copy_of(appointment)) and copy.present,
                timeout=30,
            )
            pushed_after = time.monotonic() - booked_at
            time.sleep(max(began + 4 * INTERVAL - time.time(), 0))
            ended = time.time()
        finally:
            proxy.clear_rules()
            worker.stop()
    window = [r for r in runs if r.started >= began and r.ended <= ended]
    for account in healthy:
        polls = sorted(
            r.started for r in window if r.account_id == account and r.reconciler == "poll"
        )
        gaps = [b - a for a, b in zip([began, *polls], [*polls, ended], strict=True)]
        assert len(polls) >= 3, (account, polls)
        assert max(gaps) < INTERVAL + 3.0, (account, gaps)
    slow_runs = [r for r in runs if r.account_id in slow and r.ended >= began]
    assert slow_runs, "the slow server's accounts were served too"
    # Half the pool of four, never more.
    assert most_at_once(slow_runs) <= 2
    assert pushed_after < 5.0
