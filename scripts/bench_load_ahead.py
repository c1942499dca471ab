"""Readying the next chunk while the poll records the current one: a poll of many changed objects.

The calendar answers from memory behind a simulated round trip: each multiget
takes ``--latency`` seconds plus ``--per-object`` seconds per object asked
for (a remote server's network and work), and sends no data with its delta,
so every object is loaded by multiget. The same poll runs three times per round
on a fresh SQLite journal: with each chunk loaded and parsed only when it is
taken (the baseline: ``fetch_chunks`` replaced by a sequential loop in this
process), with the loads one chunk ahead and the parse in the poll's thread
(the inline CPU pool), and with loads ahead and the parse in a helper process
(the production default on two or more CPUs). The process pool is started
before the timed rounds, as a running worker has it. Rounds rotate the order.
It prints a table and writes JSON.

    python scripts/bench_load_ahead.py --objects 2000 --latency 0.05 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from caljournal.adapters.cpu_pool import INLINE, CpuPool, ProcessPool  # noqa: E402
from caljournal.adapters.memory_storage import MemoryStorage  # noqa: E402
from caljournal.adapters.storage import CalendarStorage, Loaded  # noqa: E402
from caljournal.domain.cause import Cause, Origin  # noqa: E402
from caljournal.projections import inbound_decider  # noqa: E402
from caljournal.projections.inbound import Poller  # noqa: E402
from caljournal.projections.inbound_chunks import BATCH, Chunk, fetch_chunks  # noqa: E402
from caljournal.projections.inbound_parse import parse_object  # noqa: E402
from caljournal.scripts.bench_import import MEMORY_URL, events, journal  # noqa: E402

MODES = ("one after another", "loads ahead", "loads and parse ahead")


class Remote(MemoryStorage):
    """A calendar that answers each multiget after a round trip and some work per object."""

    def __init__(self, latency: float, per_object: float) -> None:
        super().__init__(MEMORY_URL, inline_data=False)
        self.latency = latency
        self.per_object = per_object

    def load(self, hrefs: Iterable[str]) -> Loaded:
        wanted = list(hrefs)
        time.sleep(self.latency + self.per_object * len(wanted))
        return super().load(wanted)


def one_after_another(
    storage: CalendarStorage,
    pool: CpuPool,
    wanted: list[str],
    inline: dict[str, bytes],
    etags: dict[str, str | None],
) -> Iterator[Chunk]:
    """Yield the chunks, each loaded and parsed only when it is taken (the baseline)."""
    for start in range(0, len(wanted), BATCH):
        part = wanted[start : start + BATCH]
        objects = {h: (inline[h], etags.get(h)) for h in part if h in inline}
        rest = [h for h in part if h not in inline]
        loaded = storage.load(rest) if rest else Loaded()
        objects.update(loaded.objects)
        parse = INLINE.submit(parse_object, [data for data, _ in objects.values()])
        yield Chunk(objects, parse, loaded.requests, loaded.missing)


def poll_seconds(mode: str, args: argparse.Namespace, helpers: ProcessPool) -> float:
    """Return how long one first poll of ``args.objects`` objects took in ``mode``."""
    inbound_decider.fetch_chunks = one_after_another if mode == MODES[0] else fetch_chunks
    try:
        with tempfile.TemporaryDirectory() as tmp, journal("sqlite", Path(tmp)) as container:
            storage = Remote(args.latency, args.per_object)
            for name, text in events(args.objects):
                storage.put(MEMORY_URL + name, text.encode())
            link = {"calendar_url": MEMORY_URL, "sync_tokens": True, "provider": "radicale"}
            poller = Poller(
                container.journal,
                storage,
                container.sync_state,
                str(uuid.uuid4()),
                link,
                lambda: Cause(Origin.CALDAV, "bench", f"poll-{uuid.uuid4()}"),
                pool=helpers if mode == MODES[2] else INLINE,
            )
            began = time.perf_counter()
            report = poller.poll()
            seconds = time.perf_counter() - began
    finally:
        inbound_decider.fetch_chunks = fetch_chunks
    imported = report.counts.get("import", 0)
    assert imported == args.objects, f"imported {imported} of {args.objects}: {report}"
    return seconds


def main() -> None:
    """Run the rounds, print the table and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per multiget")
    parser.add_argument(
        "--per-object", type=float, default=0.0002, help="seconds per object asked for"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="bench-results/load_ahead.json")
    args = parser.parse_args()
    runs: dict[str, list[float]] = {mode: [] for mode in MODES}
    helpers = ProcessPool(1)
    helpers.submit(parse_object, []).result()  # started, as in a running worker
    try:
        for round_number in range(args.rounds):
            shift = round_number % len(MODES)
            for mode in MODES[shift:] + MODES[:shift]:
                runs[mode].append(poll_seconds(mode, args, helpers))
    finally:
        helpers.close()
    medians = {mode: statistics.median(seconds) for mode, seconds in runs.items()}
    table = Table(
        title=f"first poll of {args.objects} objects, each chunk of {BATCH} loaded in "
        f"{args.latency * 1000:.0f} ms + {args.per_object * 1e6:.0f} µs per object (SQLite)"
    )
    for column in ("chunks", "seconds per round", "median s", "× one after another"):
        table.add_column(column)
    for mode, seconds in runs.items():
        table.add_row(
            mode,
            " / ".join(f"{s:.2f}" for s in seconds),
            f"{medians[mode]:.2f}",
            f"{medians[mode] / medians[MODES[0]]:.2f}",
        )
    Console().print(table)
    results: dict[str, Any] = {"arguments": vars(args), "seconds": runs, "medians": medians}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    Console(stderr=True).print(f"wrote {out}")


if __name__ == "__main__":
    main()
