"""Benchmark: backfill speed against raw PUTs and vdirsyncer, and backfill peak memory.

Run from the repository root:

    python scripts/bench_backfill.py [--count 1000] [--memory-count 50000]

* **speed**: caljournal's backfill of ``count`` pre-existing appointments into a
  fresh calendar on a real Radicale vs, in the same run and into fresh calendars
  on the same server, (a) a raw httpx PUT loop of the same rendered objects and
  (b) vdirsyncer pushing the same objects from a directory (installed into its
  own virtualenv on first use: ``--vdirsyncer PATH`` to use another binary).
  Runs go in the order vdirsyncer, backfill, raw, raw, backfill, vdirsyncer,
  because Radicale slows as its storage grows; vdirsyncer's times include its
  process start-up, which is measured and shown on its own.
* **memory**: peak RSS of a process that runs a backfill of ``memory-count``
  appointments. Writing 50,000 objects into Radicale would take it hours (each
  PUT scans the collection), so this run writes into a minimal loopback
  CalDAV sink that answers PROPFIND/REPORT with an empty calendar and PUT with
  201; the measured process does everything a real backfill does on our side.

Prints tables and writes ``bench-results/backfill.json``.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import resource
import subprocess
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
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from caljournal.adapters.secrets import Credentials  # noqa: E402
from caljournal.appointments import Booking  # noqa: E402
from caljournal.bootstrap import Container, bootstrap  # noqa: E402
from caljournal.domain.cause import Cause, Origin  # noqa: E402
from caljournal.projections.push import href_for, render  # noqa: E402
from caljournal.settings import load_settings  # noqa: E402
from tests.support.ports import free_port  # noqa: E402
from tests.support.radicale import RadicaleProcess  # noqa: E402

BERLIN = ZoneInfo("Europe/Berlin")
OPERATOR = Cause(Origin.OPERATOR, "bench", "bench")
API = Cause(Origin.API, "bench", "bench")
VENV = Path(tempfile.gettempdir()) / "caljournal-bench-vdirsyncer"


def open_container(url: str, key: Path) -> Container:
    return bootstrap(
        load_settings(database_url=url, secret_key_file=key, allow_private_addresses=True)
    )


def book(container: Container, name: str, count: int) -> tuple[uuid.UUID, list[dict[str, Any]]]:
    container.accounts.open_account(name, OPERATOR)
    account_id = container.accounts.find_account(name).id
    states = []
    for i in range(count):
        start = datetime(2026, 6, 1, 7, tzinfo=BERLIN) + timedelta(minutes=30 * i)
        booking = Booking(f"Existing {i}", start, start + timedelta(minutes=30), "Europe/Berlin")
        states.append(container.appointments.book(account_id, booking, API).state)
    return account_id, states


def calendar(radicale: RadicaleProcess) -> str:
    cal_id = f"bf-{uuid.uuid4().hex[:8]}"
    radicale.make_calendar("alice", "secret", cal_id, cal_id=cal_id)
    return f"{radicale.url}alice/{cal_id}/"


def timed_backfill(container: Container, radicale: RadicaleProcess, count: int) -> float:
    account_id, _ = book(container, f"bf{uuid.uuid4().hex[:6]}", count)
    container.links.link(account_id, calendar(radicale), Credentials("alice", "secret"), OPERATOR)
    began = time.perf_counter()
    summary = container.sync.backfill(account_id, OPERATOR)
    seconds = time.perf_counter() - began
    assert summary.created == count and not summary.failed, summary
    return seconds


def timed_raw(radicale: RadicaleProcess, states: list[dict[str, Any]]) -> float:
    target = calendar(radicale)
    bodies = [(href_for(target, s["id"]), render(s)[0]) for s in states]
    with httpx.Client(auth=("alice", "secret")) as client:
        began = time.perf_counter()
        for href, data in bodies:
            client.put(
                href,
                content=data,
                headers={"Content-Type": "text/calendar; charset=utf-8", "If-None-Match": "*"},
            ).raise_for_status()
        return time.perf_counter() - began


def vdirsyncer_binary(given: str | None) -> Path:
    if given:
        return Path(given)
    binary = VENV / "bin" / "vdirsyncer"
    if not binary.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "vdirsyncer"], check=True)
    return binary


def vdirsyncer_start_up(binary: Path) -> float:
    """Return how long vdirsyncer takes to start and exit (part of each sync's time)."""
    began = time.perf_counter()
    subprocess.run([str(binary), "--version"], check=True, capture_output=True)
    return time.perf_counter() - began


def timed_vdirsyncer(
    binary: Path, radicale: RadicaleProcess, states: list[dict[str, Any]], tmp: Path
) -> float:
    target = calendar(radicale)
    folder = tmp / f"vdir-{uuid.uuid4().hex[:6]}"
    (folder / "cal").mkdir(parents=True)
    for state in states:
        (folder / "cal" / f"{state['id']}.ics").write_bytes(render(state)[0])
    status = tmp / f"status-{uuid.uuid4().hex[:6]}"
    config = tmp / f"config-{uuid.uuid4().hex[:6]}"
    config.write_text(
        f"""[general]
status_path = "{status}"

[pair push]
a = "local"
b = "remote"
collections = null
conflict_resolution = "a wins"

[storage local]
type = "filesystem"
path = "{folder}/cal"
fileext = ".ics"

[storage remote]
type = "caldav"
url = "{target}"
username = "alice"
password = "secret"
"""
    )
    env = {**os.environ, "VDIRSYNCER_CONFIG": str(config)}
    subprocess.run(
        [str(binary), "discover", "push"], env=env, check=True, capture_output=True, input=b"y\n"
    )
    began = time.perf_counter()
    subprocess.run([str(binary), "sync", "push"], env=env, check=True, capture_output=True)
    return time.perf_counter() - began


class Sink(http.server.BaseHTTPRequestHandler):
    """A loopback CalDAV sink: an empty calendar that accepts every PUT."""

    protocol_version = "HTTP/1.1"

    def _answer(self, status: int, body: bytes = b"", extra: dict[str, str] | None = None) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(status)
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PROPFIND(self) -> None:  # noqa: N802
        body = (
            b'<?xml version="1.0"?><d:multistatus xmlns:d="DAV:"><d:response><d:href>'
            + self.path.encode()
            + b"</d:href><d:propstat><d:prop><d:resourcetype><d:collection/>"
            b'<c:calendar xmlns:c="urn:ietf:params:xml:ns:caldav"/></d:resourcetype></d:prop>'
            b"<d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response></d:multistatus>"
        )
        self._answer(207, body, {"Content-Type": "application/xml"})

    def do_PUT(self) -> None:  # noqa: N802
        self._answer(201, extra={"ETag": f'"{uuid.uuid4().hex}"'})

    def log_message(self, *args: Any) -> None:
        pass


def memory_run(url: str, key: Path, count: int) -> dict[str, Any]:
    """Run in a child process: book ``count`` appointments, backfill them into the sink."""
    container = open_container(url, key)
    account_id, _ = book(container, "memory", count)
    del _
    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    from caljournal.adapters.discovery import CalendarInfo, Discovery

    target = f"http://127.0.0.1:{port}/cal/"
    info = CalendarInfo(target, "sink", None, True, False, True)
    container.links._discover = lambda *a, **k: Discovery(  # noqa: SLF001
        target, "the sink", None, None, (info,), info
    )
    container.links.link(account_id, target, Credentials("alice", "secret"), OPERATOR)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    began = time.perf_counter()
    summary = container.sync.backfill(account_id, OPERATOR)
    seconds = time.perf_counter() - began
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    server.shutdown()
    container.close()
    return {
        "appointments": count,
        "created": summary.created,
        "seconds": round(seconds, 1),
        "peak_rss_mb_after_booking": round(before / 1024, 1),
        "peak_rss_mb": round(peak / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="backfill speed and memory")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--memory-count", type=int, default=50_000)
    parser.add_argument("--vdirsyncer", default=None, help="path of a vdirsyncer binary")
    parser.add_argument("--out", default="bench-results/backfill.json")
    parser.add_argument("--memory-child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument(
        "--keep-memory",
        default="bench-results/backfill.json",
        help="with --memory-count 0: reuse the memory figures of this earlier result file",
    )
    args = parser.parse_args()
    if args.memory_child:
        url, key, count = args.memory_child
        print(json.dumps(memory_run(url, Path(key), int(count))))
        return
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        container = open_container(f"sqlite:///{tmp / 'speed.sqlite'}", tmp / "k")
        binary = vdirsyncer_binary(args.vdirsyncer)
        try:
            with RadicaleProcess(tmp / "radicale", log_level="warning") as radicale:
                _, states = book(container, "rawsource", args.count)
                # Warm the server up first (its first writes are slower), untimed.
                timed_raw(radicale, states[: min(200, len(states))])
                # V B R R B V: Radicale slows as its storage grows, and in this
                # order each tool's two runs are centred on the same point.
                vdir_a = timed_vdirsyncer(binary, radicale, states, tmp)
                first = timed_backfill(container, radicale, args.count)
                raw_a = timed_raw(radicale, states)
                raw_b = timed_raw(radicale, states)
                second = timed_backfill(container, radicale, args.count)
                vdir_b = timed_vdirsyncer(binary, radicale, states, tmp)
                vdir_start = vdirsyncer_start_up(binary)
        finally:
            container.close()
        results["speed"] = {
            "objects": args.count,
            "backfill_s": [round(first, 2), round(second, 2)],
            "raw_put_s": [round(raw_a, 2), round(raw_b, 2)],
            "ratio": round((first + second) / (raw_a + raw_b), 3),
            "vdirsyncer_s": [round(vdir_a, 2), round(vdir_b, 2)],
            "vdirsyncer_start_up_s": round(vdir_start, 2),
            "backfill_vs_vdirsyncer": round((first + second) / (vdir_a + vdir_b), 3),
        }
        if args.memory_count <= 0:
            kept = Path(args.keep_memory)
            # Without an earlier result file the speed figures still count.
            results["memory"] = json.loads(kept.read_text())["memory"] if kept.exists() else None
        else:
            results["memory"] = None
        child = (
            None
            if args.memory_count <= 0
            else subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--memory-child",
                    f"sqlite:///{tmp / 'memory.sqlite'}",
                    str(tmp / "k"),
                    str(args.memory_count),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
        )
        if child is not None:
            results["memory"] = json.loads(child.stdout.strip().splitlines()[-1])
    speed, memory = results["speed"], results["memory"]
    table = Table(title=f"backfill of {speed['objects']} pre-existing appointments into Radicale")
    for column in ("run", "seconds", "per second"):
        table.add_column(column)
    for name, seconds in (
        ("caljournal backfill (A, then B)", speed["backfill_s"]),
        ("raw PUT loop (A, then B)", speed["raw_put_s"]),
        ("vdirsyncer sync (first, then last)", speed["vdirsyncer_s"]),
    ):
        total = sum(seconds)
        table.add_row(name, " + ".join(map(str, seconds)), f"{2 * speed['objects'] / total:.1f}")
    table.add_row("  of which vdirsyncer's own start-up", str(speed["vdirsyncer_start_up_s"]), "")
    table.add_row("backfill / raw", str(speed["ratio"]), "")
    table.add_row("backfill / vdirsyncer", str(speed["backfill_vs_vdirsyncer"]), "")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    console = Console()
    console.print(table)
    if memory is not None:
        mem = Table(title=f"backfill of {memory['appointments']} appointments into a loopback sink")
        for column in ("seconds", "peak RSS MB (after booking)", "peak RSS MB (end)"):
            mem.add_column(column)
        mem.add_row(
            str(memory["seconds"]),
            str(memory["peak_rss_mb_after_booking"]),
            str(memory["peak_rss_mb"]),
        )
        console.print(mem)
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
