"""Benchmark: the first import of a large calendar, against the server's cheapest answer.

Run from the repository root:

    python scripts/bench_import.py [--events 10000] [--servers radicale,xandikos]
        [--backends sqlite,postgres] [--memory-events 10000] [--big 100000]

Per server (Radicale, Xandikos; filled by writing the objects into the stopped
server's storage, which is far faster than PUT-ing them), in one run:

* the server's cheapest full fetch alone: the same REPORTs caljournal sends,
  with httpx, no journal (requests, seconds);
* vdirsyncer 0.21 pulling the same calendar into a filesystem storage (when
  installed: ``pip install 'vdirsyncer>=0.21,<0.22'`` into the environment;
  ``--no-vdirsyncer`` leaves it out);
* loading every object by multiget, in batches of 100 throughout and in
  batches adapted to the server's answers (requests, seconds; ``--no-multiget``
  leaves it out);
* caljournal's first import into each journal (requests, seconds, events/s,
  and the ratios to both baselines).

Then the journal side alone, with the calendar answered from memory
(``MemoryStorage``): events/s on each journal, against the library's raw save
loop (new bare aggregates saved a chunk per transaction, the floor under any
import into the journal), and a first import of ``--big`` events into SQLite in
a child process, with its peak RSS. Beside each cheapest fetch: what 1.2 × that
fetch leaves per object for all of the import's own work, to set against the
raw save loop (neither server sends a byte before its answer is complete, so
that work cannot overlap the fetch).

Prints a table and writes ``bench-results/import.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from caljournal.adapters.caldav_storage import CalDAVStorage  # noqa: E402
from caljournal.adapters.cpu_pool import ProcessPool  # noqa: E402
from caljournal.adapters.memory_storage import MemoryStorage  # noqa: E402
from caljournal.adapters.multistatus import (  # noqa: E402
    calendar_query_body,
    read_multistatus,
    sync_collection_body,
)
from caljournal.adapters.providers import get_profile  # noqa: E402
from caljournal.adapters.secrets import Credentials  # noqa: E402
from caljournal.bootstrap import Container, bootstrap  # noqa: E402
from caljournal.domain.cause import Cause, Origin  # noqa: E402
from caljournal.domain.link import CalendarLink  # noqa: E402
from caljournal.projections.inbound import Poller  # noqa: E402
from caljournal.projections.inbound_chunks import BATCH as CHUNK  # noqa: E402
from caljournal.settings import database_config, load_settings  # noqa: E402
from tests.support.radicale import RadicaleProcess  # noqa: E402
from tests.support.xandikos import XandikosProcess  # noqa: E402

PG_URL = os.environ.get("CALJOURNAL_BENCH_PG_URL", "postgresql://root@127.0.0.1:5432/test")
OPERATOR = Cause(Origin.OPERATOR, "bench", "bench")
EVENT = (
    "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//bench//EN\r\nBEGIN:VEVENT\r\n"
    "UID:{uid}\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:{start}\r\nDTEND:{end}\r\n"
    "SUMMARY:Event {n}\r\nLOCATION:Room {room}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
)
MEMORY_URL = "https://dav.example.org/calendars/bench/"


def events(count: int) -> Iterator[tuple[str, str]]:
    """Yield ``count`` (object name, iCalendar text) pairs, one event each."""
    base = datetime(2026, 1, 5, 8, tzinfo=UTC)
    for n in range(count):
        start = base + timedelta(hours=n % 10, days=n // 10)
        text = EVENT.format(
            uid=f"bench-{n}@example.org",
            start=start.strftime("%Y%m%dT%H%M%SZ"),
            end=(start + timedelta(minutes=45)).strftime("%Y%m%dT%H%M%SZ"),
            n=n,
            room=n % 40,
        )
        yield f"bench-{n}.ics", text


# -- servers ------------------------------------------------------------------------


@contextmanager
def radicale_calendar(tmp: Path, count: int) -> Iterator[tuple[str, tuple[str, str]]]:
    """Yield the URL and credentials of a Radicale calendar holding ``count`` events."""
    with RadicaleProcess(tmp / "radicale", log_level="warning") as radicale:
        radicale.make_calendar("alice", "secret", "Big", cal_id="big")
        radicale.stop()
        folder = radicale.storage_path / "collection-root" / "alice" / "big"
        for name, text in events(count):
            (folder / name).write_text(text)
        radicale.start()
        yield f"{radicale.url}alice/big/", ("alice", "secret")


@contextmanager
def xandikos_calendar(tmp: Path, count: int) -> Iterator[tuple[str, tuple[str, str]]]:
    """Yield the URL and credentials of a Xandikos calendar holding ``count`` events.

    The calendar is a git working tree: the objects are written and committed there.
    """
    with XandikosProcess(tmp / "xandikos") as xandikos:
        url = str(xandikos.make_calendar("Big", cal_id="big").url)
        xandikos.stop()
        folder = xandikos.data_path / "user" / "calendars" / "big"
        for name, text in events(count):
            (folder / name).write_text(text)
        git = ["git", "-C", str(folder), "-c", "user.name=bench", "-c", "user.email=b@x"]
        subprocess.run([*git, "add", "-A"], check=True, capture_output=True)
        subprocess.run([*git, "commit", "-qm", "bench"], check=True, capture_output=True)
        xandikos.start()
        yield url, ("", "")


SERVERS: dict[str, Callable[[Path, int], Any]] = {
    "radicale": radicale_calendar,
    "xandikos": xandikos_calendar,
}


# -- baselines ----------------------------------------------------------------------


def cheapest_fetch(url: str, auth: tuple[str, str]) -> dict[str, Any]:
    """Fetch every object the cheapest way the server offers, with httpx and no journal.

    A sync-collection asking for ETags and data; when the server leaves the data
    out, one calendar-query for it (what caljournal does too).
    """
    headers = {"Depth": "1", "Content-Type": "application/xml; charset=utf-8"}
    began = time.perf_counter()
    with httpx.Client(auth=auth if auth[0] else None, timeout=600) as client:
        answer = client.request(
            "REPORT", url, content=sync_collection_body(None, True), headers=headers
        )
        requests = 1
        members = [m for m in read_multistatus(answer.content) if not hasattr(m, "truncated")]
        with_data = sum(1 for m in members if getattr(m, "data", None) is not None)
        if with_data < len(members):
            answer = client.request("REPORT", url, content=calendar_query_body(), headers=headers)
            requests += 1
            with_data = sum(
                1 for m in read_multistatus(answer.content) if getattr(m, "data", None) is not None
            )
    seconds = time.perf_counter() - began
    return {"requests": requests, "seconds": round(seconds, 2), "objects": with_data}


def vdirsyncer_pull(url: str, auth: tuple[str, str], tmp: Path) -> dict[str, Any] | None:
    """Time vdirsyncer pulling the calendar into a filesystem storage; None when not installed."""
    program = shutil.which("vdirsyncer") or str(Path(sys.executable).parent / "vdirsyncer")
    if not Path(program).exists():
        return None
    folder = tmp / f"vdirsyncer-{uuid.uuid4().hex[:6]}"
    (folder / "local").mkdir(parents=True)
    credentials = f'username = "{auth[0]}"\npassword = "{auth[1]}"\n' if auth[0] else ""
    config = folder / "config"
    config.write_text(
        f'[general]\nstatus_path = "{folder}/status/"\n\n'
        '[pair bench]\na = "bench_remote"\nb = "bench_local"\ncollections = null\n'
        'conflict_resolution = "a wins"\n\n'
        f'[storage bench_local]\ntype = "filesystem"\npath = "{folder}/local/"\n'
        'fileext = ".ics"\n\n'
        f'[storage bench_remote]\ntype = "caldav"\nurl = "{url}"\n{credentials}'
        "read_only = true\n"
    )
    # Discovery is set-up, not the pull: left out of the time.
    subprocess.run(
        [program, "-c", str(config), "discover", "bench"],
        check=True,
        capture_output=True,
        timeout=600,
        input=b"",
    )
    began = time.perf_counter()
    subprocess.run(
        [program, "-c", str(config), "sync"], check=True, capture_output=True, timeout=1800
    )
    seconds = time.perf_counter() - began
    pulled = len(list((folder / "local").glob("*.ics")))
    return {"seconds": round(seconds, 2), "objects": pulled}


# -- caljournal ---------------------------------------------------------------------


@contextmanager
def journal(backend: str, tmp: Path) -> Iterator[Container]:
    """Yield a container on a fresh SQLite file or PostgreSQL schema."""
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    if backend == "sqlite":
        url = f"sqlite:///{tmp / f'{schema}.sqlite'}"
    else:
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            admin.execute(f'CREATE SCHEMA "{schema}"')
        url = f"{PG_URL}?schema={schema}"
    container = bootstrap(
        load_settings(database_url=url, secret_key_file=tmp / "k", allow_private_addresses=True)
    )
    try:
        yield container
    finally:
        container.close()
        if backend != "sqlite":
            with psycopg.connect(PG_URL, autocommit=True) as admin:
                admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


def import_from_server(
    backend: str, tmp: Path, url: str, auth: tuple[str, str], count: int
) -> dict[str, Any]:
    """Link an account to the calendar and time its first poll (the import)."""
    with journal(backend, tmp) as container:
        name = f"bench{uuid.uuid4().hex[:6]}"
        container.accounts.open_account(name, OPERATOR)
        account_id = container.accounts.find_account(name).id
        container.links.link(
            account_id, url, Credentials(*auth), OPERATOR, auth=None if auth[0] else "none"
        )
        stored: CalendarLink = container.journal.repository.get(CalendarLink.id_for(account_id))
        storage = CalDAVStorage(
            container.links.access(stored), url, get_profile(stored.provider), full_timeout=1800
        )
        cause = lambda: Cause(Origin.CALDAV, "bench", f"poll-{uuid.uuid4()}")  # noqa: E731
        state = container.links.get(account_id)
        poller = Poller(
            container.journal,
            storage,
            container.sync_state,
            str(account_id),
            state,
            cause,
            pool=container.cpu_pool,
        )
        began = time.perf_counter()
        report = poller.poll()
        seconds = time.perf_counter() - began
        storage.close()
    imported = report.counts.get("import", 0)
    assert imported == count, f"imported {imported} of {count}: {report}"
    return {
        "requests": report.requests,
        "seconds": round(seconds, 2),
        "events": imported,
        "events_per_s": round(imported / seconds, 1),
    }


class Bare(Aggregate):
    """The raw save loop's aggregate: one event with a title and a start, no query tables."""

    @event("Created")
    def __init__(self, title: str, start: datetime) -> None:
        self.title = title
        self.start = start


