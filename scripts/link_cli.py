"""``caljournal link …`` and ``caljournal secrets …``: calendar links at the command line."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from caljournal.scripts.common import (
    Commands,
    JsonOption,
    container,
    err,
    operator_cause,
    out,
    table,
)
from caljournal.scripts.resync_cli import run_resync

if TYPE_CHECKING:
    from caljournal.adapters.secrets import Credentials

link_app = Commands(help="Link an account to its CalDAV calendar.", no_args_is_help=True)
secrets_app = Commands(help="Manage the keys that seal calendar credentials.", no_args_is_help=True)

AccountArg = Annotated[str, typer.Argument(help="the account's name")]
PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="read the password (or token) from stdin")
]


def _secret(from_stdin: bool, label: str) -> str:
    if from_stdin:
        value = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        value = typer.prompt(label, hide_input=True)
    else:
        err.print(
            f"[red]error:[/red] give the {label} with --password-stdin (it is never an argument)"
        )
        raise typer.Exit(1)
    if not value:
        err.print(f"[red]error:[/red] the {label} is empty")
        raise typer.Exit(1)
    return value


def _read_credentials(
    username: str | None, password_stdin: bool, bearer_token: bool
) -> Credentials:
    """Return the credentials given on the command line and stdin, or exit 1 saying what lacks."""
    from caljournal.adapters.secrets import Credentials

    if not bearer_token and not username:
        err.print(
            "[red]error:[/red] give the login name with --username "
            "(or --no-auth for a calendar that needs no login)"
        )
        raise typer.Exit(1)
    secret = _secret(password_stdin, "token" if bearer_token else "password")
    if bearer_token:
        return Credentials(username, None, secret)
    return Credentials(username, secret)


def _print_result(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        out.print_json(data=result)
        return
    link = result["link"]
    out.print(result["explanation"], highlight=False)
    for step in result["steps"]:
        out.print(f"  tried: {step}", highlight=False)
    out.print(f"status: {link['status']}; calendar: {link['calendar_url'] or '(choose one)'}")
    _calendars(result["calendars"], link["calendar_url"])


def _calendars(calendars: list[dict[str, Any]], chosen: str | None) -> None:
    rows = [
        [
            "*" if c["url"] == chosen else "",
            c["name"],
            c["url"],
            "yes" if c["accepts_events"] else "no",
            "yes" if c["sync_tokens"] else "no",
            {True: "yes", False: "no", None: "?"}[c["writable"]],
            c["color"],
        ]
        for c in calendars
    ]
    table("calendars", ["", "name", "url", "events", "sync tokens", "writable", "colour"], rows)


@link_app.command("add")
def add(
    account: AccountArg,
    url: Annotated[str, typer.Argument(help="calendar/server URL, domain or e-mail address")],
    username: Annotated[str | None, typer.Option(help="login name on the calendar server")] = None,
    password_stdin: PasswordStdin = False,
    bearer_token: Annotated[
        bool, typer.Option("--bearer-token", help="the secret is an OAuth2 token (Google)")
    ] = False,
    provider: Annotated[
        str | None, typer.Option(help="provider profile (see 'link providers')")
    ] = None,
    no_auth: Annotated[
        bool,
        typer.Option("--no-auth", help="the calendar needs no login: send no credentials"),
    ] = False,
    backfill: Annotated[
        bool | None,
        typer.Option(
            "--backfill/--no-backfill",
            help="push the account's existing appointments now (asked when not given)",
        ),
    ] = None,
    json: JsonOption = False,
) -> None:
    """Discover the server behind URL, link the account, and list its calendars."""
    from caljournal.adapters.secrets import Credentials

    if no_auth:
        if username or password_stdin or bearer_token:
            err.print("[red]error:[/red] --no-auth sends no credentials; leave the others out")
            raise typer.Exit(1)
        credentials = Credentials()
    else:
        credentials = _read_credentials(username, password_stdin, bearer_token)
    with container() as built:
        account_id = built.accounts.find_account(account).id
        result = built.links.link(
            account_id, url, credentials, operator_cause(), provider, "none" if no_auth else None
        )
        _print_result(result.as_dict(), json)
        if result.state["status"] != "active":
            if backfill:
                err.print(
                    "backfill not run: no calendar is chosen yet; choose one with "
                    f"'caljournal link choose {account} URL', then run "
                    f"'caljournal backfill --account {account}'",
                    highlight=False,
                )
            return
        existing = built.journal.journal_recorder.count_appointments(str(account_id))
        if backfill and not existing:
            err.print("backfill not run: the account has no appointments yet", highlight=False)
        if existing and backfill is None and sys.stdin.isatty():
            backfill = typer.confirm(f"push the account's {existing} existing appointments now?")
        if existing and backfill:
            summary = run_resync(built, account_id, "backfill", {}, operator_cause())
            err.print(
                f"backfill: {summary.created} created, {summary.already_present} already "
                f"present, {summary.updated} updated, {len(summary.failed)} failed"
            )
            if summary.stopped:
                err.print(
                    f"[red]error:[/red] the backfill stopped, the calendar server kept failing: "
                    f"{summary.stopped}; run 'caljournal backfill --account {account}' to finish",
                    highlight=False,
                )
                raise typer.Exit(1)


@link_app.command("show")
def show(account: AccountArg, json: JsonOption = False) -> None:
    """Show the account's link (never its credentials)."""
    with container() as built:
        state = built.links.get(built.accounts.find_account(account).id)
        if json:
            out.print_json(data=state)
        else:
            table("link", ["field", "value"], [[k, v] for k, v in state.items()])


