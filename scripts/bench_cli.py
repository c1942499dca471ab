"""Benchmark: how fast the ``caljournal`` command starts, against a bare interpreter.

Run from the repository root:

    python scripts/bench_cli.py [--runs 5] [--target 0.4] [--source DIR]

Sets up a temporary SQLite journal with the real command line: ``account
create acme``, then ``link add`` to a calendar of a Radicale server started for
the purpose (stopped again before anything is timed: none of the commands below
talks to it). Then times ``--runs`` runs (median, min, max of the wall time,
and the median CPU time of the process) of:

* the bare interpreter, ``python -c pass`` (the floor every command pays);
* ``caljournal --help``, ``caljournal status acme`` (one account's sync
  status), ``caljournal status`` (every account) and ``caljournal account
  list``;

each started two ways: the virtual environment's ``caljournal`` script (what
operators type; "script" in the table) and ``python -m caljournal``. One untimed run of each command
comes first, so Python's bytecode cache is written as on any installed system
(``PYTHONDONTWRITEBYTECODE`` is cleared for the commands).

``--source DIR`` runs the commands on another checkout of caljournal (put first
on ``PYTHONPATH``), e.g. a worktree of an older commit, for before/after
figures.

Then where ``status ACCOUNT`` spends its time: the same steps in a child
process, each timed on its own (typer and rich, the command modules, building
the commands, the pydantic typer loads to convert arguments, the settings,
eventsourcing, the domain,
the rest of the journal, the status modules, opening the journal, the reads),
the least of ``--runs`` runs for each.

Prints tables with each command's ratio to the bare interpreter and whether
its median meets ``--target`` seconds, and the steps; writes
``bench-results/cli.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Nothing else at the top: the child that times the steps of ``status ACCOUNT``
# runs this file, and anything imported here would look free in its steps.
ROOT = Path(__file__).resolve().parents[1]
ACCOUNT = "acme"
COMMANDS: list[tuple[str, list[str]]] = [
    ("--help", ["--help"]),
    ("status ACCOUNT", ["status", ACCOUNT]),
    ("status", ["status"]),
    ("account list", ["account", "list"]),
]


def environment(tmp: Path, source: Path | None) -> dict[str, str]:
    """Return the commands' environment: the temporary journal, and nothing of the caller's."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CALJOURNAL_")
        and k not in ("PROMETHEUS_MULTIPROC_DIR", "PYTHONDONTWRITEBYTECODE", "PYTHONPATH")
    }
    env["CALJOURNAL_DATABASE_URL"] = f"sqlite:///{tmp / 'caljournal.sqlite'}"
    env["CALJOURNAL_SECRET_KEY_FILE"] = str(tmp / "caljournal.key")
    env["CALJOURNAL_ALLOW_PRIVATE_ADDRESSES"] = "true"
    env["XDG_DATA_HOME"] = str(tmp / "data-home")
    env["COLUMNS"] = "120"
    if source is not None:
        env["PYTHONPATH"] = str(source)
    return env


def setup(tmp: Path, env: dict[str, str]) -> str:
    """Open the account and link it to a Radicale calendar with the CLI; return the calendar."""
    sys.path.insert(0, str(ROOT))
    from tests.support.radicale import RadicaleProcess

    def cli(*args: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "caljournal", *args],
            env=env,
            cwd=tmp,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            raise SystemExit(f"caljournal {' '.join(args)} failed:\n{done.stderr}")
        return done.stdout

    cli("account", "create", ACCOUNT)
    with RadicaleProcess(tmp / "radicale", log_level="warning") as radicale:
        radicale.make_calendar("alice", "secret", "Work", cal_id="work")
        calendar = f"{radicale.url}alice/work/"
        added = json.loads(
            cli(
                "link",
                "add",
                ACCOUNT,
                calendar,
                "--username",
                "alice",
                "--password-stdin",
                "--no-backfill",
                "--json",
                stdin="secret\n",
            )
        )
        if added["link"]["status"] != "active":
            cli("link", "choose", ACCOUNT, calendar)
    report = json.loads(cli("status", ACCOUNT, "--json"))
    if report["link_status"] != "active":
        raise SystemExit(f"the link of {ACCOUNT} is {report['link_status']}, not active")
    return calendar


