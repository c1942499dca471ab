"""Benchmark: book and move appointments through the HTTP API vs a raw journal save loop.

For each database (SQLite file, PostgreSQL) it measures, in one run:

* ``raw``: the eventsourcing library's plain ``Application`` saving the same
  aggregate commands in a loop (no HTTP, no auth, no query tables);
* ``asgi``: the API called in-process with bare ASGI messages;
* ``socket``: the API served by uvicorn on a loopback port, called over HTTP.

Each run books N appointments and moves each once (2N writes). The modes run
in interleaved rounds (``--rounds``, default 5); each row shows the median
round's rates and the median of the per-round ratios to the raw loop of the
same round. An empty endpoint served the same way shows what HTTP over the
loopback costs alone. It prints a table (writes/s, p50/p95 latency, ratio to
raw) and writes JSON with every round's rate and ratio.

Usage: python -m caljournal.scripts.bench_api [--n 300] [--rounds 5] [--out bench-results/api.json]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Generator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from datetime import datetime, timedelta
from multiprocessing import get_context
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import uvicorn
import uvloop
from eventsourcing.application import Application
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from rich.console import Console
from rich.table import Table

from caljournal.api.app import create_app, server_config
from caljournal.api.schemas import BookIn, MoveIn
from caljournal.bootstrap import Container, bootstrap
from caljournal.domain.appointment import Appointment
from caljournal.domain.cause import Cause, Origin
from caljournal.settings import database_config, load_settings

PG_URL = os.environ.get("CALJOURNAL_BENCH_PG_URL", "postgresql://root@127.0.0.1:5432/test")
BERLIN = ZoneInfo("Europe/Berlin")
CAUSE = Cause(Origin.API, "bench", "bench")
CLIENT_PROCESSES = 2


def _slot(i: int, moved: bool = False) -> tuple[datetime, datetime]:
    start = datetime(2027, 1, 4, 8, tzinfo=BERLIN) + timedelta(
        minutes=30 * i + (15 if moved else 0)
    )
    return start, start + timedelta(minutes=30)


def _summary(latencies: list[float], elapsed: float) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "writes": len(ordered),
        "seconds": round(elapsed, 3),
        "writes_per_s": round(len(ordered) / elapsed, 1),
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(ordered[int(len(ordered) * 0.95) - 1] * 1000, 2),
    }


def bench_raw(database_url: str, n: int, threads: int = 1) -> dict[str, float]:
    """Save the same commands through the library's plain Application (``threads`` loops)."""
    env = database_config(database_url)
    pool = {"POSTGRES_POOL_SIZE": str(threads + 1), "SQLITE_LOCK_TIMEOUT": "30"}
    app: Application = Application(env={**env, **pool, "CREATE_TABLE": "y"})
    latencies: list[float] = []
    began = time.perf_counter()
    share = n // threads
    with ThreadPoolExecutor(max_workers=threads) as ex:
        for part in ex.map(lambda _: _raw_loop(app, share), range(threads)):
            latencies.extend(part)
    elapsed = time.perf_counter() - began
    app.close()
    return _summary(latencies, elapsed)


def _raw_loop(app: Application, n: int) -> list[float]:
    latencies: list[float] = []
    account = uuid.uuid4()
    appointments = []
    for i in range(n):
        t0 = time.perf_counter()
        start, end = _slot(i)
        appointment = Appointment.book(
            appointment_id=uuid.uuid4(),
            account_id=account,
            title=f"raw {i}",
            start=start,
            end=end,
            timezone="Europe/Berlin",
            cause=CAUSE,
        )
        app.save(appointment)
        latencies.append(time.perf_counter() - t0)
        appointments.append(appointment.id)
    for i, appointment_id in enumerate(appointments):
        t0 = time.perf_counter()
        appointment = app.repository.get(appointment_id)
        start, end = _slot(i, moved=True)
        appointment.move(start=start, end=end, cause=CAUSE)
        app.save(appointment)
        latencies.append(time.perf_counter() - t0)
    return latencies


def _workload(n: int, label: str) -> Generator[tuple[str, bytes, int], bytes, None]:
    """Book ``n`` appointments, then move each once.

    Yields each request (path, JSON body, expected status) and is sent the
    answer's body, so blocking and async drivers run the same workload.
    """
    ids = []
    for i in range(n):
        start, end = _slot(i)
        body = {
            "title": f"{label} {i}",
            "start": start.isoformat(),
            "end": end.isoformat(),
            "timezone": "Europe/Berlin",
        }
        answer = yield "/appointments", json.dumps(body).encode(), 201
        ids.append(json.loads(answer)["id"])
    for i, appointment_id in enumerate(ids):
        start, end = _slot(i, moved=True)
        body = {"start": start.isoformat(), "end": end.isoformat()}
        yield f"/appointments/{appointment_id}/move", json.dumps(body).encode(), 200