@link_app.command("calendars")
def calendars(account: AccountArg, json: JsonOption = False) -> None:
    """Ask the linked server for its calendars."""
    with container() as built:
        result = built.links.calendars(built.accounts.find_account(account).id)
        _print_result(result.as_dict(), json)


@link_app.command("choose")
def choose(
    account: AccountArg,
    calendar_url: Annotated[str, typer.Argument(help="one of the URLs 'link calendars' lists")],
) -> None:
    """Choose the calendar to sync with."""
    with container() as built:
        state = built.links.choose(
            built.accounts.find_account(account).id, calendar_url, operator_cause()
        )
        err.print(f"calendar {state['calendar_url']} chosen for {account!r}")


@link_app.command("test")
def test(account: AccountArg) -> None:
    """Create and delete a probe event in the chosen calendar; exit 1 when that fails."""
    with container() as built:
        outcome = built.links.test(built.accounts.find_account(account).id)
    if outcome["ok"]:
        out.print(outcome["message"], highlight=False)
        return
    err.print(f"[red]error:[/red] {outcome['message']}", highlight=False)
    raise typer.Exit(1)


@link_app.command("rotate")
def rotate(
    account: AccountArg,
    username: Annotated[str | None, typer.Option(help="login name on the calendar server")] = None,
    password_stdin: PasswordStdin = False,
    bearer_token: Annotated[
        bool, typer.Option("--bearer-token", help="the secret is an OAuth2 token (Google)")
    ] = False,
) -> None:
    """Replace the stored credentials after checking them against the server."""
    credentials = _read_credentials(username, password_stdin, bearer_token)
    with container() as built:
        built.links.rotate_credentials(
            built.accounts.find_account(account).id, credentials, operator_cause()
        )
        err.print(f"credentials of {account!r} replaced")


@link_app.command("pause")
def pause(
    account: AccountArg,
    reason: Annotated[
        str, typer.Option(help="why (shown in status and history)")
    ] = "paused by operator",
) -> None:
    """Pause syncing for the account."""
    with container() as built:
        built.links.pause(built.accounts.find_account(account).id, reason, operator_cause())
        err.print(f"syncing of {account!r} paused")


@link_app.command("resume")
def resume(
    account: AccountArg,
    confirm_deletes: Annotated[
        bool,
        typer.Option(
            "--confirm-deletes", help="the mass deletion that paused the link was meant: apply it"
        ),
    ] = False,
) -> None:
    """Resume syncing for the account."""
    with container() as built:
        built.links.resume(
            built.accounts.find_account(account).id, operator_cause(), confirm_deletes
        )
        err.print(f"syncing of {account!r} resumed")


