"""Where an in-process API write's time goes, on an SQLite journal.

Wraps the service, journal and recorder calls of one write in timers, runs
the benchmark's in-process workload (book N appointments, move each once) and
prints, per request, the time spent in each wrapped call. The wrappers add a
few microseconds each; the figures are for finding where time goes, not rates.

Usage: python -m caljournal.scripts.profile_api [--n 1000]
"""

from __future__ import annotations

import argparse
import collections
import functools
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import eventsourcing.persistence
import eventsourcing.sqlite
from eventsourcing.application import Application

import caljournal.scripts.bench_api as bench
from caljournal.accounts import AccountService
from caljournal.adapters.journal import Journal, SQLiteJournalRecorder
from caljournal.api.deps import Caller
from caljournal.appointments import AppointmentService
from caljournal.bootstrap import bootstrap
from caljournal.domain.appointment import Appointment
from caljournal.settings import load_settings

TIMES: dict[str, list[float]] = collections.defaultdict(list)

# (owner, attribute, label): the calls one write goes through, outermost first.
TIMED = (
    (Caller, "run", "service call (Caller.run)"),
    (AccountService, "authenticate", "token check"),
    (AppointmentService, "_load", "load the appointment (moves)"),
    (Journal, "save", "journal save with query-table row"),
    (Application, "save", "library save"),
    (eventsourcing.persistence.EventStore, "put", "event store put"),
    (SQLiteJournalRecorder, "_insert_events", "insert statements"),
    (eventsourcing.sqlite.SQLiteConnection, "commit", "commit"),
    (Appointment, "state", "state()"),
)


def _timed(function: Any, label: str) -> Any:
    if getattr(function, "__code__", None) and function.__code__.co_flags & 0x80:

        @functools.wraps(function)
        async def timed_async(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return await function(*args, **kwargs)
            finally:
                TIMES[label].append(time.perf_counter() - began)

        return timed_async

    @functools.wraps(function)
    def timed(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            TIMES[label].append(time.perf_counter() - began)

    return timed


def main() -> None:
    """Run the workload with timers and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="appointments (2n writes)")
    args = parser.parse_args()
    for owner, name, label in TIMED:
        setattr(owner, name, _timed(getattr(owner, name), label))
    bench._asgi_call = _timed(bench._asgi_call, "whole request")
    with tempfile.TemporaryDirectory() as tmp:
        container = bootstrap(load_settings(database_url=f"sqlite:///{Path(tmp) / 'j.sqlite'}"))
        try:
            bench.bench_asgi(container, 100)  # warm up
            TIMES.clear()
            figures = bench.bench_asgi(container, args.n)
        finally:
            container.close()
    requests = len(TIMES["whole request"])
    print(f"{figures['writes']} writes, {figures['writes_per_s']:.0f} writes/s")
    print(f"{'call':40s} {'calls':>6s} {'µs per request':>15s} {'median µs':>10s}")
    for label, spent in sorted(TIMES.items(), key=lambda item: -sum(item[1])):
        per_request = sum(spent) / requests * 1e6
        median = statistics.median(spent) * 1e6
        print(f"{label:40s} {len(spent):6d} {per_request:15.0f} {median:10.0f}")


if __name__ == "__main__":
    main()
