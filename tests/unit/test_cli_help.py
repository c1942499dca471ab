"""Every command's --help reads like the README; all commands are walked, new ones included."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import typer
from typer.core import TyperArgument, TyperGroup, TyperOption
from typer.testing import CliRunner

from caljournal.scripts.cli import app


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, command
    if isinstance(command, TyperGroup):
        for name, sub in command.commands.items():
            yield from _commands(sub, (*path, name))


ROOT = typer.main.get_command(app)
COMMANDS = dict(_commands(ROOT))


def _help(path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(
        app, [*path, "--help"], prog_name="caljournal", env={"COLUMNS": "200"}, color=False
    )
    assert result.exit_code == 0, result.output
    return result.output


def test_the_walk_finds_the_commands_of_the_readme() -> None:
    names = {" ".join(path) for path in COMMANDS}
    assert {"serve", "replay", "retry-failed", "link rotate", "token create"} <= names


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=lambda p: " ".join(p) or "caljournal")
def test_help_names_values_like_the_readme_and_explains_every_option(
    path: tuple[str, ...],
) -> None:
    command = COMMANDS[path]
    text = _help(path)
    with typer.Context(command, info_name=" ".join(("caljournal", *path))) as ctx:
        params = command.get_params(ctx)
        for param in params:
            label = "/".join(param.opts)
            assert param.help, f"{label} has no help"
            if isinstance(param, TyperOption) and (param.is_flag or param.count):
                assert param.display_type_rich(ctx) == "", f"{label} shows a value placeholder"
            elif isinstance(param, TyperOption):
                assert param.metavar and param.metavar.isupper(), f"{label}: {param.metavar!r}"
            if isinstance(param, TyperArgument):
                assert param.metavar == (param.name or "").upper()
        arguments = [
            p.metavar if p.required else f"[{p.metavar}]"
            for p in params
            if isinstance(p, TyperArgument)
        ]
    usage = next(line.strip() for line in text.splitlines() if "Usage:" in line)
    expected = " ".join(("Usage: caljournal", *path, "[OPTIONS]", *arguments))
    if isinstance(command, TyperGroup):
        expected += " COMMAND [ARGS]..."
    assert usage == expected
    assert "<bool>" not in text
    assert "--no-no-" not in text