def raw_save_loop(backend: str, tmp: Path, count: int) -> dict[str, Any]:
    """Time the library alone saving ``count`` new aggregates, a chunk per transaction.

    The floor under any import into the journal: the library's own aggregate,
    encoding and insert, without caljournal's parse, decisions, sealing, query
    tables, copy records or chain.
    """
    schema = f"raw_{uuid.uuid4().hex[:8]}"
    if backend == "sqlite":
        env = database_config(f"sqlite:///{tmp / schema}")
    else:
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            admin.execute(f'CREATE SCHEMA "{schema}"')
        env = database_config(f"{PG_URL}?schema={schema}")
    application: Application[uuid.UUID] = Application(env=env)
    try:
        start = datetime(2026, 1, 5, 8, tzinfo=UTC)
        began = time.perf_counter()
        for first in range(0, count, CHUNK):
            application.save(
                *(Bare(f"Event {n}", start) for n in range(first, min(first + CHUNK, count)))
            )
        seconds = time.perf_counter() - began
    finally:
        application.close()
        if backend != "sqlite":
            with psycopg.connect(PG_URL, autocommit=True) as admin:
                admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
    return {
        "seconds": round(seconds, 2),
        "events": count,
        "events_per_s": round(count / seconds, 1),
        "us_per_event": round(seconds / count * 1e6, 1),
    }


