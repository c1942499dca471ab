"""Worker processes: killed with SIGKILL mid-stream, and two sharing one PostgreSQL."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from caljournal.adapters.secrets import Credentials
from caljournal.appointments import Booking
from caljournal.bootstrap import Container, bootstrap
from caljournal.domain.cause import Cause, Origin
from caljournal.settings import load_settings
from tests.conftest import operator
from tests.support.calendars import differences, wait_until
from tests.support.radicale import RadicaleProcess

BERLIN = ZoneInfo("Europe/Berlin")
API = Cause(Origin.API, "token:test/default", "test")


class WorkerProcess:
    """``caljournal worker --verbose`` as a child process."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        with open(self.log, "ab") as handle:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "caljournal", "worker", "--verbose"],
                env=self.env,
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
        return self

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def pushes(self) -> list[tuple[float, str, str]]:
        """Return (time, account, appointment) for every push it logged."""
        pattern = re.compile(
            r"^(\d+\.\d+) INFO caljournal.outbound account (\S+) appointment (\S+) "
        )
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            match = pattern.match(line)
            if match:
                found.append((float(match.group(1)), match.group(2), match.group(3)))
        return found


def worker_env(database_url: str, key_file: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALJOURNAL_")}
    env.update(
        {
            "CALJOURNAL_DATABASE_URL": database_url,
            "CALJOURNAL_SECRET_KEY_FILE": str(key_file),
            "CALJOURNAL_ALLOW_PRIVATE_ADDRESSES": "true",
            "CALJOURNAL_WORKER_LEASE_TTL": "3",
            "CALJOURNAL_WORKER_POLL": "0.05",
            # pushes() reads the human log format (JSON is the default off a terminal).
            "CALJOURNAL_LOG_FORMAT": "human",
        }
    )
    return env


@pytest.fixture
def journal_for_workers(
    database_url: str, tmp_path: Path
) -> Iterator[tuple[Container, dict[str, str]]]:
    key_file = tmp_path / "shared.key"
    container = bootstrap(
        load_settings(
            database_url=database_url, secret_key_file=key_file, allow_private_addresses=True
        )
    )
    yield container, worker_env(database_url, key_file)
    container.close()


def link_account(
    container: Container, radicale: RadicaleProcess, name: str
) -> tuple[uuid.UUID, Any]:
    container.accounts.open_account(name, operator())
    account_id = container.accounts.find_account(name).id
    cal_id = f"{name}-{uuid.uuid4().hex[:6]}"
    calendar = radicale.make_calendar("alice", "secret", cal_id, cal_id=cal_id)
    container.links.link(
        account_id, f"{radicale.url}alice/{cal_id}/", Credentials("alice", "secret"), operator()
    )
    return account_id, calendar


def slot(i: int, shift: int) -> tuple[datetime, datetime]:
    start = datetime(2026, 6, 1, 8, tzinfo=BERLIN) + timedelta(hours=i, days=shift)
    return start, start + timedelta(minutes=30)


def test_a_worker_killed_mid_stream_resumes_without_duplicates(
    journal_for_workers: tuple[Container, dict[str, str]],
    radicale: RadicaleProcess,
    tmp_path: Path,
) -> None:
    container, env = journal_for_workers
    account_id, calendar = link_account(container, radicale, "acme")
    worker = WorkerProcess(env, tmp_path / "worker-1.log").start()
    try:
        ids = []
        changes = 0
        for i in range(100):  # 100 bookings ...
            start, end = slot(i, 0)
            booked = container.appointments.book(
                account_id, Booking(f"Stream {i}", start, end, "Europe/Berlin"), API
            )
            ids.append(uuid.UUID(booked.state["id"]))
            changes += 1
        for round_ in range(1, 5):  # ... and 400 moves: 500 changes in all
            for i, appointment_id in enumerate(ids):
                start, end = slot(i, round_)
                container.appointments.move(account_id, appointment_id, start, end, API)
                changes += 1
                if round_ == 2 and i == 50:
                    wait_until(lambda: len(worker.pushes()) >= 20, timeout=30)
                    worker.kill()
                    killed_after = len(worker.pushes())
        assert changes == 500
        assert killed_after > 0
        restarted = WorkerProcess(env, tmp_path / "worker-2.log").start()
        try:
            wait_until(
                lambda: not differences(container, account_id, calendar), timeout=120, interval=0.5
            )
        finally:
            restarted.stop()
    finally:
        worker.stop()


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_two_workers_share_twenty_accounts_and_take_over_from_a_killed_one(
    journal_for_workers: tuple[Container, dict[str, str]],
    radicale: RadicaleProcess,
    tmp_path: Path,
) -> None:
    container, env = journal_for_workers
    accounts = [link_account(container, radicale, f"tenant{i:02d}") for i in range(20)]
    first = WorkerProcess(env, tmp_path / "first.log").start()
    second = WorkerProcess(env, tmp_path / "second.log").start()
    try:
        store = container.sync_state

        def owners() -> dict[str, str]:
            now = time.time() * 1e6
            leases = store.leases().items()
            return {a: lease.owner for a, lease in leases if lease.expires_us > now}

        def balanced() -> dict[str, str] | None:
            held = owners()
            counts = sorted(list(held.values()).count(w) for w in set(held.values()))
            return held if len(held) == 20 and counts == [10, 10] else None

        # Capacity grows with workers: the first one takes everything, then gives
        # up its excess as soon as it sees the second.
        wait_until(balanced, timeout=30, interval=0.2)

        def book_round(day: int) -> None:
            for n, (account_id, _) in enumerate(accounts):
                start, end = slot(n, day)
                container.appointments.book(
                    account_id, Booking(f"Round {day}", start, end, "Europe/Berlin"), API
                )

        book_round(0)
        for account_id, calendar in accounts:
            wait_until(
                lambda a=account_id, c=calendar: not differences(container, a, c),
                timeout=30,
                interval=0.2,
            )

        first.kill()
        book_round(1)
        survivor = wait_until(
            lambda: (o := owners()) and len(o) == 20 and len(set(o.values())) == 1 and o,
            timeout=30,
            interval=0.2,
        )
        for account_id, calendar in accounts:
            wait_until(
                lambda a=account_id, c=calendar: not differences(container, a, c),
                timeout=60,
                interval=0.2,
            )
        assert len(set(survivor.values())) == 1
    finally:
        first.stop()
        second.stop()

    # Exactly one worker at a time per account: the pushes of the two workers for
    # one account never interleave (the killed one stops before the other starts).
    by_account: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for name, process in (("first", first), ("second", second)):
        for when, account, _ in process.pushes():
            by_account[account].append((when, name))
    assert len(by_account) == 20
    for account, pushes in by_account.items():
        pushes.sort()
        switches = sum(1 for a, b in zip(pushes, pushes[1:], strict=False) if a[1] != b[1])
        assert switches <= 1, (account, pushes)


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_a_killed_workers_accounts_pass_to_the_survivor_within_the_lease_time(
    journal_for_workers: tuple[Container, dict[str, str]],
    radicale: RadicaleProcess,
    tmp_path: Path,
) -> None:
    container, env = journal_for_workers
    ttl = float(env["CALJOURNAL_WORKER_LEASE_TTL"])
    accounts = {str(link_account(container, radicale, f"firm{i:02d}")[0]) for i in range(12)}
    first = WorkerProcess(env, tmp_path / "first.log").start()
    second = WorkerProcess(env, tmp_path / "second.log").start()
    store = container.sync_state
    try:

        def holders() -> dict[str, str]:
            now = time.time() * 1e6
            return {a: x.owner for a, x in store.leases().items() if x.expires_us >= now}

        def split() -> bool:
            held = holders()
            counts = sorted(list(held.values()).count(w) for w in set(held.values()))
            return set(held) == accounts and counts == [6, 6]

        wait_until(split, timeout=30, interval=0.1)
        assert first.process is not None
        dead = next(o for o in holders().values() if f":{first.process.pid}:" in o)
        first.kill()
        killed_at = time.time()
        dead_expiry = max(x.expires_us for x in store.leases().values() if x.owner == dead) / 1e6
        survivor = wait_until(
            lambda: (h := holders()) and set(h) == accounts and len(set(h.values())) == 1 and h,
            timeout=30,
            interval=0.05,
        )
        handed_at = time.time()
    finally:
        first.stop()
        second.stop()

    assert dead not in survivor.values()
    # The killed worker renewed at most a keeper period before the kill, so its
    # leases ran out within the lease time of it; the survivor took them as they
    # did (on a busy machine, the margin covers a slow round, not a period).
    assert dead_expiry <= killed_at + ttl
    assert handed_at - killed_at < ttl + 3.0
