"""Every command's ``--help`` reads whole on an 80-column terminal.

Rich cuts a word too long for its column with "…" (``init --help`` showed
``<maja@bergdesign.se>…``), and an example longer than the line wrapped at
any space, so a copied command broke. Examples now continue with `` \\`` as
a shell reads them.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from nurture.cli.console import examples
from nurture.cli.main import app


def _paths(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from _paths(sub, (*path, name))


PATHS = list(_paths(typer.main.get_command(app)))


def _help(path: tuple[str, ...]) -> str:
    done = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "80"})
    assert done.exit_code == 0, done.output
    return done.output


def _examples(text: str) -> list[str]:
    """The example commands of a help text, continuation lines joined."""
    if "Examples:" not in text:
        return []
    commands: list[str] = []
    continued = False
    for line in text.split("Examples:", 1)[1].splitlines():
        line = line.strip()
        if not line:
            continue
        if continued:
            commands[-1] += " " + line.removesuffix(" \\")
        elif line.startswith("# ") and commands:
            commands[-1] += "   " + line  # the comment of the command above
        else:
            assert line.startswith("$ "), f"an example line cut from its command: {line!r}"
            commands.append(line.removeprefix("$ ").removesuffix(" \\"))
        continued = line.endswith(" \\")
    assert not continued, "the last example ends with a continuation"
    return commands


@pytest.mark.parametrize("path", PATHS, ids=lambda path: " ".join(path) or "nurture")
def test_help_at_80_columns_cuts_nothing_and_examples_can_be_copied(path: tuple[str, ...]) -> None:
    text = _help(path)
    assert "…" not in text, "\n".join(line for line in text.splitlines() if "…" in line)
    assert all(len(line.rstrip()) <= 80 for line in text.splitlines())
    for command in _examples(text):
        words = shlex.split(command, comments=True)
        assert "nurture" in words, command


def test_a_long_example_continues_at_spaces_outside_quotes_with_options_kept_whole() -> None:
    long = (
        'nurture subscribers add karin@example.com --name "Karin Lindqvist" --tz '
        'Europe/Stockholm --consent "Signed up at the Stockholm fair"   # a comment'
    )
    epilog = examples("nurture validate", long)
    lines = epilog.splitlines()[2:]
    assert lines[0] == "$ nurture validate"
    assert all(len(line) <= 76 for line in lines)
    # The command continues; the comment that did not fit is a line of its own.
    assert [line.endswith(" \\") for line in lines[1:]] == [True, False, False]
    assert lines[3] == "    # a comment"
    assert "--tz Europe/Stockholm" in epilog and '"Signed up at the Stockholm fair"' in epilog
    joined = " ".join(line.removeprefix("$ ").removesuffix(" \\").strip() for line in lines[1:3])
    assert shlex.split(joined) == shlex.split(long, comments=True)
