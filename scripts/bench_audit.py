"""Benchmark: exporting an account's change log (rows/s and peak memory), SQLite and PostgreSQL.

Run from the repository root:

    python scripts/bench_audit.py [--events 100000] [--backends sqlite,postgres]

For each backend, one account gets ``events`` events written straight into the
journal (batches of aggregates per save, not through the API): appointments
are booked, then moved and retitled in waves, ten events each, so that every
wave touches every appointment (``--per-appointment`` changes the ratio).
Each measurement then runs in a fresh child process, which reports its own
rate (per wall-clock second, and per second of its own CPU time, which a busy
shared machine disturbs less; PostgreSQL's own CPU is not in it), its peak
RSS and its RSS at every tenth of the way (flat memory shows as equal figures):

* **notifications**: reading the journal's notifications alone (the baseline);
* **decode**: the same, decoding every event (what any reader of events pays);
* **json** / **csv**: ``caljournal audit --format json|csv`` to /dev/null.

Prints a table and writes ``bench-results/audit.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from caljournal.audit import AuditQuery, AuditService  # noqa: E402
from caljournal.bootstrap import Container, bootstrap  # noqa: E402
from caljournal.domain.appointment import Appointment  # noqa: E402
from caljournal.domain.cause import Cause, Origin  # noqa: E402
from caljournal.scripts.audit_cli import write_csv, write_json  # noqa: E402
from caljournal.settings import load_settings  # noqa: E402

BERLIN = ZoneInfo("Europe/Berlin")
OPERATOR = Cause(Origin.OPERATOR, "bench", "bench")
MODES = ("notifications", "decode", "json", "csv")
BATCH = 100


def open_container(url: str, key: Path) -> Container:
    return bootstrap(load_settings(database_url=url, secret_key_file=key))


def write_events(container: Container, events: int, per_appointment: int) -> tuple[str, float]:
    """Write about ``events`` events for one new account; return (account id, seconds)."""
    container.accounts.open_account("bench", OPERATOR)
    account_id = container.accounts.find_account("bench").id
    journal = container.journal
    count = max(1, events // per_appointment)
    began = time.perf_counter()
    appointments: list[Appointment] = []
    for i in range(count):
        start = datetime(2026, 6, 1, 7, tzinfo=BERLIN) + timedelta(minutes=30 * (i % 5000))
        appointments.append(
            Appointment.book(
                appointment_id=uuid.uuid4(),
                account_id=account_id,
                title=f"Booking {i}",
                start=start,
                end=start + timedelta(minutes=30),
                timezone="Europe/Berlin",
                customer_name="Bench Customer",
                cause=Cause(Origin.API, "token:bench/default", f"book-{i}"),
            )
        )
        if len(appointments) % BATCH == 0:
            journal.save(*appointments[-BATCH:])
    journal.save(*appointments[len(appointments) - len(appointments) % BATCH :])
    for wave in range(1, per_appointment):
        cause = Cause(Origin.CALDAV if wave % 3 == 0 else Origin.API, "bench", f"wave-{wave}")
        for first in range(0, count, BATCH):
            chunk = appointments[first : first + BATCH]
            for appointment in chunk:
                if wave % 2:
                    shift = timedelta(minutes=15 * wave)
                    appointment.move(
                        start=appointment.start + shift, end=appointment.end + shift, cause=cause
                    )
                else:
                    appointment.change_details(
                        changes={"title": f"{appointment.title} / {wave}"}, cause=cause
                    )
            journal.save(*chunk)
    return str(account_id), time.perf_counter() - began


def _rss_kb() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _notifications(container: Container) -> Iterator[Any]:
    recorder = container.journal.recorder
    position = 0
    while page := recorder.select_notifications(
        start=position, limit=1000, inclusive_of_start=False
    ):
        yield from page
        position = page[-1].id


class _Sampled:
    """Count rows passing through, noting RSS at every tenth of ``expected``."""

    def __init__(self, rows: Iterator[Any], expected: int) -> None:
        self.rows, self.expected, self.count = rows, max(expected, 1), 0
        self.samples: list[int] = []

    def __iter__(self) -> Iterator[Any]:
        step = max(self.expected // 10, 1)
        for row in self.rows:
            self.count += 1
            if self.count % step == 0:
                self.samples.append(_rss_kb())
            yield row


def child(url: str, key: str, account: str, mode: str, expected: int) -> dict[str, Any]:
    """Run one measurement in this (fresh) process and return its figures."""
    container = open_container(url, Path(key))
    try:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu_before = usage.ru_utime + usage.ru_stime
        began = time.perf_counter()
        sink = open(os.devnull, "w")  # noqa: SIM115
        if mode in ("notifications", "decode"):
            decode = container.journal.mapper.to_domain_event
            source = _notifications(container)
            rows = (decode(n) for n in source) if mode == "decode" else source
            sampled = _Sampled(rows, expected)
            for _ in sampled:
                pass
        else:
            records = AuditService(container.journal).stream(AuditQuery(uuid.UUID(account)))
            sampled = _Sampled(records, expected)
            (write_json if mode == "json" else write_csv)(sampled, sink)
        seconds = time.perf_counter() - began
        sink.close()
    finally:
        container.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime - cpu_before
    return {
        "mode": mode,
        "rows": sampled.count,
        "seconds": round(seconds, 3),
        "rows_per_s": round(sampled.count / seconds) if seconds else None,
        "cpu_seconds": round(cpu, 3),
        "rows_per_cpu_s": round(sampled.count / cpu) if cpu else None,
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "rss_mb_by_tenth": [round(kb / 1024, 1) for kb in sampled.samples],
    }


def measure(url: str, key: Path, account: str, mode: str, expected: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", url, str(key), account, mode, str(expected)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{mode} run failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run_backend(
    backend: str, events: int, per_appointment: int, work: Path
) -> list[dict[str, Any]]:
    from caljournal.scripts.bench_db import scratch_journal_url

    key = work / f"{backend}.key"
    with scratch_journal_url(backend, work, "bench_audit") as url:
        container = open_container(url, key)
        try:
            account, seconds = write_events(container, events, per_appointment)
            total = container.journal.recorder.max_notification_id() or 0
        finally:
            container.close()
        Console(stderr=True).print(
            f"{backend}: wrote {total} events in {seconds:.1f} s ({total / seconds:.0f}/s)"
        )
        results = []
        for mode in MODES:
            result = measure(url, key, account, mode, total)
            result.update(backend=backend, events=total)
            results.append(result)
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description="audit export speed and memory")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--per-appointment", type=int, default=10)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--out", default="bench-results/audit.json")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        url, key, account, mode, expected = args.child
        print(json.dumps(child(url, key, account, mode, int(expected))))
        return
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="caljournal-bench-audit-") as work:
        for backend in args.backends.split(","):
            results.extend(run_backend(backend, args.events, args.per_appointment, Path(work)))
    table = Table(title=f"audit export, one account of {args.events} events")
    columns = (
        "backend",
        "mode",
        "rows",
        "s",
        "rows/s",
        "rows/CPU-s",
        "peak RSS MB",
        "RSS by tenth",
    )
    for column in columns:
        table.add_column(column)
    for r in results:
        table.add_row(
            r["backend"],
            r["mode"],
            str(r["rows"]),
            str(r["seconds"]),
            str(r["rows_per_s"]),
            str(r["rows_per_cpu_s"]),
            str(r["peak_rss_mb"]),
            f"{min(r['rss_mb_by_tenth'], default=0)}–{max(r['rss_mb_by_tenth'], default=0)}",
        )
    Console(width=150).print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    out.write_text(
        json.dumps({"events": args.events, "load_average": load, "results": results}, indent=2)
        + "\n"
    )


if __name__ == "__main__":
    main()