def time_runs(argv: list[str], env: dict[str, str], cwd: Path, runs: int) -> dict[str, Any]:
    """Run ``argv`` once untimed, then ``runs`` times; return wall and CPU seconds."""
    walls: list[float] = []
    cpus: list[float] = []
    for attempt in range(runs + 1):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run(
            argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120
        )
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed:\n{done.stderr.decode()}")
        if attempt == 0:
            continue  # writes the bytecode cache; not timed
        walls.append(wall)
        cpus.append(
            (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        )
    return {
        "median_s": round(statistics.median(walls), 4),
        "min_s": round(min(walls), 4),
        "max_s": round(max(walls), 4),
        "cpu_median_s": round(statistics.median(cpus), 4),
        "runs": runs,
    }


def child_phases() -> None:
    """Time the steps of ``status ACCOUNT`` one after another; print them as JSON (ms)."""
    marks = [("", time.perf_counter())]

    def mark(name: str) -> None:
        marks.append((name, time.perf_counter()))

    import rich.console  # noqa: F401
    import typer

    mark("typer and rich")
    from caljournal.scripts.cli import app

    mark("command modules")
    typer.main.get_command(app)
    mark("building the commands")
    import typer._adapters  # noqa: F401

    mark("pydantic, loaded by typer to convert arguments")
    import caljournal.settings  # noqa: F401

    mark("settings (pydantic-settings)")
    import eventsourcing.application
    import eventsourcing.sqlite  # noqa: F401

    mark("eventsourcing")
    import caljournal.adapters.journal  # noqa: F401

    mark("rest of the journal modules")
    import caljournal.adapters.syncstate_sql
    import caljournal.status  # noqa: F401

    mark("status modules")
    from caljournal.bootstrap import bootstrap

    built = bootstrap()
    mark("reading the settings, opening the journal")
    # Read from the query tables, as the command does: no event class is built.
    account_id = caljournal.status.find_account_id(built.journal, ACCOUNT)
    caljournal.status.account_report(built.journal, built.sync_state, account_id)
    mark("reading the account and its report")
    built.close()
    steps = {
        name: (t - before) * 1000
        for (name, t), (_, before) in zip(marks[1:], marks[:-1], strict=True)
    }
    print(json.dumps(steps))


def phases(env: dict[str, str], cwd: Path, runs: int) -> dict[str, float]:
    """Return the least time (ms) of each step of ``status ACCOUNT`` over ``runs`` runs."""
    least: dict[str, float] = {}
    for _ in range(runs + 1):  # the first writes the bytecode cache of this script
        done = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--child-phases"],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise SystemExit(f"timing the steps of status failed:\n{done.stderr}")
        for name, ms in json.loads(done.stdout.strip().splitlines()[-1]).items():
            least[name] = round(min(ms, least.get(name, ms)), 1)
    return least


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Set the journal up, time every command both ways, and return the figures."""
    source = Path(args.source).resolve() if args.source else None
    env = environment(tmp, source)
    calendar = setup(tmp, env)
    script = Path(sys.executable).with_name("caljournal")
    load_before = os.getloadavg()
    results: list[dict[str, Any]] = []
    bare = time_runs([sys.executable, "-c", "pass"], env, tmp, args.runs)
    results.append({"command": "python -c pass", "entry": "", **bare})
    for label, cli_args in COMMANDS:
        for entry, argv in (
            ("script", [str(script), *cli_args]),
            ("python -m", [sys.executable, "-m", "caljournal", *cli_args]),
        ):
            figures = time_runs(argv, env, tmp, args.runs)
            figures["ratio_to_bare"] = round(figures["median_s"] / bare["median_s"], 1)
            figures["meets_target"] = figures["median_s"] <= args.target
            results.append({"command": f"caljournal {label}", "entry": entry, **figures})
    # The steps are this checkout's: another one (--source) may have other modules.
    steps = phases(env, tmp, args.runs) if source is None else {}
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "target_s": args.target,
        "source": str(source or ROOT),
        "journal": "SQLite, one account linked to a Radicale calendar (server stopped)",
        "calendar": calendar,
        "bytecode": "cached (one untimed run of each command first)",
        "results": results,
        "status_account_steps_ms": steps,
    }


def show(results: dict[str, Any]) -> None:
    """Print the results as tables."""
    from rich.console import Console
    from rich.table import Table

    load = ", ".join(str(x) for x in results["load_average_before"])
    table = Table(
        title=f"CLI start-up, median of {results['results'][0]['runs']} runs "
        f"(target {results['target_s']} s; load average before: {load})"
    )
    for column in ("command", "run as", "median s", "min s", "max s", "CPU s", "× bare", ""):
        table.add_column(column)
    for r in results["results"]:
        verdict = ""
        if "meets_target" in r:
            verdict = "[green]ok[/green]" if r["meets_target"] else "[red]over[/red]"
        table.add_row(
            r["command"],
            r["entry"],
            f"{r['median_s']:.3f}",
            f"{r['min_s']:.3f}",
            f"{r['max_s']:.3f}",
            f"{r['cpu_median_s']:.3f}",
            f"{r['ratio_to_bare']:.1f}" if "ratio_to_bare" in r else "1.0",
            verdict,
        )
    Console().print(table)
    if not results["status_account_steps_ms"]:
        return
    steps = Table(title="where status ACCOUNT spends its time (least of the runs)")
    steps.add_column("step")
    steps.add_column("ms", justify="right")
    for name, ms in results["status_account_steps_ms"].items():
        steps.add_row(name, f"{ms:.0f}")
    steps.add_row("sum", f"{sum(results['status_account_steps_ms'].values()):.0f}")
    Console().print(steps)


def main() -> None:
    """Parse the arguments, run, print and write the results."""
    parser = argparse.ArgumentParser(description="start-up time of the caljournal command")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per command")
    parser.add_argument("--target", type=float, default=0.4, help="seconds a command may take")
    parser.add_argument("--source", help="a caljournal checkout to run instead of this one")
    parser.add_argument("--out", default="bench-results/cli.json")
    parser.add_argument("--child-phases", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_phases:
        child_phases()
        return
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.source and not (Path(args.source) / "caljournal" / "__init__.py").is_file():
        parser.error(f"--source {args.source!r} is not a caljournal checkout")
    with tempfile.TemporaryDirectory() as tmp_name:
        results = run(args, Path(tmp_name))
    show(results)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
