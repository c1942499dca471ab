"""The ``caljournal`` command: thin wrappers around the application services."""

from __future__ import annotations

import errno
import socket
import sys
from collections.abc import Callable
from typing import Annotated, Any
from uuid import UUID

import typer

from caljournal.scripts.audit_cli import audit_app
from caljournal.scripts.common import (
    Commands,
    JsonOption,
    container,
    err,
    operator_cause,
    out,
    table,
    when,
)
from caljournal.scripts.erase_cli import erase
from caljournal.scripts.link_cli import link_app, secrets_app
from caljournal.scripts.resync_cli import backfill, replay, run_with_progress
from caljournal.scripts.status_cli import status

app = Commands(
    help="caljournal: appointments in a journal, synced to CalDAV.", no_args_is_help=True
)
account_app = Commands(help="Open and list accounts.", no_args_is_help=True)
token_app = Commands(help="Issue, list and revoke API tokens.", no_args_is_help=True)
app.add_typer(account_app, name="account")
app.add_typer(token_app, name="token")
app.add_typer(link_app, name="link")
app.add_typer(secrets_app, name="secrets")
app.add_typer(audit_app, name="audit")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="address to listen on")] = None,
    port: Annotated[int | None, typer.Option(help="port to listen on")] = None,
    no_worker: Annotated[
        bool, typer.Option("--no-worker", help="run the API without the worker")
    ] = False,
) -> None:
    """Run the HTTP API and the sync worker (embedded SQLite journal unless configured)."""
    import logging

    import uvicorn

    from caljournal.adapters.logs import configure_logging
    from caljournal.api.app import create_app, server_config

    with container() as built:
        configure_logging(logging.WARNING, built.settings.log_format)
        bind_host = host or built.settings.host
        bind_port = port or built.settings.port
        listening = _listen(bind_host, bind_port)
        worker = None if no_worker else built.outbound_worker().start()
        err.print(
            f"caljournal API on http://{bind_host}:{bind_port} (docs at /docs); "
            f"outbound worker {'off' if worker is None else worker.owner}",
            highlight=False,
        )
        try:
            server = uvicorn.Server(server_config(create_app(built), bind_host, bind_port))
            server.run(sockets=[listening])
        finally:
            listening.close()
            if worker is not None:
                worker.stop()


def _listen(host: str, port: int) -> socket.socket:
    """Bind the API's socket before anything starts, or exit with one sentence.

    uvicorn binds only after the application has started (and said so), and
    then exits with a bare OS error; binding first fails before anything runs.
    The socket is made the way uvicorn makes it.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listening = socket.socket(family=family)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listening.bind((host, port))
    except OSError as exc:
        listening.close()
        if exc.errno == errno.EADDRINUSE:
            reason = "the port is in use by another program; choose another with --port"
        elif exc.errno == errno.EACCES:
            reason = "this user may not listen on that port; choose another with --port"
        elif isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
            reason = "that is not an address of this machine; choose another with --host"
        else:
            reason = exc.strerror or type(exc).__name__
        err.print(f"[red]error:[/red] cannot listen on {host}:{port}: {reason}", highlight=False)
        raise typer.Exit(1) from None
    listening.set_inheritable(True)
    return listening


@app.command()
def worker(
    verbose: Annotated[
        bool, typer.Option("--verbose", help="log every push (time, account, action)")
    ] = False,
) -> None:
    """Run the outbound worker alone (no API) until interrupted."""
    import logging
    import signal
    import threading

    from caljournal.adapters.logs import configure_logging

    with container() as built:
        level = logging.INFO if verbose else logging.WARNING
        configure_logging(level, built.settings.log_format)
        running = built.outbound_worker().start()
        err.print(
            f"outbound worker {running.owner} on the {built.backend} journal", highlight=False
        )
        done = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: done.set())
        done.wait()
        running.stop()
        err.print("outbound worker stopped; its accounts are released")


app.command()(status)
app.command()(backfill)
app.command()(replay)
app.command()(erase)


@app.command("rebuild-read-models")
def rebuild_read_models_command() -> None:
    """Rebuild the query tables (appointments, accounts, tokens, links) from the journal."""
    from caljournal.maintenance import rebuild_read_models

    with container() as built:
        read, seconds = run_with_progress(
            lambda progress: rebuild_read_models(
                built.journal,
                lambda done, total: progress("reading the journal", done, total),
                operator_cause(),
            )
        )
    rate = read / seconds if seconds else 0.0
    err.print(f"rebuilt from {read} events in {seconds:.2f} s ({rate:.0f} events/s)")


@app.command("retry-failed")
def retry_failed(account: Annotated[str, typer.Argument(help="the account's name")]) -> None:
    """Push the account's failed appointments again (after fixing the cause)."""
    with container() as built:
        count = built.sync.retry_failed(built.accounts.find_account(account).id, operator_cause())
        err.print(f"{count} failed push(es) of {account!r} queued again")


