"""Benchmark: audit chain verification speed, and what the chain costs API writes.

``verify``: for each database (SQLite file, PostgreSQL) it books N appointments
of one account through the journal (in batches, so building is quick; each
booking is one chained event), then times, in interleaved rounds, reading the
journal's notifications alone (the baseline: what any full read costs) and
``audit_verify.verify`` over the account's chain. Rates are events/s; the
median round is shown.

``writes``: it runs ``scripts/bench_api.py`` (one round per run) for this
checkout and for the commit before the chain was written (``--before``, checked
out with ``git worktree add`` under the temp directory), alternating the two
``--write-rounds`` times, and compares their API/raw ratios: the raw loop is
the library's plain ``Application`` in both, so a change of the ratio is what
the chain (and anything else between the commits) costs the API. Loss is
``1 - ratio_after / ratio_before`` of the medians.

Usage: python -m caljournal.scripts.bench_audit_verify [--n 100000] [--rounds 3]
    [--write-rounds 3] [--write-n 300] [--parts verify,writes] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from rich.console import Console
from rich.table import Table

from caljournal.adapters.audit_verify import verify
from caljournal.bootstrap import Container, bootstrap
from caljournal.domain.appointment import Appointment
from caljournal.domain.cause import Cause, Origin
from caljournal.settings import load_settings

PG_URL = os.environ.get("CALJOURNAL_BENCH_PG_URL", "postgresql://root@127.0.0.1:5432/test")
CAUSE = Cause(Origin.API, "bench", "bench")
BERLIN = ZoneInfo("Europe/Berlin")
BATCH = 1000
API_MODES = ("API in-process, 1 client", "API socket, 1 client", "API socket, 8 clients")
# Loaded first in the benchmark's child processes: it drops this checkout's
# editable-install finder, so that PYTHONPATH alone decides which code runs.
SHIM = (
    'import sys\nsys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in repr(f)]\n'
)
err = Console(stderr=True)


@contextmanager
def _database(backend: str, tmp: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp / f'verify-{uuid.uuid4().hex[:6]}.sqlite'}"
        return
    schema = f"bench_verify_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            yield f"{PG_URL}?schema={schema}"
        finally:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


def _build(container: Container, account: uuid.UUID, n: int) -> float:
    """Book ``n`` appointments of one account, BATCH per save; return the seconds taken."""
    began = time.perf_counter()
    first = datetime(2027, 1, 4, 8, tzinfo=BERLIN)
    for offset in range(0, n, BATCH):
        batch = [
            Appointment.book(
                appointment_id=uuid.uuid4(),
                account_id=account,
                title=f"bench {i}",
                start=first + timedelta(minutes=30 * i),
                end=first + timedelta(minutes=30 * i + 30),
                timezone="Europe/Berlin",
                cause=CAUSE,
            )
            for i in range(offset, min(n, offset + BATCH))
        ]
        container.journal.save(*batch)
    return time.perf_counter() - began


def _read_all(container: Container) -> int:
    """Read every notification of the journal, a page at a time; return how many."""
    recorder = container.journal.journal_recorder
    count, start = 0, 1
    while True:
        page = recorder.select_notifications(start=start, limit=5000)
        count += len(page)
        if not page:
            return count
        start = page[-1].id + 1


def _timed(call: Callable[[], int]) -> tuple[int, float]:
    began = time.perf_counter()
    count = call()
    return count, time.perf_counter() - began


def bench_verify(backend: str, n: int, rounds: int, tmp: Path) -> dict[str, Any]:
    """Build a chain of ``n`` events and time reading the journal vs verifying the chain."""
    with _database(backend, tmp) as url:
        container = bootstrap(load_settings(database_url=url, secret_key_file=tmp / "bench.key"))
        try:
            account = uuid.uuid4()
            build_seconds = _build(container, account, n)
            recorder = container.journal.journal_recorder
            reads, checks = [], []
            for _ in range(rounds):
                count, seconds = _timed(lambda: _read_all(container))
                reads.append(count / seconds)
                report = verify(recorder, str(account))
                if not report.ok or report.checked != n:
                    raise RuntimeError(f"the benchmark's chain did not verify: {report.problem}")
                checks.append(report.checked / report.seconds)
        finally:
            container.close()
    return {
        "backend": backend,
        "events": n,
        "build_s": round(build_seconds, 1),
        "read_per_s": round(statistics.median(reads)),
        "verify_per_s": round(statistics.median(checks)),
        "rounds_read_per_s": [round(r) for r in reads],
        "rounds_verify_per_s": [round(c) for c in checks],
    }


def _checkout(commit: str, tmp: Path) -> Path:
    """Return a checkout of ``commit`` (a detached worktree of this repository)."""
    repo = Path(__file__).resolve().parent.parent
    target = tmp / f"caljournal-{commit}"
    subprocess.run(
        ["git", "-C", str(repo), "worktree", "add", "--detach", "--quiet", str(target), commit],
        check=True,
    )
    return target


def _bench_api(root: Path, shim: Path, n: int, backends: str, out: Path) -> list[dict[str, Any]]:
    """Run one round of ``bench_api`` with the code of ``root``; return its result rows."""
    env = {**os.environ, "PYTHONPATH": f"{shim}{os.pathsep}{root}"}
    command = [sys.executable, "-m", "caljournal.scripts.bench_api", "--rounds", "1"]
    command += ["--n", str(n), "--backends", backends, "--out", str(out)]
    subprocess.run(command, env=env, check=True, cwd=root, stdout=subprocess.DEVNULL)
    rows: list[dict[str, Any]] = json.loads(out.read_text())["results"]
    return rows


def bench_writes(
    before: str, rounds: int, n: int, backends: str, tmp: Path
) -> list[dict[str, Any]]:
    """Compare bench_api's API/raw ratios of ``before`` and of this checkout, alternating."""
    shim = tmp / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(SHIM)
    roots = {"before": _checkout(before, tmp), "after": Path(__file__).resolve().parent.parent}
    ratios: dict[tuple[str, str, str], list[float]] = {}
    try:
        for r in range(rounds):
            for label, root in roots.items():
                err.print(f"write round {r + 1}/{rounds}: {label}")
                for row in _bench_api(root, shim, n, backends, tmp / f"{label}-{r}.json"):
                    if row["mode"] in API_MODES:
                        key = (row["backend"], row["mode"], label)
                        ratios.setdefault(key, []).append(row["ratio"])
    finally:
        subprocess.run(
            [
                "git",
                "-C",
                str(roots["after"]),
                "worktree",
                "remove",
                "--force",
                str(roots["before"]),
            ],
            check=False,
        )
    rows = []
    for backend in backends.split(","):
        for mode in API_MODES:
            was = ratios[(backend, mode, "before")]
            now = ratios[(backend, mode, "after")]
            was_m, now_m = statistics.median(was), statistics.median(now)
            rows.append(
                {
                    "backend": backend,
                    "mode": mode,
                    "ratio_before": round(was_m, 3),
                    "ratio_after": round(now_m, 3),
                    "loss": round(1 - now_m / was_m, 3),
                    "rounds_before": was,
                    "rounds_after": now,
                }
            )
    return rows


