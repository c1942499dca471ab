"""Benchmark: inbound polling of a 10,000-event calendar on a real Radicale.

Run from the repository root:

    python scripts/bench_inbound.py [--events 10000] [--backends sqlite,postgres]

The calendar is filled by writing the objects into Radicale's storage folder
before the server starts (PUT-ing 10,000 objects one by one would take Radicale
far longer than the benchmark itself). All requests go through a counting proxy.

Measured per journal, in one run:
* initial import of every event (requests, seconds, events/s);
* idle poll of the unchanged calendar (requests, ms) — target: 1 request;
* one remote change → its event in the journal (requests, ms) — target: ≤ 3;
* for comparison, a full ETag listing of the same calendar (one PROPFIND
  depth 1), which listing-based tools such as vdirsyncer do on every run, and
  a listing plus a GET of every object.

Prints a table and writes ``bench-results/inbound.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from caljournal.adapters.caldav_storage import CalDAVStorage  # noqa: E402
from caljournal.adapters.providers import get_profile  # noqa: E402
from caljournal.adapters.secrets import Credentials  # noqa: E402
from caljournal.bootstrap import Container, bootstrap  # noqa: E402
from caljournal.domain.cause import Cause, Origin  # noqa: E402
from caljournal.domain.link import CalendarLink  # noqa: E402
from caljournal.projections.inbound import Poller  # noqa: E402
from caljournal.settings import load_settings  # noqa: E402
from tests.support.faultproxy import FaultProxy  # noqa: E402
from tests.support.radicale import RadicaleProcess  # noqa: E402

PG_URL = os.environ.get("CALJOURNAL_BENCH_PG_URL", "postgresql://root@127.0.0.1:5432/test")
OPERATOR = Cause(Origin.OPERATOR, "bench", "bench")
EVENT = (
    "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//bench//EN\r\nBEGIN:VEVENT\r\n"
    "UID:{uid}\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:{start}\r\nDTEND:{end}\r\n"
    "SUMMARY:Event {n}\r\nLOCATION:Room {room}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
)


def fill_storage(radicale: RadicaleProcess, cal_id: str, count: int) -> None:
    """Write ``count`` events straight into the stopped server's collection folder."""
    folder = radicale.storage_path / "collection-root" / "alice" / cal_id
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
        (folder / f"bench-{n}.ics").write_text(text)


def poller_for(
    container: Container, account_id: uuid.UUID, url: str
) -> tuple[Poller, CalDAVStorage]:
    stored: CalendarLink = container.journal.repository.get(CalendarLink.id_for(account_id))
    reader = CalDAVStorage(container.links.access(stored), url, get_profile(stored.provider))
    state = container.links.get(account_id)
    cause = lambda: Cause(Origin.CALDAV, "bench", f"poll-{uuid.uuid4()}")  # noqa: E731
    return (
        Poller(
            container.journal,
            reader,
            container.sync_state,
            str(account_id),
            state,
            cause,
            pool=container.cpu_pool,
        ),
        reader,
    )


def timed(call: Any) -> tuple[Any, float]:
    began = time.perf_counter()
    result = call()
    return result, time.perf_counter() - began


