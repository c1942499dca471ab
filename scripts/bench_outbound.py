"""Benchmark: outbound lag and push throughput against a real Radicale.

Run from the repository root (it starts Radicale with the test-suite helper):

    python scripts/bench_outbound.py [--lag-changes 200] [--push-count 1000]

* **lag**: time from the API's 201/200 to the object being readable (with the
  new content) on the server, over N changes (half bookings, half moves), with
  the API and the worker in one process as ``caljournal serve`` runs them.
* **push throughput**: the worker pushes N pending appointments into a fresh
  calendar; in the same run a raw PUT loop (httpx, keep-alive, If-None-Match)
  writes the same N objects into another fresh calendar on the same server.

Prints a table and writes ``bench-results/outbound.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import psycopg
import uvicorn
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from caljournal.adapters.secrets import Credentials  # noqa: E402
from caljournal.api.app import create_app  # noqa: E402
from caljournal.appointments import Booking  # noqa: E402
from caljournal.bootstrap import Container, bootstrap  # noqa: E402
from caljournal.domain.cause import Cause, Origin  # noqa: E402
from caljournal.projections.push import href_for, render  # noqa: E402
from caljournal.settings import load_settings  # noqa: E402
from tests.support.ports import free_port  # noqa: E402
from tests.support.radicale import RadicaleProcess  # noqa: E402

PG_URL = os.environ.get("CALJOURNAL_BENCH_PG_URL", "postgresql://root@127.0.0.1:5432/test")
BERLIN = ZoneInfo("Europe/Berlin")
OPERATOR = Cause(Origin.OPERATOR, "bench", "bench")
API = Cause(Origin.API, "bench", "bench")
AUTH = ("alice", "secret")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(int(len(ordered) * q + 0.5) - 1, 0)]


def new_calendar(radicale: RadicaleProcess) -> str:
    cal_id = f"bench-{uuid.uuid4().hex[:8]}"
    radicale.make_calendar("alice", "secret", cal_id, cal_id=cal_id)
    return f"{radicale.url}alice/{cal_id}/"


def open_container(url: str, tmp: Path) -> Container:
    return bootstrap(
        load_settings(
            database_url=url,
            secret_key_file=tmp / "bench.key",
            allow_private_addresses=True,
        )
    )


def link(container: Container, name: str, calendar_url: str) -> tuple[uuid.UUID, str]:
    token = container.accounts.open_account(name, OPERATOR).secret
    account_id = container.accounts.find_account(name).id
    container.links.link(account_id, calendar_url, Credentials(*AUTH), OPERATOR)
    return account_id, token


def bench_lag(container: Container, radicale: RadicaleProcess, changes: int) -> dict[str, Any]:
    """Measure API answer → object readable with the new content on the server."""
    calendar_url = new_calendar(radicale)
    _, token = link(container, f"lag{uuid.uuid4().hex[:6]}", calendar_url)
    worker = container.outbound_worker().start()
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(container), host="127.0.0.1", port=port, log_level="warning")
    )
    threading.Thread(target=server.run, daemon=True).start()
    api = httpx.Client(
        base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"}
    )
    dav = httpx.Client(auth=AUTH)
    for _ in range(200):
        try:
            api.get("/healthz")
            break
        except httpx.TransportError:
            time.sleep(0.05)
    time.sleep(1.0)  # let the worker take the account's lease
    lags: list[float] = []
    ids: list[str] = []
    try:
        half = changes // 2
        for i in range(half):
            start = datetime(2027, 1, 4, 8, tzinfo=BERLIN) + timedelta(hours=i)
            response = api.post(
                "/appointments",
                json={
                    "title": f"lag {i}",
                    "start": start.isoformat(),
                    "end": (start + timedelta(minutes=30)).isoformat(),
                    "timezone": "Europe/Berlin",
                },
            )
            answered = time.perf_counter()
            ids.append(response.json()["id"])
            href = href_for(calendar_url, ids[-1])
            while dav.get(href).status_code != 200:
                time.sleep(0.002)
            lags.append(time.perf_counter() - answered)
        for i, appointment_id in enumerate(ids):
            start = datetime(2027, 2, 1, 8, tzinfo=BERLIN) + timedelta(hours=i)
            api.post(
                f"/appointments/{appointment_id}/move",
                json={
                    "start": start.isoformat(),
                    "end": (start + timedelta(minutes=30)).isoformat(),
                },
            )
            answered = time.perf_counter()
            marker = start.strftime("%Y%m%dT%H%M%S")
            href = href_for(calendar_url, appointment_id)
            while marker not in dav.get(href).text:
                time.sleep(0.002)
            lags.append(time.perf_counter() - answered)
    finally:
        server.should_exit = True
        worker.stop()
    return {
        "changes": len(lags),
        "p50_ms": round(statistics.median(lags) * 1000, 1),
        "p95_ms": round(percentile(lags, 0.95) * 1000, 1),
        "max_ms": round(max(lags) * 1000, 1),
    }


def _raw_put_loop(calendar_url: str, states: list[dict[str, Any]]) -> float:
    bodies = [(href_for(calendar_url, s["id"]), render(s)[0]) for s in states]
    with httpx.Client(auth=AUTH) as raw:
        began = time.perf_counter()
        for href, data in bodies:
            response = raw.put(
                href,
                content=data,
                headers={"Content-Type": "text/calendar; charset=utf-8", "If-None-Match": "*"},
            )
            response.raise_for_status()
        return time.perf_counter() - began


def _worker_push(
    container: Container, radicale: RadicaleProcess, count: int
) -> tuple[float, list[dict[str, Any]]]:
    calendar_url = new_calendar(radicale)
    account_id, _ = link(container, f"push{uuid.uuid4().hex[:6]}", calendar_url)
    states = []
    for i in range(count):
        start = datetime(2027, 3, 1, 6, tzinfo=BERLIN) + timedelta(minutes=30 * i)
        booking = Booking(f"push {i}", start, start + timedelta(minutes=30), "Europe/Berlin")
        states.append(container.appointments.book(account_id, booking, API).state)
    store = container.sync_state
    worker = container.outbound_worker()
    began = time.perf_counter()
    worker.start()
    try:
        while store.count_copies(str(account_id)) < count:
            time.sleep(0.05)
        return time.perf_counter() - began, states
    finally:
        worker.stop()


def bench_push(container: Container, radicale: RadicaleProcess, count: int) -> dict[str, Any]:
    """Worker push of ``count`` pending appointments vs a raw PUT loop of the same objects.

    Radicale slows down as its storage grows, so the runs go in ABBA order
    (worker, raw, raw, worker), each into a fresh calendar, and the totals are
    compared: a steady drift then weighs on both sides equally.
    """
    first_worker, states = _worker_push(container, radicale, count)
    raw_a = _raw_put_loop(new_calendar(radicale), states)
    raw_b = _raw_put_loop(new_calendar(radicale), states)
    second_worker, _ = _worker_push(container, radicale, count)
    raw_total, worker_total = raw_a + raw_b, first_worker + second_worker
    return {
        "objects": count,
        "raw_put_s": [round(raw_a, 2), round(raw_b, 2)],
        "worker_s": [round(first_worker, 2), round(second_worker, 2)],
        "raw_per_s": round(2 * count / raw_total, 1),
        "worker_per_s": round(2 * count / worker_total, 1),
        "ratio": round(worker_total / raw_total, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="outbound lag and push throughput")
    parser.add_argument("--lag-changes", type=int, default=200)
    parser.add_argument("--push-count", type=int, default=1000)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--out", default="bench-results/outbound.json")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for backend in args.backends.split(","):
            with RadicaleProcess(tmp / f"radicale-{backend}", log_level="warning") as radicale:
                schema = f"bench_{uuid.uuid4().hex[:8]}"
                if backend == "sqlite":
                    url = f"sqlite:///{tmp / 'bench.sqlite'}"
                else:
                    with psycopg.connect(PG_URL, autocommit=True) as admin:
                        admin.execute(f'CREATE SCHEMA "{schema}"')
                    url = f"{PG_URL}?schema={schema}"
                container = open_container(url, tmp)
                try:
                    results[backend] = {
                        "lag": bench_lag(container, radicale, args.lag_changes),
                        "push": bench_push(container, radicale, args.push_count),
                    }
                finally:
                    container.close()
                    if backend != "sqlite":
                        with psycopg.connect(PG_URL, autocommit=True) as admin:
                            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
    lag_table = Table(
        title=f"outbound lag: API answer → readable on Radicale ({args.lag_changes} changes)"
    )
    for column in ("backend", "p50 ms", "p95 ms", "max ms"):
        lag_table.add_column(column)
    push_table = Table(
        title=f"push throughput: {args.push_count} objects into a fresh calendar, twice each"
    )
    for column in ("backend", "raw PUT loop s", "worker s", "worker/raw"):
        push_table.add_column(column)
    for backend, figures in results.items():
        lag, push = figures["lag"], figures["push"]
        lag_table.add_row(backend, str(lag["p50_ms"]), str(lag["p95_ms"]), str(lag["max_ms"]))
        push_table.add_row(
            backend,
            " + ".join(map(str, push["raw_put_s"])),
            " + ".join(map(str, push["worker_s"])),
            str(push["ratio"]),
        )
    console = Console()
    console.print(lag_table)
    console.print(push_table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