# One child run of the focused comparison: bench_api's raw loop and in-process
# API, alternately, with the code on PYTHONPATH; prints the API/raw ratios.
ASGI_CHILD = """
import json, sys, tempfile
from pathlib import Path
import psycopg
from caljournal.scripts import bench_api as b
from caljournal.bootstrap import bootstrap
from caljournal.settings import load_settings
backend, n, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
cleanups, ratios = [], []
with tempfile.TemporaryDirectory() as tmp:
    if backend == "sqlite":
        urls = {k: f"sqlite:///{Path(tmp) / (k + '.sqlite')}" for k in ("raw", "api")}
    else:
        admin = psycopg.connect(b.PG_URL, autocommit=True)
        urls = {}
        for k in ("raw", "api"):
            urls[k], cleanup = b._pg_schema(admin, k)
            cleanups.append(cleanup)
    container = bootstrap(load_settings(database_url=urls["api"], secret_key_file=Path(tmp) / "k"))
    try:
        for _ in range(rounds):
            raw = b.bench_raw(urls["raw"], n)["writes_per_s"]
            api = b.bench_asgi(container, n)["writes_per_s"]
            ratios.append(api / raw)
    finally:
        container.close()
        for cleanup in cleanups:
            cleanup()
print(json.dumps(ratios))
"""


