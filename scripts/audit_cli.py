"""``caljournal audit``: an account's change log, as a table, JSON Lines or CSV.

Output streams: records are written as they are read from the journal, so an
account with millions of events is listed in constant memory. The CSV has a
header and one row per changed field (an event that changed no field gets one
row with an empty field); old and new values are text, lists and objects as
JSON, and text a spreadsheet would take for a formula starts with ``'``.
"""

from __future__ import annotations

import csv
import os
import sys
from collections.abc import Iterable, Iterator
from enum import StrEnum
from itertools import islice
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

import typer

from caljournal.errors import InvalidInputError
from caljournal.scripts.audit_verify_cli import head_command, verify_command
from caljournal.scripts.common import Commands, container, err, out

if TYPE_CHECKING:
    from caljournal.projections.audit import AuditRecord

audit_app = Commands(help="List an account's recorded changes; verify the audit chain.")

# Rows per rich table: the terminal view streams in blocks of this many.
_TABLE_BLOCK = 200


class Format(StrEnum):
    """How the change log is written."""

    TABLE = "table"
    JSON = "json"
    CSV = "csv"


@audit_app.callback(invoke_without_command=True)
def audit(
    ctx: typer.Context,
    account: Annotated[str | None, typer.Option(help="the account's name")] = None,
    appointment: Annotated[
        str | None, typer.Option(help="only this appointment's (or link's) changes (its id)")
    ] = None,
    since: Annotated[str | None, typer.Option(help="only changes at or after (ISO 8601)")] = None,
    until: Annotated[str | None, typer.Option(help="only changes at or before (ISO 8601)")] = None,
    origin: Annotated[
        str | None, typer.Option(help="only changes from api, caldav, backfill or operator")
    ] = None,
    actor: Annotated[str | None, typer.Option(help="only changes by this actor")] = None,
    type_: Annotated[
        str | None,
        typer.Option(
            "--type", metavar="TYPE", help="only this event type (e.g. Moved) or full topic"
        ),
    ] = None,
    after: Annotated[int, typer.Option(help="start after this journal position")] = 0,
    format_: Annotated[
        Format, typer.Option("--format", metavar="FORMAT", help="table, json (JSON Lines) or csv")
    ] = Format.TABLE,
) -> None:
    """List every recorded change of an account in journal order, with old → new values."""
    if ctx.invoked_subcommand is not None:
        return
    from caljournal.audit import AuditQuery, AuditService, parse_time

    if account is None:
        err.print("[red]error:[/red] name the account: --account ACCOUNT", highlight=False)
        raise typer.Exit(2)
    with container() as built:
        query = AuditQuery(
            account_id=built.accounts.find_account(account).id,
            appointment_id=_uuid(appointment, "appointment"),
            since=parse_time(since, "since"),
            until=parse_time(until, "until"),
            origin=origin,
            actor=actor,
            event_type=type_,
        )
        records = AuditService(built.journal).stream(query, after)
        try:
            if format_ is Format.JSON:
                write_json(records, sys.stdout)
            elif format_ is Format.CSV:
                write_csv(records, sys.stdout)
            else:
                write_tables(records)
        except BrokenPipeError:
            # The reader (e.g. ``head``) has stopped reading: stop quietly, as
            # Python's own advice has it, without a second error at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


# The chain's checks (scripts/audit_verify_cli.py).
audit_app.command("verify")(verify_command)
audit_app.command("head")(head_command)


def write_json(records: Iterable[AuditRecord], stream: Any) -> int:
    """Write records as JSON Lines; return how many."""
    from caljournal.audit import json_line

    count = 0
    for record in records:
        stream.write(json_line(record) + "\n")
        count += 1
    stream.flush()
    return count


def write_csv(records: Iterable[AuditRecord], stream: Any) -> int:
    """Write records as CSV with a header (see the module's docstring); return how many rows."""
    from caljournal.audit import CSV_HEADER, csv_rows

    writer = csv.writer(stream)
    writer.writerow(CSV_HEADER)
    count = 0
    for record in records:
        writer.writerows(csv_rows(record))
        count += len(record.changes) or 1
    stream.flush()
    return count


def write_tables(records: Iterator[AuditRecord]) -> None:
    """Print records as rich tables of a few hundred rows each."""
    from rich.table import Table
    from rich.text import Text

    shown = 0
    while block := list(islice(records, _TABLE_BLOCK)):
        table = Table(show_header=True)
        for column in ("position", "time", "change", "origin"):
            table.add_column(column, no_wrap=True)
        for column in ("actor", "correlation id", "changes (field: old → new)"):
            table.add_column(column, overflow="fold")
        for record in block:
            cells = (
                str(record.position),
                record.time.isoformat(timespec="seconds") if record.time else "",
                f"{record.aggregate_type}.{record.event_type}\n{record.aggregate_id}",
                record.origin,
                record.actor,
                record.correlation_id,
                _changes_text(record),
            )
            # Text, not markup: journal values such as "[erased]" are shown as they are.
            table.add_row(*(Text(cell) for cell in cells))
        out.print(table)
        shown += len(block)
    if not shown:
        err.print("no recorded changes match", highlight=False)


def _changes_text(record: AuditRecord) -> str:
    if record.missing:
        return "(the journal no longer holds this event)"
    return "\n".join(f"{name}: {_text(old)} → {_text(new)}" for name, old, new in record.changes)


def _text(value: Any) -> str:
    return "∅" if value is None else str(value)


def _uuid(value: str | None, name: str) -> UUID | None:
    if value is None:
        return None
    try:
        return UUID(value)
    except ValueError:
        raise InvalidInputError(f"{name} {value!r} is not an id", field=name) from None