@account_app.command("create")
def account_create(
    name: Annotated[str, typer.Argument(help="account name: letters, digits, '.', '_', '-'")],
    token_name: Annotated[str, typer.Option(help="name of the first token")] = "default",
) -> None:
    """Open an account and print its first API token (shown only once)."""
    with container() as built:
        issued = built.accounts.open_account(name, operator_cause(), token_name)
        err.print(f"account {name!r} opened; its token {issued.name!r} (keep it, shown once):")
        out.print(issued.secret, highlight=False)


@account_app.command("list")
def account_list(json: JsonOption = False) -> None:
    """List all accounts."""
    with container() as built:
        rows = [[a["name"], a["id"], when(a["created_us"])] for a in built.accounts.list_accounts()]
        table("accounts", ["name", "id", "created"], rows, json)


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Argument(help="a name for the token, e.g. frontdesk")],
    account: Annotated[str | None, typer.Option(help="the account the token acts for")] = None,
    operator: Annotated[
        bool, typer.Option("--operator", help="a token that may act on every account")
    ] = False,
) -> None:
    """Issue an API token and print it (shown only once)."""
    _require_one(account, operator)
    with container() as built:
        issued = built.accounts.issue_token(None if operator else account, name, operator_cause())
        owner = "operator" if operator else f"account {account!r}"
        err.print(f"token {name!r} ({issued.token_id}) for {owner} (keep it, shown once):")
        out.print(issued.secret, highlight=False)


@token_app.command("list")
def token_list(
    account: Annotated[str | None, typer.Option(help="the account whose tokens to list")] = None,
    operator: Annotated[bool, typer.Option("--operator", help="list operator tokens")] = False,
    json: JsonOption = False,
) -> None:
    """List tokens (never their secrets)."""
    _require_one(account, operator)
    with container() as built:
        tokens = built.accounts.list_tokens(None if operator else account)
        rows = [
            [t["name"], t["id"], "revoked" if t["revoked"] else "active", when(t["created_us"])]
            for t in tokens
        ]
        owner = "operator" if operator else account
        table(f"tokens of {owner}", ["name", "id", "state", "created"], rows, json)


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[str, typer.Argument(help="the token's id (see token list)")],
) -> None:
    """Revoke a token: running APIs stop accepting it within CALJOURNAL_TOKEN_CACHE_SECONDS."""
    try:
        parsed = UUID(token_id)
    except ValueError:
        err.print(f"[red]error:[/red] {token_id!r} is not a token id (see 'caljournal token list')")
        raise typer.Exit(1) from None
    with container() as built:
        built.accounts.revoke_token(parsed, operator_cause())
        wait = built.settings.token_cache_seconds
        later = f"; running APIs refuse it within {wait:g} s" if wait > 0 else ""
        err.print(f"token {parsed} revoked{later}", highlight=False)


def _require_one(account: str | None, operator: bool) -> None:
    if bool(account) == bool(operator):
        err.print("[red]error:[/red] give exactly one of --account NAME or --operator")
        raise typer.Exit(1)


def main(argv: list[str] | None = None) -> None:
    """Run the command line."""
    runner: Callable[..., Any] = app
    runner(args=argv if argv is not None else sys.argv[1:], prog_name="caljournal")