def bench_writes_asgi(
    before: str, rounds: int, n: int, backends: str, tmp: Path
) -> list[dict[str, Any]]:
    """Compare the in-process API/raw ratio of ``before`` and this checkout, alternating runs.

    Each run measures three (raw loop, API) pairs back to back; runs alternate
    between the two checkouts ``rounds`` times.
    """
    shim = tmp / "asgi-shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(SHIM)
    roots = {"before": _checkout(before, tmp), "after": Path(__file__).resolve().parent.parent}
    ratios: dict[tuple[str, str], list[float]] = {}
    try:
        for r in range(rounds):
            for backend in backends.split(","):
                for label, root in roots.items():
                    err.print(f"in-process round {r + 1}/{rounds}: {backend} {label}")
                    env = {**os.environ, "PYTHONPATH": f"{shim}{os.pathsep}{root}"}
                    done = subprocess.run(
                        [sys.executable, "-c", ASGI_CHILD, backend, str(n), "3"],
                        env=env,
                        cwd=root,
                        check=True,
                        capture_output=True,
                        text=True,
                    )
                    found = json.loads(done.stdout.strip().splitlines()[-1])
                    ratios.setdefault((backend, label), []).extend(found)
    finally:
        subprocess.run(
            [
                "git",
                "-C",
                str(roots["after"]),
                "worktree",
                "remove",
                "--force",
                str(roots["before"]),
            ],
            check=False,
        )
    rows = []
    for backend in backends.split(","):
        was = statistics.median(ratios[(backend, "before")])
        now = statistics.median(ratios[(backend, "after")])
        rows.append(
            {
                "backend": backend,
                "mode": "API in-process, 1 client (focused)",
                "ratio_before": round(was, 3),
                "ratio_after": round(now, 3),
                "loss": round(1 - now / was, 3),
                "rounds_before": [round(x, 3) for x in ratios[(backend, "before")]],
                "rounds_after": [round(x, 3) for x in ratios[(backend, "after")]],
            }
        )
    return rows


def main() -> None:
    """Run the benchmark and print/write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="events in the verified chain")
    parser.add_argument("--rounds", type=int, default=3, help="verify rounds")
    parser.add_argument("--write-rounds", type=int, default=3, help="bench_api runs per commit")
    parser.add_argument("--write-n", type=int, default=300, help="bench_api --n")
    parser.add_argument("--before", default="7e92f77", help="the commit before the chain")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument(
        "--parts", default="verify,writes", help="verify, writes (all bench_api modes), asgi"
    )
    parser.add_argument("--out", default="bench-results/audit-verify.json")
    args = parser.parse_args()
    parts = set(args.parts.split(","))

    result: dict[str, Any] = {"n": args.n, "write_n": args.write_n, "before": args.before}
    with tempfile.TemporaryDirectory() as tmp:
        if "verify" in parts:
            result["verify"] = [
                bench_verify(b, args.n, args.rounds, Path(tmp)) for b in args.backends.split(",")
            ]
        if "writes" in parts:
            result["writes"] = bench_writes(
                args.before, args.write_rounds, args.write_n, args.backends, Path(tmp)
            )

        if "asgi" in parts:
            result.setdefault("writes", []).extend(
                bench_writes_asgi(
                    args.before, args.write_rounds, args.write_n, args.backends, Path(tmp)
                )
            )

    console = Console()
    if "verify" in result:
        table = Table(title=f"audit verify, one account of {args.n:,} events (median round)")
        for column in ("backend", "read journal events/s", "verify events/s", "verify/read"):
            table.add_column(column)
        for v in result["verify"]:
            ratio = v["verify_per_s"] / v["read_per_s"]
            table.add_row(
                v["backend"], f"{v['read_per_s']:,}", f"{v['verify_per_s']:,}", f"{ratio:.2f}"
            )
        console.print(table)
    if "writes" in result:
        table = Table(title=f"API/raw write ratio, {args.before} vs this checkout (medians)")
        for column in ("backend", "mode", "before", "after", "loss"):
            table.add_column(column)
        for w in result["writes"]:
            table.add_row(
                w["backend"],
                w["mode"],
                f"{w['ratio_before']:.2f}",
                f"{w['ratio_after']:.2f}",
                f"{w['loss'] * 100:.1f} %",
            )
        console.print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    err.print(f"wrote {out}")


if __name__ == "__main__":
    main()