@link_app.command("poll")
def poll(
    account: AccountArg,
    wait: Annotated[bool, typer.Option(help="wait for the poll and show its progress")] = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait at most")] = 600.0,
) -> None:
    """Ask the worker to poll the account's calendar now."""
    import time

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        Task,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        """How many events the import records per second (rich's own estimate)."""

        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed:,.0f} events/s" if speed else "– events/s")

    with container() as built:
        account_id = built.accounts.find_account(account).id
        store = built.sync_state
        before = store.inbound_state(str(account_id)).last_poll_us or 0
        built.links.request_poll(account_id, operator_cause())
        err.print(f"poll of {account!r} requested")
        if not wait:
            return
        deadline = time.monotonic() + timeout
        columns = (BarColumn(), MofNCompleteColumn(), RateColumn(), TimeRemainingColumn())
        with Progress(*Progress.get_default_columns()[:1], *columns, console=err) as progress:
            task = progress.add_task("polling", total=None)
            while time.monotonic() < deadline:
                state = store.inbound_state(str(account_id))
                if state.import_total:
                    progress.update(
                        task, total=state.import_total, completed=state.import_done or 0
                    )
                if (state.last_poll_us or 0) > before and state.calendar_url:
                    break
                time.sleep(0.2)
            else:
                err.print(
                    "[red]error:[/red] no worker polled in time; is 'caljournal worker' running?"
                )
                raise typer.Exit(1)
        report = built.sync.status(account_id)["inbound"]
        out.print_json(data=report)


@link_app.command("poll-interval")
def poll_interval(
    account: AccountArg,
    seconds: Annotated[int, typer.Argument(help="5 to 86400 seconds (default 60)")],
) -> None:
    """Set how often the account's calendar is polled."""
    with container() as built:
        built.links.set_poll_interval(
            built.accounts.find_account(account).id, seconds, operator_cause()
        )
        err.print(f"{account!r} is polled every {seconds} s")


@link_app.command("remove")
def remove(
    account: AccountArg,
    yes: Annotated[bool, typer.Option("--yes", help="do it without asking")] = False,
) -> None:
    """Unlink the account and erase its stored credentials."""
    if not yes and not typer.confirm(f"unlink {account!r} and erase its credentials?"):
        raise typer.Exit(1)
    with container() as built:
        built.links.unlink(built.accounts.find_account(account).id, operator_cause())
        err.print(f"{account!r} unlinked; its credentials are erased")


@link_app.command("history")
def history(account: AccountArg, json: JsonOption = False) -> None:
    """Show who linked, chose, rotated, paused and unlinked, and when."""
    with container() as built:
        entries = built.links.history(built.accounts.find_account(account).id)
    rows = [
        [e["position"], e["timestamp"], e["type"], e["origin"], e["actor"], sorted(e["changes"])]
        for e in entries
    ]
    table("link history", ["position", "time", "change", "origin", "actor", "fields"], rows, json)


@link_app.command("providers")
def providers(json: JsonOption = False) -> None:
    """List the provider profiles and what caljournal knows about each."""
    from caljournal.adapters.providers import PROFILES

    rows = [
        [p.key, p.display_name, p.auth, p.sync_tokens, p.base_url or "(your server's URL)"]
        for p in PROFILES
    ]
    table("providers", ["key", "name", "auth", "sync tokens", "base URL"], rows, json)


@secrets_app.command("rotate-key")
def rotate_key() -> None:
    """Re-seal every stored credential with the first configured key.

    Put the new key first in CALJOURNAL_SECRET_KEYS and keep the old one after it
    until this has run; then the old key can be removed.
    """
    with container() as built:
        resealed, total = built.links.rotate_key()
        err.print(f"re-sealed {resealed} of {total} stored credentials with the current key")


@secrets_app.command("new-key")
def new_key_command() -> None:
    """Print a fresh random key for CALJOURNAL_SECRET_KEYS."""
    from caljournal.adapters.secrets import new_key

    out.print(new_key(), highlight=False)