def run_backend(
    url: str, radicale: RadicaleProcess, cal_id: str, tmp: Path, victim: int
) -> dict[str, Any]:
    container = bootstrap(
        load_settings(database_url=url, secret_key_file=tmp / "k", allow_private_addresses=True)
    )
    results: dict[str, Any] = {}
    try:
        # Radicale builds its item cache for all objects on the first full report,
        # which can take longer than the proxy's default 30 s upstream timeout.
        with FaultProxy(radicale.url, upstream_timeout=600.0) as proxy:
            name = f"bench{uuid.uuid4().hex[:6]}"
            container.accounts.open_account(name, OPERATOR)
            account_id = container.accounts.find_account(name).id
            calendar_url = f"{proxy.url}alice/{cal_id}/"
            container.links.link(account_id, calendar_url, Credentials("alice", "secret"), OPERATOR)
            poller, reader = poller_for(container, account_id, calendar_url)
            proxy.clear_log()
            report, seconds = timed(poller.poll)
            results["initial import"] = {
                "requests": len(proxy.requests()),
                "seconds": round(seconds, 2),
                "events": report.counts.get("import", 0),
                "events_per_s": round(report.counts.get("import", 0) / seconds, 1),
            }
            proxy.clear_log()
            report, seconds = timed(poller.poll)
            results["idle poll"] = {
                "requests": len(proxy.requests()),
                "ms": round(seconds * 1000, 1),
                "events": sum(report.counts.values()),
            }
            with httpx.Client(auth=("alice", "secret")) as raw:
                href = f"{calendar_url}bench-{victim}.ics"
                got = raw.get(href)
                got.raise_for_status()
                body = got.text.replace(f"SUMMARY:Event {victim}", "SUMMARY:Renamed by phone")
                raw.put(
                    href, content=body.encode(), headers={"Content-Type": "text/calendar"}
                ).raise_for_status()
            proxy.clear_log()
            report, seconds = timed(poller.poll)
            results["one remote change"] = {
                "requests": len(proxy.requests()),
                "ms": round(seconds * 1000, 1),
                "events": sum(report.counts.values()),
            }
            token = container.sync_state.inbound_state(str(account_id)).sync_token
            proxy.clear_log()
            _, seconds = timed(lambda: reader.changes_since(token))
            results["server's empty sync delta alone (comparison)"] = {
                "requests": len(proxy.requests()),
                "ms": round(seconds * 1000, 1),
                "events": 0,
            }
            proxy.clear_log()
            listing, seconds = timed(reader.listing)
            results["full ETag listing (comparison)"] = {
                "requests": len(proxy.requests()),
                "ms": round(seconds * 1000, 1),
                "objects": len(listing.changed),
            }
            reader.close()
    finally:
        container.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description="inbound polling of a large calendar")
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--out", default="bench-results/inbound.json")
    args = parser.parse_args()
    results: dict[str, Any] = {"events": args.events}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with RadicaleProcess(tmp / "radicale", log_level="warning") as radicale:
            cal_id = "big"
            radicale.make_calendar("alice", "secret", "Big", cal_id=cal_id)
            radicale.stop()
            fill_storage(radicale, cal_id, args.events)
            radicale.start()
            for number, backend in enumerate(args.backends.split(",")):
                schema = f"bench_{uuid.uuid4().hex[:8]}"
                if backend == "sqlite":
                    url = f"sqlite:///{tmp / f'{schema}.sqlite'}"
                else:
                    with psycopg.connect(PG_URL, autocommit=True) as admin:
                        admin.execute(f'CREATE SCHEMA "{schema}"')
                    url = f"{PG_URL}?schema={schema}"
                try:
                    victim = args.events // 2 + number
                    results[backend] = run_backend(url, radicale, cal_id, tmp, victim)
                finally:
                    if backend != "sqlite":
                        with psycopg.connect(PG_URL, autocommit=True) as admin:
                            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
    table = Table(title=f"inbound polling, calendar of {args.events} events on Radicale")
    for column in ("journal", "operation", "requests", "time", "result"):
        table.add_column(column)
    for backend in args.backends.split(","):
        for operation, figures in results[backend].items():
            time_text = f"{figures['seconds']} s" if "seconds" in figures else f"{figures['ms']} ms"
            result = (
                f"{figures['events']} events ({figures['events_per_s']}/s)"
                if "events_per_s" in figures
                else f"{figures.get('events', figures.get('objects'))} "
                + ("objects" if "objects" in figures else "events")
            )
            table.add_row(backend, operation, str(figures["requests"]), time_text, result)
    Console().print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    Console(stderr=True).print(f"wrote {out}")


if __name__ == "__main__":
    main()
