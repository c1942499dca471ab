"""``caljournal erase``: erase appointments' personal data at the command line."""

from __future__ import annotations

import uuid
from typing import Annotated
from uuid import UUID

import typer

from caljournal.domain.cause import Cause, Origin
from caljournal.scripts.common import JsonOption, container, err, operator_cause, table


def erase(
    account: Annotated[str, typer.Option(help="the account's name")],
    reason: Annotated[str, typer.Option(help="why (recorded with the erasure)")],
    appointment: Annotated[str | None, typer.Option(help="the appointment's id")] = None,
    customer_email: Annotated[
        str | None,
        typer.Option(help="erase every appointment of the account with this customer e-mail"),
    ] = None,
    actor: Annotated[
        str | None, typer.Option(help="who asked for it (recorded; default operator:USER)")
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", help="erase; without it, only list what would be erased")
    ] = False,
    json: JsonOption = False,
) -> None:
    """Erase appointments' personal data (title, location, description, customer) for good.

    The encryption key of each appointment's personal data is destroyed and an
    Erased event records who and why; times, status and history stay.
    """
    if (appointment is None) == (customer_email is None):
        err.print("[red]error:[/red] give exactly one of --appointment ID or --customer-email E")
        raise typer.Exit(1)
    appointment_id = _appointment_id(appointment) if appointment is not None else None
    cause = operator_cause()
    if actor is not None:
        cause = Cause(Origin.OPERATOR, actor, f"cli-{uuid.uuid4()}")
    with container() as built:
        account_id = built.accounts.find_account(account).id
        targets = built.erasure.targets(
            account_id, appointment_id=appointment_id, customer_email=customer_email
        )
        columns = ["appointment", "start", "status", "state", "clear events"]
        if not yes:
            rows = [
                [str(t.appointment_id), t.start, t.status, _state(t.erased), t.clear_events]
                for t in targets
            ]
            table(f"would erase ({len(targets)})", columns, rows, json)
            err.print("dry run: nothing erased; add --yes to erase")
            return
        outcomes = [
            built.erasure.erase(account_id, t.appointment_id, reason, cause) for t in targets
        ]
        rows = [
            [
                str(o.appointment_id),
                o.state["start"],
                o.state["status"],
                "erased now" if o.erased_now else "erased before",
                o.clear_events,
            ]
            for o in outcomes
        ]
        table(f"erased ({sum(o.erased_now for o in outcomes)})", columns, rows, json)
        old = sum(o.clear_events for o in outcomes)
        if old:
            err.print(
                f"{old} event(s) recorded before personal data was encrypted keep it in clear "
                "in the journal's stored bytes; every reader shows it erased",
                highlight=False,
            )


def _state(erased: bool) -> str:
    return "erased already" if erased else "holds personal data"


def _appointment_id(text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        err.print(f"[red]error:[/red] {text!r} is not an appointment id")
        raise typer.Exit(1) from None
