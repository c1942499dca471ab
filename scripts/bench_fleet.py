"""Benchmark: many linked accounts served by worker processes on a real Radicale.

Run from the repository root:

    python scripts/bench_fleet.py [--accounts 1000] [--interval 60] [--duration 300]

Every account gets its own (empty) calendar on one local Radicale, written into
its storage folder before the server starts (creating 1,000 calendars over HTTP
would take longer than the benchmark). The journal is PostgreSQL. Measured:

* floor: the same polls as a bare loop of one PROPFIND each (httpx, one thread);
* one worker (``caljournal worker``) for ``--duration`` seconds after every
  account was polled once: CPU cores averaged, peak RSS, threads, and the poll
  lateness of every account (time between two polls minus the interval, read
  from the inbound state's ``last_poll_us`` once a second);
* two workers: how many accounts each holds once they hold all between them,
  then ``kill -9`` of one and the time until the other holds every lease
  (handover), and until it has polled every account the killed one held;
* ``--faulty`` accounts whose calendars sit behind a proxy answering 503 (half)
  or answering only after ``--slow`` seconds (the other half), while the
  others' poll lateness and the time from a booking to its copy on the
  calendar (pushes) are measured.

Targets (issue 14): ≤ 0.25 core, ≤ 500 MB, every account polled within
interval + 5 s. Prints a table and writes ``bench-results/fleet.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import psycopg
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from caljournal.adapters.readmodel import INBOUND, LEASES  # noqa: E402
from caljournal.adapters.secrets import Credentials  # noqa: E402
from caljournal.appointments import Booking  # noqa: E402
from caljournal.bootstrap import Container, bootstrap  # noqa: E402
from caljournal.domain.cause import Cause, Origin  # noqa: E402
from caljournal.settings import load_settings  # noqa: E402
from tests.support.faultproxy import FaultProxy  # noqa: E402
from tests.support.radicale import RadicaleProcess  # noqa: E402

PG_URL = os.environ.get("CALJOURNAL_BENCH_PG_URL", "postgresql://root@127.0.0.1:5432/test")
OPERATOR = Cause(Origin.OPERATOR, "bench", "bench")
API = Cause(Origin.API, "bench", "bench")
PROPS = json.dumps(
    {"C:supported-calendar-component-set": "VEVENT", "D:displayname": "cal", "tag": "VCALENDAR"}
)
PROPFIND = (
    '<?xml version="1.0"?><d:propfind xmlns:d="DAV:" xmlns:cs="http://calendarserver.org/ns/">'
    "<d:prop><d:sync-token/><cs:getctag/></d:prop></d:propfind>"
)
CLOCK_TICK = os.sysconf("SC_CLK_TCK")


# -- the process being measured -----------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """Return the user + system CPU seconds a process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


def status_of(pid: int) -> dict[str, int]:
    """Return VmRSS, VmHWM (kB) and Threads of a process."""
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "Threads"):
            found[key] = int(value.split()[0])
    return found


class Worker:
    """``caljournal worker`` as a child process."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        with open(log, "ab") as handle:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "caljournal", "worker"],
                env=env,
                stdout=handle,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()


# -- what the database says -----------------------------------------------------------


class Observer:
    """Reads polls and leases from the journal's database."""

    def __init__(self, schema: str) -> None:
        self.db = psycopg.connect(PG_URL, autocommit=True)
        self.db.execute(f'SET search_path TO "{schema}"')
        self.seen: dict[str, list[int]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def polls(self) -> dict[str, int]:
        rows = self.db.execute(
            f"SELECT account_id, last_poll_us FROM {INBOUND} WHERE last_poll_us IS NOT NULL"
        ).fetchall()
        return {str(a): int(t) for a, t in rows}

    def lease_holders(self) -> dict[str, str]:
        """Return the owner of every unexpired lease, by account."""
        now_us = int(time.time() * 1e6)
        rows = self.db.execute(
            f"SELECT account_id, owner FROM {LEASES} WHERE expires_us >= %s", [now_us]
        ).fetchall()
        return {str(a): str(o) for a, o in rows}

    def lease_owners(self) -> dict[str, int]:
        now_us = int(time.time() * 1e6)
        rows = self.db.execute(
            f"SELECT owner, COUNT(*) FROM {LEASES} WHERE expires_us >= %s GROUP BY owner",
            [now_us],
        ).fetchall()
        return {str(o): int(n) for o, n in rows}

    def record(self) -> None:
        """Note every new poll time once a second, in a thread, until ``stop``."""
        self.seen = {a: [t] for a, t in self.polls().items()}

        def loop() -> None:
            while not self._stop.wait(1.0):
                for account, at in self.polls().items():
                    times = self.seen.setdefault(account, [])
                    if not times or times[-1] != at:
                        times.append(at)

        self._stop.clear()
        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, list[int]]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self.seen


