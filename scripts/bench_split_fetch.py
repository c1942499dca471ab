"""Benchmark: a first import from one answer, against the same calendar fetched in parts.

Run from the repository root:

    python scripts/bench_split_fetch.py [--events 10000] [--rounds 2]
        [--backends sqlite,postgres]

Radicale answers a first sync-collection with every object's data in one
response and sends no byte of it before the whole is ready, so no part of the
import can overlap the fetch. Fetched in parts (an ETag listing, then
calendar-multigets), the poll records one chunk while the server answers the
next (chunks are loaded one ahead, ``projections.inbound_chunks``). This
measures whether that pays, on one Radicale, per round:

* each way's requests alone, with ``httpx`` and no journal: one sync-collection
  with the data; a listing and 2 multigets of half the calendar each (3 requests,
  what the issue's request target allows); a listing and one multigets of 500
  per chunk;
* caljournal's first import each of those ways, on each journal.

The 3-request way needs multigets larger than caljournal's ceiling of 1,000
objects: the run raises the ceiling in its own process. Prints a table and
writes ``bench-results/split_fetch.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from caljournal.adapters import calendar_reader, fetch_mode  # noqa: E402
from caljournal.adapters.caldav_storage import CalDAVStorage  # noqa: E402
from caljournal.adapters.fetch_mode import FetchMode  # noqa: E402
from caljournal.adapters.multistatus import (  # noqa: E402
    Member,
    multiget_body,
    read_multistatus,
    sync_collection_body,
)
from caljournal.adapters.providers import get_profile  # noqa: E402
from caljournal.adapters.secrets import Credentials  # noqa: E402
from caljournal.domain.cause import Cause, Origin  # noqa: E402
from caljournal.domain.link import CalendarLink  # noqa: E402
from caljournal.projections import inbound_chunks  # noqa: E402
from caljournal.projections.inbound import Poller  # noqa: E402
from caljournal.scripts import bench_import  # noqa: E402

HEADERS = {"Depth": "1", "Content-Type": "application/xml; charset=utf-8"}
#: (name, objects per multigets and per chunk; None for the one answer with the data)
WAYS: list[tuple[str, int | None]] = [
    ("sync with data", None),
    ("listing + 2 halves", 0),  # 0: multigets of half the calendar
    ("listing + 500s", 500),
]


def fetch_alone(url: str, auth: tuple[str, str], size: int | None, events: int) -> dict[str, Any]:
    """Time one way's requests with httpx, no journal (the multistatus read, as the import does)."""
    if size is None:
        return bench_import.cheapest_fetch(url, auth)
    size = size or (events + 1) // 2
    began = time.perf_counter()
    with httpx.Client(auth=auth if auth[0] else None, timeout=600) as client:
        answer = client.request(
            "REPORT", url, content=sync_collection_body(None, False), headers=HEADERS
        )
        hrefs = [
            m.href
            for m in read_multistatus(answer.content)
            if isinstance(m, Member) and not m.href.endswith("/")
        ]
        requests, objects = 1, 0
        for first in range(0, len(hrefs), size):
            body = multiget_body(urlsplit(h).path for h in hrefs[first : first + size])
            answer = client.request("REPORT", url, content=body, headers=HEADERS)
            requests += 1
            objects += sum(
                1
                for m in read_multistatus(answer.content)
                if isinstance(m, Member) and m.data is not None
            )
    seconds = time.perf_counter() - began
    return {"requests": requests, "seconds": round(seconds, 2), "objects": objects}


def import_one_way(
    backend: str, tmp: Path, url: str, auth: tuple[str, str], size: int | None, events: int
) -> dict[str, Any]:
    """Time caljournal's first import fetching ``size`` objects a chunk (None: one answer)."""
    chunk = inbound_chunks.BATCH
    if size is not None:
        inbound_chunks.BATCH = size or (events + 1) // 2
    try:
        with bench_import.journal(backend, tmp) as container:
            name = f"split{uuid.uuid4().hex[:6]}"
            container.accounts.open_account(name, bench_import.OPERATOR)
            account_id = container.accounts.find_account(name).id
            container.links.link(account_id, url, Credentials(*auth), bench_import.OPERATOR)
            stored: CalendarLink = container.journal.repository.get(CalendarLink.id_for(account_id))
            storage = CalDAVStorage(
                container.links.access(stored),
                url,
                get_profile(stored.provider),
                full_timeout=1800,
            )
            if size is not None:
                storage.use_fetch_mode(FetchMode(False, inbound_chunks.BATCH))
            poller = Poller(
                container.journal,
                storage,
                container.sync_state,
                str(account_id),
                container.links.get(account_id),
                lambda: Cause(Origin.CALDAV, "bench", f"poll-{uuid.uuid4()}"),
                pool=container.cpu_pool,
            )
            began = time.perf_counter()
            report = poller.poll()
            seconds = time.perf_counter() - began
            storage.close()
    finally:
        inbound_chunks.BATCH = chunk
    imported = report.counts.get("import", 0)
    assert imported == events, f"imported {imported} of {events}: {report}"
    return {"requests": report.requests, "seconds": round(seconds, 2)}


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Run the rounds; return every figure by way."""
    # Multigets of half the calendar: above the ceiling every reader keeps otherwise.
    most = max(fetch_mode.MULTIGET_MOST, (args.events + 1) // 2)
    fetch_mode.MULTIGET_MOST = calendar_reader.MULTIGET_MOST = most
    backends = args.backends.split(",")
    results: dict[str, Any] = {"events": args.events, "ways": {}}
    with bench_import.radicale_calendar(tmp, args.events) as (url, auth):
        bench_import.cheapest_fetch(url, auth)  # Radicale builds its cache of the calendar
        for _ in range(args.rounds):
            for name, size in WAYS:
                figures = results["ways"].setdefault(name, {"fetch alone": []})
                figures["fetch alone"].append(fetch_alone(url, auth, size, args.events))
                for backend in backends:
                    figures.setdefault(backend, []).append(
                        import_one_way(backend, tmp, url, auth, size, args.events)
                    )
    return results


def show(results: dict[str, Any], backends: list[str]) -> None:
    """Print seconds per round, and each import against its own fetch and the one answer's."""
    table = Table(title=f"first import of {results['events']} events from Radicale, by way")
    for column in ("way", "what", "requests", "seconds per round", "× its fetch", "× one answer"):
        table.add_column(column)
    one = results["ways"][WAYS[0][0]]["fetch alone"]
    for name, figures in results["ways"].items():
        fetches = figures["fetch alone"]
        for what in ("fetch alone", *backends):
            runs = figures[what]
            table.add_row(
                name,
                what,
                str(runs[0]["requests"]),
                " / ".join(str(r["seconds"]) for r in runs),
                _ratios(runs, fetches) if what != "fetch alone" else "",
                _ratios(runs, one),
            )
    Console().print(table)


def _ratios(runs: list[dict[str, Any]], bases: list[dict[str, Any]]) -> str:
    """Return each round's seconds over the same round's base, as ``1.23× / 1.31×``."""
    return " / ".join(
        f"{r['seconds'] / b['seconds']:.2f}×" for r, b in zip(runs, bases, strict=True)
    )


def main() -> None:
    """Parse the arguments, run, print and write the results."""
    parser = argparse.ArgumentParser(description="one answer against a fetch in parts")
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--out", default="bench-results/split_fetch.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        results = run(args, Path(tmp_name))
    show(results, args.backends.split(","))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    Console(stderr=True).print(f"wrote {out}")


if __name__ == "__main__":
    main()
