"""``caljournal status``: every account in one table, or one account's full report."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from caljournal.scripts.common import JsonOption, container, out, table

if TYPE_CHECKING:
    from caljournal.status import AccountStatus


class Sort(StrEnum):
    """Orders of the overview table."""

    LAG = "lag"
    FAILURES = "failures"
    NAME = "name"


OVERVIEW_COLUMNS = [
    "account",
    "link",
    "calendar",
    "lag s",
    "pending",
    "failed",
    "quarantined",
    "last poll",
    "next poll",
    "last error",
    "worker",
]


def status(
    account: Annotated[
        str | None, typer.Argument(help="the account's name; none: every account in one table")
    ] = None,
    sort: Annotated[
        Sort, typer.Option("--sort", help="largest lag first, most failures first, or by name")
    ] = Sort.NAME,
    json: JsonOption = False,
) -> None:
    """Show sync status: every account (link, lag, pending, failures, polls, worker), or one."""
    from caljournal.status import StatusService, sort_rows

    if account is not None:
        account_report(account, json)
        return
    with container() as built:
        overview = StatusService(built.journal).overview()
    rows = sort_rows(overview.rows, sort.value)
    if json:
        out.print_json(data={**overview.as_dict(), "accounts": [r.as_dict() for r in rows]})
        return
    title = f"sync status of {len(rows)} account(s); journal at {overview.position}"
    table(title, OVERVIEW_COLUMNS, [_line(r) for r in rows])


def _line(row: AccountStatus) -> list[Any]:
    return [
        row.name,
        row.link_status,
        row.calendar_url,
        f"{row.lag_seconds:g}",
        row.pending,
        row.failed,
        row.quarantined,
        _short(row.last_poll),
        _short(row.next_poll),
        (row.last_error or "")[:60],
        row.worker,
    ]


def _short(iso: str | None) -> str | None:
    return iso[:19].replace("T", " ") if iso else None


def account_report(account: str, json: bool) -> None:
    """Print one account's full sync report: positions, pending, lag, failures, last success."""
    from caljournal.status import account_report as report_of
    from caljournal.status import find_account_id

    with container() as built:
        account_id = find_account_id(built.journal, account)
        report = report_of(built.journal, built.sync_state, account_id)
    if json:
        out.print_json(data=report)
        return
    rows = [[k, v] for k, v in report.items() if k not in ("failed", "inbound", "resyncs")]
    inbound = report["inbound"]
    shown_apart = ("quarantined", "calendar_check")
    rows += [[f"inbound {k}", v] for k, v in inbound.items() if k not in shown_apart]
    rows += [[f"calendar check {k}", v] for k, v in inbound["calendar_check"].items()]
    table(f"sync status of {account}", ["field", "value"], rows)
    if inbound["quarantined"]:
        quarantined = [[q["href"], q["at"], q["reason"]] for q in inbound["quarantined"]]
        table("quarantined calendar objects", ["href", "at", "reason"], quarantined)
    if report["failed"]:
        failed = [[f["appointment_id"], f["at"], f["error"]] for f in report["failed"]]
        table("failed pushes", ["appointment", "at", "error"], failed)
    if report["resyncs"]:
        resyncs = [
            [
                r["kind"],
                r["state"],
                r["requested"],
                r["worker"] or "",
                f"{r['phase'] or ''} {r['done'] or 0}/{r['total'] or '?'}".strip(),
                r["error"] or "",
                r["request_id"],
            ]
            for r in report["resyncs"]
        ]
        columns = ["kind", "state", "requested", "run by", "progress", "error", "request"]
        table("backfills and replays", columns, resyncs)


__all__ = ["status"]