def import_from_memory(container: Container, count: int) -> dict[str, Any]:
    """Time a first import of ``count`` events answered from memory (the journal side alone)."""
    storage = MemoryStorage(MEMORY_URL)
    for name, text in events(count):
        storage.put(MEMORY_URL + name, text.encode())
    link = {"calendar_url": MEMORY_URL, "sync_tokens": True, "provider": "radicale"}
    cause = lambda: Cause(Origin.CALDAV, "bench", f"poll-{uuid.uuid4()}")  # noqa: E731
    poller = Poller(
        container.journal,
        storage,
        container.sync_state,
        str(uuid.uuid4()),
        link,
        cause,
        pool=container.cpu_pool,
    )
    began = time.perf_counter()
    report = poller.poll()
    seconds = time.perf_counter() - began
    imported = report.counts.get("import", 0)
    assert imported == count, f"imported {imported} of {count}: {report}"
    return {
        "requests": report.requests,
        "seconds": round(seconds, 2),
        "events": imported,
        "events_per_s": round(imported / seconds, 1),
    }


def big_import(count: int, tmp: Path) -> dict[str, Any]:
    """Import ``count`` events from memory into SQLite in a child process; add its peak RSS."""
    done = subprocess.run(
        [sys.executable, __file__, "--child-big", str(count), "--tmp", str(tmp)],
        check=True,
        capture_output=True,
        text=True,
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def child_big(count: int, tmp: Path) -> None:
    """Run :func:`big_import`'s import here; print its figures and peak RSS as JSON."""
    with journal("sqlite", tmp) as container:
        figures = import_from_memory(container, count)
        # The parsing helpers' own peaks (VmHWM), read while they run: the kernel's
        # figure for ended children also counts the owner's pages at the fork.
        pool = container.cpu_pool
        pids = pool.pids() if isinstance(pool, ProcessPool) else []
        figures["helper_peak_rss_mb"] = round(sum(_peak_kb(pid) for pid in pids) / 1024, 1)
    figures["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(figures))


def _peak_kb(pid: int) -> int:
    """Return the peak resident set of a running process, in kB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM"))


def multiget_load(url: str, auth: tuple[str, str], adaptive: bool) -> dict[str, Any]:
    """Time loading every object by multiget: batches of 100 throughout, or adapted.

    The import itself needs no multiget where the sync answer holds the data;
    servers that leave it out (or refuse to send it) are read this way.
    """
    from caljournal.adapters import calendar_reader
    from caljournal.adapters.caldav_client import ServerAccess

    access = ServerAccess(url, Credentials(*auth), allow_private=True)
    quick = calendar_reader.MULTIGET_QUICK
    calendar_reader.MULTIGET_QUICK = quick if adaptive else -1.0  # never grows
    reader = calendar_reader.CalendarReader(access, url)
    try:
        hrefs = list(reader.listing().changed)
        began = time.perf_counter()
        loaded = reader.load(hrefs)
        seconds = time.perf_counter() - began
    finally:
        reader.close()
        calendar_reader.MULTIGET_QUICK = quick
    assert len(loaded.objects) == len(hrefs), f"loaded {len(loaded.objects)} of {len(hrefs)}"
    return {"requests": loaded.requests, "seconds": round(seconds, 2), "objects": len(hrefs)}


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Run every measurement; return the results."""
    results: dict[str, Any] = {
        "events": args.events,
        "servers": {},
        "memory": {},
        "raw save loop": {},
    }
    backends = args.backends.split(",")
    for server in filter(None, args.servers.split(",")):  # "" measures the journal side only
        with SERVERS[server](tmp, args.events) as (url, auth):
            figures: dict[str, Any] = {}
            cheapest_fetch(url, auth)  # warm the server's caches (Radicale builds its own)
            figures["cheapest full fetch"] = cheapest_fetch(url, auth)
            if args.vdirsyncer:
                pulled = vdirsyncer_pull(url, auth, tmp)
                if pulled is not None:
                    figures["vdirsyncer 0.21 pull"] = pulled
            if args.multiget:
                for adaptive in (False, True, False, True):  # alternating; the later of each kept
                    name = "multigets, adapted" if adaptive else "multigets of 100"
                    figures[name] = multiget_load(url, auth, adaptive)
            for backend in backends:
                figures[f"caljournal import ({backend})"] = import_from_server(
                    backend, tmp, url, auth, args.events
                )
            results["servers"][server] = figures
    for backend in backends:
        with journal(backend, tmp) as container:
            results["memory"][backend] = import_from_memory(container, args.memory_events)
        results["raw save loop"][backend] = raw_save_loop(backend, tmp, args.memory_events)
    if args.big:
        results["memory"]["sqlite, big"] = big_import(args.big, tmp)
    return results


def budget(figures: dict[str, Any], events: int) -> str:
    """Return what 1.2 × the cheapest fetch leaves per object for all of the import's own work."""
    return f"1.2× leaves {figures['seconds'] * 0.2 / events * 1e6:.0f} µs/object"


def ratios(figures: dict[str, Any], seconds: float) -> str:
    """Return how ``seconds`` compares with the cheapest fetch and with vdirsyncer."""
    parts = [f"{seconds / figures['cheapest full fetch']['seconds']:.2f}× fetch"]
    if "vdirsyncer 0.21 pull" in figures:
        parts.append(f"{seconds / figures['vdirsyncer 0.21 pull']['seconds']:.2f}× vdirsyncer")
    return ", ".join(parts)


def show(results: dict[str, Any]) -> None:
    """Print the results as a table."""
    table = Table(title=f"first import of {results['events']} events")
    for column in ("server", "what", "requests", "seconds", "events/s", "compared"):
        table.add_column(column)
    for server, figures in results["servers"].items():
        for what, f in figures.items():
            compared = (
                ratios(figures, f["seconds"])
                if what.startswith("caljournal")
                else budget(f, results["events"])
                if what == "cheapest full fetch"
                else ""
            )
            table.add_row(
                server,
                what,
                str(f.get("requests", "")),
                str(f["seconds"]),
                str(f.get("events_per_s", "")),
                compared,
            )
    for backend, f in results["memory"].items():
        rss = (
            f" (peak RSS {f['peak_rss_mb']} MB, parsing helper {f['helper_peak_rss_mb']} MB)"
            if "peak_rss_mb" in f
            else ""
        )
        table.add_row(
            "memory",
            f"caljournal import of {f['events']} ({backend}){rss}",
            str(f["requests"]),
            str(f["seconds"]),
            str(f["events_per_s"]),
            f"{f['seconds'] / f['events'] * 1e6:.0f} µs/object",
        )
    for backend, f in results["raw save loop"].items():
        table.add_row(
            "memory",
            f"raw eventsourcing save loop, {f['events']} ({backend})",
            "",
            str(f["seconds"]),
            str(f["events_per_s"]),
            f"{f['us_per_event']:.0f} µs/object",
        )
    Console().print(table)


def main() -> None:
    """Parse the arguments, run, print and write the results."""
    parser = argparse.ArgumentParser(description="first import of a large calendar")
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--servers", default="radicale,xandikos")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--memory-events", type=int, default=10_000)
    parser.add_argument("--big", type=int, default=100_000, help="0 leaves it out")
    parser.add_argument("--no-vdirsyncer", dest="vdirsyncer", action="store_false")
    parser.add_argument(
        "--no-multiget",
        dest="multiget",
        action="store_false",
        help="leave out loading every object by multiget (batches of 100 against adapted)",
    )
    parser.add_argument("--out", default="bench-results/import.json")
    parser.add_argument("--child-big", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_big:
        child_big(args.child_big, Path(args.tmp))
        return
    with tempfile.TemporaryDirectory() as tmp_name:
        results = run(args, Path(tmp_name))
    show(results)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    Console(stderr=True).print(f"wrote {out}")


if __name__ == "__main__":
    main()
