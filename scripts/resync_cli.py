"""``caljournal backfill`` and ``caljournal replay``: runs under the account's lease.

When a worker serves the account, the run is handed to it as a request and
this command waits for it, showing its progress; otherwise the command takes
the account's lease and runs it in its own process (a worker started meanwhile
leaves the account alone until the lease is given up). A dry run writes
nothing and needs no lease: it always runs here. Confirmation prompts stay
here too: a replay handed to a worker carries how many deletions were agreed
to, and refuses to delete more.
"""

from __future__ import annotations

import os
import socket
import sys
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

import typer

from caljournal.scripts.common import container, err, operator_cause, out, table

if TYPE_CHECKING:
    from caljournal.bootstrap import Container
    from caljournal.domain.cause import Cause
    from caljournal.projections.resync import Summary

Progress = Callable[[str, int, int], None]


def _progress_bar() -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        console=err,
    )


def run_with_progress(call: Callable[[Progress], Any]) -> Any:
    """Return ``call(progress)``, showing what it reports as progress bars (one a phase)."""
    bar = _progress_bar()
    tasks: dict[str, Any] = {}

    def progress(phase: str, done: int, total: int) -> None:
        if not tasks:
            # Shown from the first report on: a run refused before it starts
            # leaves no empty bar (a blank line) above its error.
            bar.start()
        if phase not in tasks:
            tasks[phase] = bar.add_task(phase, total=total or None, rate="")
        speed = bar.tasks[tasks[phase]].speed
        rate = f"{speed:.0f}/s" if speed else ""
        bar.update(tasks[phase], completed=done, total=total or None, rate=rate)

    try:
        return call(progress)
    finally:
        if tasks:
            bar.stop()


def print_summary(kind: str, summary: Summary) -> None:
    """Print what a run did (or, dry, would do)."""
    data = summary.as_dict()
    rate = (
        f"{(data['created'] + data['updated'] + data['deleted']) / data['seconds']:.1f}/s"
        if data["seconds"]
        else "-"
    )
    rows = [
        ["created", data["created"]],
        ["already present", data["already_present"]],
        ["updated", data["updated"]],
        ["deleted", data["deleted"]],
        ["failed", len(data["failed"])],
        ["foreign objects left alone", data["foreign_left_alone"]],
        ["seconds", data["seconds"]],
        ["writes per second", rate],
    ]
    table(f"{kind}{' (dry run: nothing written)' if data['dry_run'] else ''}", ["", "count"], rows)
    for line in data["sample"]:
        out.print(f"  would {line}" if data["dry_run"] else f"  {line}", highlight=False)
    for failure in data["failed"]:
        err.print(f"  failed {failure['appointment_id']}: {failure['reason']}", highlight=False)
    if data["stopped"]:
        err.print(
            f"[red]error:[/red] the {kind} stopped, the calendar server kept failing: "
            f"{data['stopped']}; run it again to finish",
            highlight=False,
        )


def _owner() -> str:
    return f"cli:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def run_resync(
    built: Container,
    account_id: UUID,
    kind: str,
    options: dict[str, Any],
    cause: Cause,
    progress: Progress | None = None,
    confirm: Callable[[Summary], bool] | None = None,
    hand_off: Callable[[], dict[str, Any]] | None = None,
) -> Summary:
    """Run a backfill or replay under the account's lease; return what it did.

    Handed to the worker serving the account (``hand_off`` may add options,
    e.g. the deletions agreed to) or, with none, run here under a lease taken
    for the run.
    """
    resyncs = built.resyncs
    owner = _owner()
    worker = resyncs.serving_worker(account_id)
    if worker is None:
        return resyncs.run_here(account_id, kind, options, cause, owner, progress, confirm)
    extra = hand_off() if hand_off is not None else {}
    request = resyncs.request(account_id, kind, {**options, **extra}, cause)
    err.print(
        f"{kind} handed to worker {worker}, which serves the account (request "
        f"{request['request_id']}); waiting for it (Ctrl-C stops waiting, not the {kind})",
        highlight=False,
    )
    return resyncs.wait(request["request_id"], owner, progress, confirm)