def _check(path: str, expected: int, status: int, answer: bytes) -> None:
    if status != expected:
        raise RuntimeError(f"POST {path}: {status} {answer[:300]!r}")


def _tenant(container: Container) -> dict[str, str]:
    name = f"bench{uuid.uuid4().hex[:8]}"
    issued = container.accounts.open_account(name, Cause(Origin.OPERATOR, "bench", "bench"))
    return {"Authorization": f"Bearer {issued.secret}"}


async def _asgi_call(
    app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes = b""
) -> tuple[int, bytes]:
    """Call an ASGI app with bare messages; return the status and the body."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [*headers, (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 1),
        "server": ("bench", 80),
    }
    sent = False
    status = 0
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)


def _api(container: Container, headers: list[tuple[bytes, bytes]]) -> Any:
    """Return the API app after one untimed request.

    FastAPI builds its routing tables on the first request a router sees (tens
    of milliseconds); a running server pays that once, not per measured run.
    """
    app = create_app(container)
    path = f"/appointments/{uuid.uuid4()}"
    status, answer = uvloop.run(_asgi_call(app, "GET", path, headers))
    _check(path, 404, status, answer)
    return app


def bench_asgi(container: Container, n: int) -> dict[str, float]:
    """Call the API in-process, straight through its ASGI interface.

    The calls are made with bare ASGI messages rather than an HTTP client
    library, so the figure is the API's own cost (routing, validation,
    authentication, service, JSON), not a client's.
    """
    headers = [(k.lower().encode(), v.encode()) for k, v in _tenant(container).items()]
    headers.append((b"content-type", b"application/json"))
    app = _api(container, headers)

    async def run() -> tuple[list[float], float]:
        latencies: list[float] = []
        began = time.perf_counter()
        steps = _workload(n, "asgi")
        answer = None
        while True:
            try:
                path, body, expected = steps.send(answer)  # type: ignore[arg-type]
            except StopIteration:
                break
            t0 = time.perf_counter()
            status, answer = await _asgi_call(app, "POST", path, headers, body)
            latencies.append(time.perf_counter() - t0)
            _check(path, expected, status, answer)
        return latencies, time.perf_counter() - began

    # The event loop uvicorn serves with (see ``server_config``).
    latencies, elapsed = uvloop.run(run())
    return _summary(latencies, elapsed)


def bench_socket(
    container: Container, n: int, clients: int = 1, app: Any = None
) -> dict[str, float]:
    """Call the API (or ``app``) served by uvicorn over a loopback socket."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    headers = _tenant(container)
    if app is None:
        app = _api(container, [(k.lower().encode(), v.encode()) for k, v in headers.items()])
    server = uvicorn.Server(
        server_config(app, "127.0.0.1", port, access_log=False, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(400):
        if server.started:
            break
        time.sleep(0.025)
    headers = _tenant(container)
    try:
        # The load comes from other processes, as it would in production, so
        # the client's own Python work does not compete with the server for the GIL.
        procs = min(clients, CLIENT_PROCESSES)
        with ProcessPoolExecutor(max_workers=procs, mp_context=get_context("spawn")) as ex:
            for warm in [ex.submit(_warm_client) for _ in range(procs)]:
                warm.result()
            began = time.perf_counter()
            parts = [
                ex.submit(_drive, port, headers, n // procs, clients // procs) for _ in range(procs)
            ]
            latencies = [x for part in parts for x in part.result()]
            elapsed = time.perf_counter() - began
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    return _summary(latencies, elapsed)


def empty_api() -> FastAPI:
    """Return an app with the benchmark's two routes and no work behind them.

    Served and driven like the API, it measures what the HTTP stack and the
    loopback round trip alone cost per request on this machine: the part of
    an API write over a socket that no change to caljournal can remove.
    """
    app = FastAPI()

    @app.post("/appointments", status_code=201)
    async def book(body: BookIn) -> JSONResponse:
        return JSONResponse({"id": str(uuid.uuid4())}, status_code=201)

    @app.post("/appointments/{appointment_id}/move")
    async def move(appointment_id: uuid.UUID, body: MoveIn) -> JSONResponse:
        return JSONResponse({"id": str(appointment_id)})

    return app


def _warm_client() -> None:
    """Start the client processes before the clock starts."""


def _drive(port: int, headers: dict[str, str], n: int, clients: int) -> list[float]:
    """Run the workload from ``clients`` keep-alive connections (in a child process).

    The standard library's client is used because it costs a fraction of a
    full-featured client per request, so it does not become the bottleneck.
    """

    def one_client(number: int) -> list[float]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        sent = {**headers, "Content-Type": "application/json"}

        def post(path: str, body: bytes) -> tuple[int, bytes]:
            connection.request("POST", path, body=body, headers=sent)
            response = connection.getresponse()
            return response.status, response.read()

        latencies: list[float] = []
        steps = _workload(n // clients, f"socket {number}")
        answer = None
        try:
            while True:
                try:
                    path, body, expected = steps.send(answer)  # type: ignore[arg-type]
                except StopIteration:
                    return latencies
                t0 = time.perf_counter()
                status, answer = post(path, body)
                latencies.append(time.perf_counter() - t0)
                _check(path, expected, status, answer)
        finally:
            connection.close()

    latencies: list[float] = []
    with ThreadPoolExecutor(max_workers=clients) as ex:
        for part in ex.map(one_client, range(clients)):
            latencies.extend(part)
    return latencies


def _pg_schema(admin: psycopg.Connection, label: str) -> tuple[str, Callable[[], None]]:
    schema = f"bench_{label}_{uuid.uuid4().hex[:8]}"
    admin.execute(f'CREATE SCHEMA "{schema}"')

    def drop() -> None:
        admin.execute(f'DROP SCHEMA "{schema}" CASCADE')

    return f"{PG_URL}?schema={schema}", drop


def _one_round(
    container: Container, raw_url: str, n: int, clients: int
) -> dict[str, dict[str, float]]:
    """Measure every mode once, in a fixed order."""
    return {
        "raw": bench_raw(raw_url, n),
        "asgi": bench_asgi(container, n),
        "sock": bench_socket(container, n),
        "empty": bench_socket(container, n, app=empty_api()),
        "raw_conc": bench_raw(raw_url, n, threads=clients),
        "sock_conc": bench_socket(container, n, clients=clients),
    }


# Each mode, the raw loop it is compared with (same round, same concurrency),
# and its label.
MODES = (
    ("raw", "raw", "raw save loop, 1 thread"),
    ("asgi", "raw", "API in-process, 1 client"),
    ("sock", "raw", "API socket, 1 client"),
    ("empty", "raw", "empty endpoint socket, 1 client (HTTP floor)"),
    ("raw_conc", "raw_conc", "raw save loop, {c} threads"),
    ("sock_conc", "raw_conc", "API socket, {c} clients"),
)


def _row(measured: list[dict[str, float]], baseline: list[dict[str, float]]) -> dict[str, Any]:
    """Summarise one mode over the rounds.

    The rates shown are the median round's; the ratio is the median of the
    per-round ratios, each taken against the raw loop measured in the same
    round, so a drift of the machine's speed across rounds cancels out.
    """
    ordered = sorted(measured, key=lambda r: r["writes_per_s"])
    row: dict[str, Any] = dict(ordered[len(ordered) // 2])
    ratios = [
        m["writes_per_s"] / b["writes_per_s"] for m, b in zip(measured, baseline, strict=True)
    ]
    row["ratio"] = round(statistics.median(ratios), 2)
    row["rounds_writes_per_s"] = [r["writes_per_s"] for r in measured]
    row["rounds_ratio"] = [round(x, 3) for x in ratios]
    return row


def main() -> None:
    """Run the benchmark and print/write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="appointments per run (2n writes)")
    parser.add_argument("--out", default="bench-results/api.json")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients/threads")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per mode")
    args = parser.parse_args()

    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends.split(","):
            cleanups: list[Callable[[], None]] = []
            admin = None
            if backend == "sqlite":
                urls = {k: f"sqlite:///{Path(tmp) / f'{k}.sqlite'}" for k in ("raw", "api")}
            else:
                admin = psycopg.connect(PG_URL, autocommit=True)
                urls = {}
                for k in ("raw", "api"):
                    urls[k], cleanup = _pg_schema(admin, k)
                    cleanups.append(cleanup)
            rounds: dict[str, list[dict[str, float]]] = {}
            try:
                container = bootstrap(load_settings(database_url=urls["api"]))
                try:
                    # Interleaved rounds: on a shared machine disk and CPU speed
                    # drift within one run (see ``_row``).
                    for _ in range(args.rounds):
                        measured = _one_round(container, urls["raw"], args.n, args.clients)
                        for key, figures in measured.items():
                            rounds.setdefault(key, []).append(figures)
                finally:
                    container.close()
            finally:
                for cleanup in cleanups:
                    cleanup()
                if admin is not None:
                    admin.close()
            for key, baseline, label in MODES:
                row = _row(rounds[key], rounds[baseline])
                results.append({"backend": backend, "mode": label.format(c=args.clients), **row})

    table = Table(title=f"book + move, {args.n} appointments ({2 * args.n} writes) per run")
    for column in (
        "backend",
        "mode",
        "writes/s",
        "p50 ms",
        "p95 ms",
        "ratio to raw (same concurrency)",
    ):
        table.add_column(column)
    for r in results:
        table.add_row(
            r["backend"],
            r["mode"],
            f"{r['writes_per_s']:.0f}",
            f"{r['p50_ms']:.2f}",
            f"{r['p95_ms']:.2f}",
            f"{r['ratio']:.2f}",
        )
    Console().print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"n": args.n, "results": results}, indent=2))
    Console(stderr=True).print(f"wrote {out}")


if __name__ == "__main__":
    main()
