"""``caljournal audit verify`` and ``caljournal audit head``: check the audit chain's hashes.

Exit codes: 0 when every chain checked verifies clean, 1 when a problem is
found (one line names the first bad entry), 2 for bad input (an unknown
account, an unreadable head file).
"""

from __future__ import annotations

import json as jsonlib
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated
from uuid import UUID

import typer

from caljournal.errors import NotFoundError
from caljournal.scripts.common import JsonOption, container, err, out

if TYPE_CHECKING:
    from caljournal.adapters.audit_report import ExportedHead, VerifyReport
    from caljournal.bootstrap import Container

# ``caljournal.adapters.audit_chain.OPERATORS``, written out so that the help
# does not load the journal's modules (a test checks the two agree).
OPERATORS = "operators"

AccountOption = Annotated[
    str | None, typer.Option(help=f"the account's name or id ('{OPERATORS}' for operator tokens)")
]


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(code)


def _chain_of(built: Container, account: str) -> tuple[str, str]:
    """Return (chain id, name to show) of an account given by name, id or OPERATORS."""
    if account == OPERATORS:
        return OPERATORS, OPERATORS
    try:
        account_id = UUID(account)
    except ValueError:
        try:
            return str(built.accounts.find_account(account).id), account
        except NotFoundError as exc:
            raise _fail(exc.message) from None
    try:
        return str(account_id), built.accounts.account_name(account_id)
    except NotFoundError as exc:
        raise _fail(exc.message) from None


def _read_head(path: Path) -> ExportedHead:
    from caljournal.adapters.audit_report import ExportedHead, HeadFormatError

    try:
        return ExportedHead.from_json(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise _fail(f"cannot read the head file {str(path)!r}: {exc.strerror}") from None
    except HeadFormatError as exc:
        raise _fail(f"{path}: {exc}") from None


def _say(report: VerifyReport, name: str) -> None:
    rate = report.checked / report.seconds if report.seconds else 0.0
    if report.account_id is None:
        # The check for events of no chain at all (``verify --all``).
        if report.problem is None:
            err.print("ok: every event in the journal belongs to a chain", highlight=False)
        else:
            err.print(f"[red]TAMPERED[/red] {report.problem.message}", highlight=False)
    elif report.problem is None:
        err.print(
            f"ok: chain {name}: {report.checked} entries verified in {report.seconds:.2f} s "
            f"({rate:,.0f}/s)",
            highlight=False,
        )
    else:
        err.print(f"[red]TAMPERED[/red] {name}: {report.problem.message}", highlight=False)


def _as_json(report: VerifyReport) -> dict[str, object]:
    return {
        "account": report.account_id,
        "ok": report.ok,
        "checked": report.checked,
        "seconds": round(report.seconds, 4),
        "problem": None if report.problem is None else asdict(report.problem),
    }


def verify_command(
    account: AccountOption = None,
    all_chains: Annotated[
        bool, typer.Option("--all", help="every chain, and events that belong to none")
    ] = False,
    head: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="a head written by 'audit head' to check against"),
    ] = None,
    json: JsonOption = False,
) -> None:
    """Recompute audit chains and name the first bad entry (exit 1 when there is one)."""
    from caljournal.adapters.audit_report import HeadFormatError
    from caljournal.adapters.audit_verify import verify, verify_all

    if all_chains and (account or head):
        raise _fail("--all checks every chain; leave out --account and --head")
    exported = _read_head(head) if head is not None else None
    if not all_chains and account is None and exported is None:
        raise _fail("name a chain: --account NAME, --head FILE or --all")
    with container() as built:
        recorder = built.journal.journal_recorder
        if all_chains:
            reports = verify_all(recorder)
            known = {str(a["id"]): a["name"] for a in built.accounts.list_accounts()}
            names = [known.get(r.account_id or "", r.account_id or "events") for r in reports]
        else:
            if account is not None:
                chain, name = _chain_of(built, account)
            else:
                chain = name = exported.account if exported is not None else ""
            try:
                reports = [verify(recorder, chain, head=exported)]
            except HeadFormatError as exc:
                raise _fail(str(exc)) from None
            names = [name]
    if json:
        out.print_json(jsonlib.dumps([_as_json(r) for r in reports]))
    for report, name in zip(reports, names, strict=True):
        _say(report, name)
    if exported is not None and reports[0].ok:
        err.print(
            f"the chain still carries the head of {exported.verified_at} (entry {exported.seq})"
        )
    if not all(r.ok for r in reports):
        raise typer.Exit(1)


def head_command(
    account: AccountOption = None,
    output: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="write the head to this file instead of stdout"),
    ] = None,
) -> None:
    """Verify an account's chain, then print its head as JSON to keep elsewhere."""
    from caljournal.adapters.audit_verify import verify

    if account is None:
        raise _fail("name a chain: --account NAME")
    with container() as built:
        chain, name = _chain_of(built, account)
        report = verify(built.journal.journal_recorder, chain)
    _say(report, name)
    if report.problem is not None:
        raise typer.Exit(1)
    if report.last is None:
        raise _fail(f"the chain of {name} has no entries yet")
    document = report.export().to_json()
    if output is None:
        typer.echo(document, nl=False)
        return
    try:
        output.write_text(document, encoding="utf-8")
    except OSError as exc:
        raise _fail(f"cannot write {str(output)!r}: {exc.strerror}") from None
    err.print(f"head of {name} (entry {report.last.seq}) written to {output}", highlight=False)


__all__ = ["head_command", "verify_command"]