def backfill(
    account: Annotated[str, typer.Option("--account", help="the account's name")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="only show what would be written")
    ] = False,
    concurrency: Annotated[int, typer.Option(min=1, max=16, help="parallel requests")] = 1,
    rate: Annotated[
        float | None, typer.Option(min=0.1, help="at most this many requests per second")
    ] = None,
) -> None:
    """Push every live appointment that is not yet on the linked calendar."""
    with container() as built:
        account_id = built.accounts.find_account(account).id
        cause = operator_cause()
        if dry_run:
            summary = run_with_progress(
                lambda progress: built.sync.backfill(
                    account_id, cause, dry_run=True, concurrency=concurrency, progress=progress
                )
            )
        else:
            options = {"concurrency": concurrency, "rate": rate}
            summary = run_with_progress(
                lambda progress: run_resync(built, account_id, "backfill", options, cause, progress)
            )
    print_summary("backfill", summary)
    if summary.failed or summary.stopped:
        raise typer.Exit(1)


def replay(
    account: Annotated[str, typer.Option("--account", help="the account's name")],
    to_calendar: Annotated[
        str | None,
        typer.Option(metavar="URL", help="resync into this calendar and switch the link to it"),
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option(
            metavar="TIME", help="rebuild the state at this moment (ISO time with offset)"
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only show the differences")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="delete without asking")] = False,
    allow_mass_delete: Annotated[
        bool,
        typer.Option(
            "--allow-mass-delete",
            help="let the run delete more than half of the account's objects (and at least 10)",
        ),
    ] = False,
    concurrency: Annotated[int, typer.Option(min=1, max=16, help="parallel requests")] = 1,
    rate: Annotated[
        float | None, typer.Option(min=0.1, help="at most this many requests per second")
    ] = None,
) -> None:
    """Make the account's calendar equal to the journal (creates, updates, deletes own objects)."""
    from caljournal.links import LinkFailedError
    from caljournal.sync import MassDeleteRefusedError

    moment = None
    if as_of is not None:
        try:
            moment = datetime.fromisoformat(as_of)
        except ValueError:
            moment = None
        if moment is None or moment.tzinfo is None:
            err.print(f"[red]error:[/red] --as-of {as_of!r} is not an ISO time with offset")
            raise typer.Exit(1)

    def confirm(preview: Summary) -> bool:
        if yes:
            return True
        if not sys.stdin.isatty():
            err.print("[red]error:[/red] the replay deletes objects; add --yes to confirm")
            return False
        print_summary("replay would", preview)
        return typer.confirm(f"delete {preview.deleted} objects from the calendar?")

    with container() as built:
        account_id = built.accounts.find_account(account).id
        cause = operator_cause()

        def agreed_deletions() -> dict[str, Any]:
            """Preview here what a worker's run would delete, and ask (as a run here does)."""
            if yes:
                return {"delete_limit": None}
            preview = built.sync.replay(
                account_id, cause, to_calendar=to_calendar, as_of=moment, dry_run=True
            )
            if preview.deleted and not confirm(preview):
                raise LinkFailedError(
                    "the replay deletes objects and was not confirmed; nothing written"
                )
            return {"delete_limit": preview.deleted}

        def call(progress: Progress) -> Summary:
            if dry_run:
                return built.sync.replay(
                    account_id,
                    cause,
                    to_calendar=to_calendar,
                    as_of=moment,
                    dry_run=True,
                    concurrency=concurrency,
                    progress=progress,
                )
            options = {
                "to_calendar": to_calendar,
                "as_of": moment.isoformat() if moment else None,
                "allow_mass_delete": allow_mass_delete,
                "concurrency": concurrency,
                "rate": rate,
            }
            return run_resync(
                built, account_id, "replay", options, cause, progress, confirm, agreed_deletions
            )

        try:
            summary = run_with_progress(call)
        except MassDeleteRefusedError as exc:
            err.print(f"[red]error:[/red] {exc}", highlight=False)
            raise typer.Exit(1) from None
    print_summary("replay", summary)
    if summary.failed or summary.stopped:
        raise typer.Exit(1)
