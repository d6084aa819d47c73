"""The command lists of ``nurture --help`` (and of each group's ``--help``)
show a command's first docstring paragraph. Rich keeps that paragraph's line
breaks in the list, so a summary wrapped in the source came out broken in the
middle of a sentence ("clicked (people, not" / "scanners), ..."). Each
command's summary is one line; the detail goes in the next paragraph, which
only the command's own ``--help`` shows."""

from __future__ import annotations

import inspect
from typing import Any

import typer.main
from typer.testing import CliRunner

from nurture.cli.main import app


# typer's commands are click's (or typer's own copy of click): read by attribute.
def every_command(group: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for name, command in getattr(group, "commands", {}).items():
        found.append((*path, name))
        found.extend(every_command(command, (*path, name)))
    return found


def command_at(path: tuple[str, ...]) -> Any:
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    return command


def test_every_command_summary_is_one_line() -> None:
    paths = every_command(typer.main.get_command(app))
    assert len(paths) > 30  # the walk reached the groups' commands too
    broken = {}
    for path in paths:
        command = command_at(path)
        summary = inspect.cleandoc(command.short_help or command.help or "").split("\n\n")[0]
        if not summary.strip() or "\n" in summary:
            broken[" ".join(path)] = summary
    assert broken == {}


def test_the_list_shows_a_whole_summary_and_the_command_help_the_detail() -> None:
    listed = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0, listed.output
    row = next(line for line in listed.output.splitlines() if " stats " in line)
    assert "The funnel per step: sent, delivered, opened, clicked, converted, with rates." in row
    assert "link scanners" not in listed.output

    own = CliRunner().invoke(app, ["stats", "--help"], env={"COLUMNS": "200"})
    assert own.exit_code == 0, own.output
    assert "Opens and clicks count people, not link scanners" in own.output