def lateness(
    seen: dict[str, list[int]], accounts: list[str], interval: float, until_us: int
) -> dict[str, Any]:
    """Return the worst and typical gap between polls minus the interval, over ``accounts``.

    The time from an account's last poll to the end of the measurement counts
    as a gap too: an account that stopped being polled shows up.
    """
    late: list[float] = []
    polls = 0
    for account in accounts:
        times = seen.get(account, [])
        polls += max(len(times) - 1, 0)
        gaps = [(b - a) / 1e6 for a, b in zip(times, times[1:], strict=False)]
        if times:
            gaps.append(max((until_us - times[-1]) / 1e6, 0.0))
        late.append(max(gaps, default=float("inf")) - interval)
    late.sort()
    return {
        "polls": polls,
        "max_late_s": round(max(late, default=0.0), 2),
        "p50_late_s": round(late[len(late) // 2], 2) if late else None,
        "over_5s": sum(1 for x in late if x > 5.0),
    }


def wait_for(check: Callable[[], bool], timeout: float, step: float = 0.5) -> float:
    began = time.monotonic()
    while not check():
        if time.monotonic() - began > timeout:
            raise TimeoutError(f"not reached within {timeout} s")
        time.sleep(step)
    return time.monotonic() - began


# -- phases -----------------------------------------------------------------------------


def floor(urls: list[str], users: list[str]) -> dict[str, Any]:
    """Poll every calendar once with a bare PROPFIND; return time and CPU per poll."""
    began, cpu = time.perf_counter(), time.process_time()
    with httpx.Client() as client:
        for url, user in zip(urls, users, strict=True):
            client.request(
                "PROPFIND", url, content=PROPFIND, headers={"Depth": "0"}, auth=(user, "secret")
            ).raise_for_status()
    wall, used = time.perf_counter() - began, time.process_time() - cpu
    return {"polls": len(urls), "ms_per_poll": wall / len(urls) * 1e3, "cpu_ms": used * 1e3}


def measure(worker: Worker, seconds: float, step: float = 5.0) -> dict[str, Any]:
    """Sample a worker's CPU and memory for ``seconds``."""
    began, cpu = time.monotonic(), cpu_seconds(worker.pid)
    rss, threads = 0, 0
    while time.monotonic() - began < seconds:
        time.sleep(min(step, seconds - (time.monotonic() - began)))
        status = status_of(worker.pid)
        rss, threads = max(rss, status["VmRSS"]), max(threads, status["Threads"])
    wall = time.monotonic() - began
    return {
        "cpu_cores": round((cpu_seconds(worker.pid) - cpu) / wall, 3),
        "rss_mb": round(rss / 1024, 1),
        "peak_rss_mb": round(status_of(worker.pid)["VmHWM"] / 1024, 1),
        "threads": threads,
        "seconds": round(wall, 1),
    }


def book(container: Container, account_id: str, n: int) -> str:
    start = datetime(2027, 3, 1, 8, tzinfo=ZoneInfo("Europe/Berlin")) + timedelta(hours=n)
    booked = container.appointments.book(
        uuid.UUID(account_id),
        Booking(
            title=f"bench {n}",
            start=start,
            end=start + timedelta(minutes=30),
            timezone="Europe/Berlin",
        ),
        API,
    )
    return str(booked.state["id"])


def push_latency(container: Container, accounts: list[str], timeout: float) -> dict[str, Any]:
    """Book one appointment on each account; return how long until each copy was written."""
    booked = {}
    for n, account in enumerate(accounts):
        booked[book(container, account, n)] = time.monotonic()
    took: list[float] = []
    deadline = time.monotonic() + timeout
    while booked and time.monotonic() < deadline:
        for appointment, at in list(booked.items()):
            copy = container.sync_state.copy_of(appointment)
            if copy is not None and copy.present:
                took.append(time.monotonic() - at)
                del booked[appointment]
        time.sleep(0.2)
    took.sort()
    return {
        "pushed": len(took),
        "missing": len(booked),
        "max_s": round(max(took, default=0.0), 2),
        "p50_s": round(took[len(took) // 2], 2) if took else None,
    }


def main() -> None:  # noqa: PLR0915
    parser = argparse.ArgumentParser(description="many accounts per worker")
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--interval", type=int, default=60)
    parser.add_argument("--duration", type=float, default=300.0)
    parser.add_argument("--faulty", type=int, default=100)
    parser.add_argument("--slow", type=float, default=40.0)
    parser.add_argument("--lease-ttl", type=float, default=10.0)
    parser.add_argument("--phases", default="floor,one,two,faulty")
    parser.add_argument("--out", default="bench-results/fleet.json")
    args = parser.parse_args()
    phases = set(args.phases.split(","))
    results: dict[str, Any] = {"accounts": args.accounts, "interval_s": args.interval}
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    url = f"{PG_URL}?schema={schema}"
    tmp = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    workers: list[Worker] = []
    radicale: RadicaleProcess | None = None
    try:
        # One user per account: discovery lists the user's home, which then
        # holds one calendar instead of all of them.
        users = [f"u{n:05d}" for n in range(args.accounts)]
        radicale = RadicaleProcess(
            tmp / "radicale",
            users={user: "secret" for user in users},
            log_level="warning",
            max_connections=64,
        )
        radicale.start()
        radicale.make_calendar(users[0], "secret", "first", cal_id="first")
        radicale.stop()
        for user in users:
            calendar = radicale.storage_path / "collection-root" / user / "cal"
            calendar.mkdir(parents=True, exist_ok=True)
            (calendar / ".Radicale.props").write_text(PROPS)
        radicale.start()
        faulty_count = min(args.faulty, args.accounts // 2) if "faulty" in phases else 0
        failing_proxy = FaultProxy(radicale.url, upstream_timeout=600.0)
        slow_proxy = FaultProxy(radicale.url, upstream_timeout=600.0)
        bases = [radicale.url] * args.accounts
        for n in range(faulty_count):
            bases[n] = (failing_proxy if n % 2 == 0 else slow_proxy).url
        urls = [f"{base}{user}/cal/" for base, user in zip(bases, users, strict=True)]

        key_file = tmp / "bench.key"
        settings = load_settings(
            database_url=url, secret_key_file=key_file, allow_private_addresses=True
        )
        container = bootstrap(settings)
        began = time.monotonic()

        def link(n: int) -> str:
            name = f"acct{n:05d}"
            container.accounts.open_account(name, OPERATOR)
            account_id = container.accounts.find_account(name).id
            container.links.link(account_id, urls[n], Credentials(users[n], "secret"), OPERATOR)
            if args.interval != 60:
                container.links.set_poll_interval(account_id, args.interval, OPERATOR)
            return str(account_id)

        with ThreadPoolExecutor(4) as pool:
            accounts = list(pool.map(link, range(args.accounts)))
        results["link_s"] = round(time.monotonic() - began, 1)
        healthy = accounts[faulty_count:]
        print(f"linked {len(accounts)} accounts in {results['link_s']} s", flush=True)

        if "floor" in phases:
            figures = floor(urls[faulty_count:], users[faulty_count:])
            # The CPU a bare loop would need to poll every account once an interval.
            per_poll_s = figures["cpu_ms"] / 1e3 / figures["polls"]
            figures["cores_at_interval"] = round(per_poll_s * args.accounts / args.interval, 4)
            figures["ms_per_poll"] = round(figures["ms_per_poll"], 2)
            figures["cpu_ms"] = round(figures["cpu_ms"], 1)
            results["floor"] = figures
        env = {k: v for k, v in os.environ.items() if not k.startswith("CALJOURNAL_")}
        env.update(
            {
                "CALJOURNAL_DATABASE_URL": url,
                "CALJOURNAL_SECRET_KEY_FILE": str(key_file),
                "CALJOURNAL_ALLOW_PRIVATE_ADDRESSES": "true",
                "CALJOURNAL_WORKER_LEASE_TTL": str(args.lease_ttl),
            }
        )
        observer = Observer(schema)
        if "one" in phases or "faulty" in phases:
            began = time.monotonic()
            first = Worker(env, tmp / "worker-1.log")
            workers.append(first)
            took = wait_for(lambda: len(observer.polls()) >= len(accounts), 600)
            results["first_poll_of_all_s"] = round(took, 1)
            print(f"every account polled once after {took:.1f} s", flush=True)
            if "one" in phases:
                observer.record()
                figures = measure(first, args.duration)
                seen = observer.stop()
                figures.update(lateness(seen, accounts, args.interval, int(time.time() * 1e6)))
                figures["radicale_cpu_s"] = round(cpu_seconds(radicale.pid or 0), 1)
                results["one worker"] = figures
                print(f"one worker: {figures}", flush=True)
            if "faulty" in phases:
                failing_proxy.fail_for(10 * args.duration, status=503)
                slow_proxy.delay_next(10**6, args.slow)
                observer.record()
                pushes: dict[str, Any] = {}
                pusher = threading.Thread(
                    target=lambda: pushes.update(
                        push_latency(container, healthy[:: max(len(healthy) // 50, 1)], 120)
                    )
                )
                time.sleep(min(args.duration / 2, 30))
                pusher.start()
                figures = measure(first, args.duration)
                pusher.join()
                seen = observer.stop()
                now_us = int(time.time() * 1e6)
                figures.update(lateness(seen, healthy, args.interval, now_us))
                figures["pushes_to_healthy"] = pushes
                figures["faulty_accounts"] = faulty_count
                results["with faulty servers"] = figures
                failing_proxy.clear_rules()
                slow_proxy.clear_rules()
                print(f"with faulty servers: {figures}", flush=True)
        if "two" in phases:
            if not workers:
                workers.append(Worker(env, tmp / "worker-1.log"))
            second = Worker(env, tmp / "worker-2.log")
            workers.append(second)
            half = len(accounts) // 2

            def split() -> bool:
                counts = sorted(observer.lease_owners().values())
                return (
                    len(counts) == 2
                    and sum(counts) == len(accounts)
                    and abs(counts[0] - counts[1]) <= max(len(accounts) // 20, 2)
                )

            took = wait_for(split, 300)
            counts = observer.lease_owners()
            killed = workers[0]
            orphans = [a for a, o in observer.lease_holders().items() if f":{killed.pid}:" in o]
            killed.kill()
            killed_at, killed_us = time.monotonic(), int(time.time() * 1e6)
            # Handover: from the kill until the survivor holds every lease (the
            # killed worker's expire within the lease time of its last renewal).
            wait_for(lambda: sorted(observer.lease_owners().values()) == [len(accounts)], 600, 0.2)
            handed = time.monotonic() - killed_at

            def polled_again() -> bool:
                polls = observer.polls()
                return all(polls.get(a, 0) > killed_us for a in orphans)

            # The survivor polls an account at once when it takes it.
            wait_for(polled_again, 600, 0.2)
            polled = time.monotonic() - killed_at
            results["two workers"] = {
                "split_after_s": round(took, 1),
                "held": sorted(counts.values()),
                "about_half": half,
                "handover_s": round(handed, 1),
                "handover_limit_s": args.lease_ttl,
                "orphans": len(orphans),
                "orphans_polled_after_s": round(polled, 1),
            }
            print(f"two workers: {results['two workers']}", flush=True)
        observer.db.close()
        container.close()
        failing_proxy.close()
        slow_proxy.close()
        radicale.stop()
    finally:
        for worker in workers:
            worker.stop()
        if radicale is not None:
            radicale.stop()
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
    show(results, args)


def show(results: dict[str, Any], args: argparse.Namespace) -> None:
    table = Table(title=f"{results['accounts']} accounts, {results['interval_s']} s interval")
    for column in ("phase", "figure", "value"):
        table.add_column(column)
    for phase, figures in results.items():
        if isinstance(figures, dict):
            for name, value in figures.items():
                table.add_row(phase, name, str(value))
        else:
            table.add_row("setup", phase, str(figures))
    Console().print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
