"""Helpers shared by the command-line modules: consoles, the container, tables.

Importing the command-line modules must stay cheap: ``caljournal --help`` and
the read-only commands start in a fraction of a second only when the journal,
the settings and the CalDAV client are imported by the command that needs
them, not by the module that registers it. ``tests/unit/test_cli_imports.py``
holds the list of libraries each command may not load.
"""

from __future__ import annotations

import getpass
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from caljournal.domain.cause import Cause, Origin
from caljournal.domain.errors import DomainError
from caljournal.errors import ApplicationError

if TYPE_CHECKING:
    from caljournal.bootstrap import Container


def _name_values(params: list[Any]) -> None:
    """Give every parameter the placeholder the README uses.

    Typer shows its type in angle brackets (``<str>``, and ``<bool>`` even on a
    flag that takes no value) and a required argument in braces (``{account}``);
    the README writes ``--account ACCOUNT`` and ``status ACCOUNT``.
    """
    for param in params:
        if param.metavar is not None:
            continue
        flag = isinstance(param, TyperOption) and (param.is_flag or param.count)
        param.metavar = "" if flag else (param.name or "").upper()


class Command(TyperCommand):
    """A command whose help and usage name values like the README does."""

    def get_params(self, ctx: Any) -> list[Any]:
        params: list[Any] = super().get_params(ctx)
        _name_values(params)
        return params

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                metavar = param.metavar or ""  # get_params gave every parameter one
                piece = metavar if param.required else f"[{metavar}]"
                pieces.append(piece if param.nargs == 1 else f"{piece}...")
        return pieces


class Group(TyperGroup):
    """A command group whose options are shown without type placeholders."""

    def get_params(self, ctx: Any) -> list[Any]:
        params: list[Any] = super().get_params(ctx)
        _name_values(params)
        return params


class Commands(typer.Typer):
    """A ``typer.Typer`` whose commands and groups use :class:`Command` and :class:`Group`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cls=Group, **kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("cls", Command)
        return super().command(*args, **kwargs)


out = Console(width=None if sys.stdout.isatty() else 160)
JsonOption = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]
err = Console(stderr=True, soft_wrap=True)


def operator_cause() -> Cause:
    """Return the cause of a change made at the command line."""
    return Cause(Origin.OPERATOR, f"operator:{getpass.getuser()}", f"cli-{uuid.uuid4()}")


@contextmanager
def container() -> Iterator[Container]:
    """Yield the container; turn user errors into one line on stderr and exit 1."""
    from caljournal.adapters.journal import JournalUnavailableError
    from caljournal.bootstrap import bootstrap
    from caljournal.settings import ConfigurationError

    try:
        built = bootstrap()
    except (ConfigurationError, JournalUnavailableError) as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    except Exception as exc:  # the database is unreachable or refuses us
        err.print(f"[red]error:[/red] cannot open the journal: {one_line(exc)}", highlight=False)
        raise typer.Exit(2) from None
    # Said on every command: two shells in different folders, or with different
    # settings, would otherwise work on two journals without noticing.
    err.print(f"journal: {built.settings.journal_description}", highlight=False)
    try:
        yield built
    except (DomainError, ApplicationError) as exc:
        err.print(f"[red]error:[/red] {exc.message}", highlight=False)
        raise typer.Exit(1) from None
    except Exception as exc:
        if not _is_secret_key_error(exc):
            raise
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    finally:
        built.close()


def _is_secret_key_error(exc: BaseException) -> bool:
    """Return whether ``exc`` says the keys sealing calendar credentials are unusable.

    Only a command that opened the sealed credentials has loaded the module
    that raises this error (and the cipher library it loads); the others are
    not made to load it just to name the error.
    """
    secrets = sys.modules.get("caljournal.adapters.secrets")
    return secrets is not None and isinstance(exc, secrets.SecretKeyError)


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def when(us: int) -> str:
    return datetime.fromtimestamp(us / 1_000_000, UTC).isoformat(timespec="seconds")


def table(title: str, columns: list[str], rows: list[list[Any]], as_json: bool = False) -> None:
    if as_json:
        out.print_json(data=[dict(zip(columns, row, strict=True)) for row in rows])
        return
    shown = Table(title=title)
    for column in columns:
        shown.add_column(column, no_wrap=True, min_width=36 if column == "id" else None)
    for row in rows:
        shown.add_row(*["" if v is None else str(v) for v in row])
    out.print(shown)
