"""Loading the next chunk while the poll records the current one: a poll of many changed objects.

The calendar answers from memory behind a simulated round trip: each multiget
takes ``--latency`` seconds plus ``--per-object`` seconds per object asked
for (a remote server's network and work), and sends no data with its delta,
so every object is loaded by multiget. The same poll runs twice per round on a
fresh SQLite journal: with caljournal's loads one chunk ahead, and with the
loads one after another between the chunks (the baseline, the poller's
``_loaded_chunks`` replaced by a sequential loop in this process). Rounds
alternate the order. It prints a table and writes JSON.

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

from caljournal.adapters.memory_storage import MemoryStorage  # noqa: E402
from caljournal.adapters.storage import Loaded  # noqa: E402
from caljournal.domain.cause import Cause, Origin  # noqa: E402
from caljournal.projections import inbound  # noqa: E402
from caljournal.projections.inbound import Poller  # noqa: E402
from caljournal.scripts.bench_import import MEMORY_URL, events, journal  # noqa: E402

AHEAD = Poller._loaded_chunks  # noqa: SLF001 - the production path, restored after each baseline


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
    self: Poller, wanted: list[str], inline: dict[str, bytes]
) -> Iterator[tuple[list[str], Loaded | None]]:
    """Yield the chunks with their loads made only when each chunk is taken (the baseline)."""
    for start in range(0, len(wanted), inbound.BATCH):
        chunk = wanted[start : start + inbound.BATCH]
        rest = [h for h in chunk if h not in inline]
        yield chunk, self.storage.load(rest) if rest else None


def poll_seconds(mode: str, args: argparse.Namespace) -> float:
    """Return how long one first poll of ``args.objects`` objects took in ``mode``."""
    Poller._loaded_chunks = AHEAD if mode == "ahead" else one_after_another  # type: ignore[method-assign]  # noqa: SLF001
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
            )
            began = time.perf_counter()
            report = poller.poll()
            seconds = time.perf_counter() - began
    finally:
        Poller._loaded_chunks = AHEAD  # type: ignore[method-assign]  # noqa: SLF001
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
    runs: dict[str, list[float]] = {"one after another": [], "ahead": []}
    for round_number in range(args.rounds):
        order = ["one after another", "ahead"]
        for mode in order if round_number % 2 == 0 else order[::-1]:
            runs[mode].append(poll_seconds("ahead" if mode == "ahead" else "baseline", args))
    medians = {mode: statistics.median(seconds) for mode, seconds in runs.items()}
    table = Table(
        title=f"first poll of {args.objects} objects, each chunk of {inbound.BATCH} loaded in "
        f"{args.latency * 1000:.0f} ms + {args.per_object * 1e6:.0f} µs per object (SQLite)"
    )
    for column in ("loads", "seconds per round", "median s", "× one after another"):
        table.add_column(column)
    for mode, seconds in runs.items():
        table.add_row(
            mode,
            " / ".join(f"{s:.2f}" for s in seconds),
            f"{medians[mode]:.2f}",
            f"{medians[mode] / medians['one after another']:.2f}",
        )
    Console().print(table)
    results: dict[str, Any] = {"arguments": vars(args), "seconds": runs, "medians": medians}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    Console(stderr=True).print(f"wrote {out}")


if __name__ == "__main__":
    main()
