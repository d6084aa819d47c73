"""A bad ``nurture.toml`` is a clear error, exit 2, from every command.

The commands are read from the Typer app itself, so a command added later is
covered without touching this file; only the commands that never read the
settings are listed as exceptions.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer

from nurture.cli.main import app

NURTURE = [sys.executable, "-m", "nurture"]

# Commands that do their work without reading nurture.toml.
NO_SETTINGS: set[tuple[str, ...]] = {("init",), ("schema",)}
# Options a command needs before it gets as far as the settings.
EXTRA_OPTIONS: dict[tuple[str, ...], list[str]] = {
    ("dispatch",): ["--once"],
    ("sends", "resolve"): ["--all-unknown", "--as-sent", "--why", "checked with the provider"],
    ("events", "add"): [
        "--email",
        "karin@example.com",
        "--product",
        "sales-audit",
        "--amount",
        "10",
        "--currency",
        "SEK",
    ],
}
# A value for each required argument, by its name.
ARGUMENT_VALUES = {
    "email": "karin@example.com",
    "sequence": "sales-process",
    "file": "subscribers.csv",
    "kind": "purchase",
}


def _leaf_commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    children = getattr(command, "commands", None)
    if children:
        for name, child in sorted(children.items()):
            yield from _leaf_commands(child, (*path, name))
    else:
        yield path


def _invocation(path: tuple[str, ...]) -> list[str]:
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    arguments = [
        ARGUMENT_VALUES.get(param.name or "", "x")
        for param in command.params
        if param.param_type_name == "argument" and param.required
    ]
    return [*path, *EXTRA_OPTIONS.get(path, []), *arguments]


COMMANDS = [path for path in _leaf_commands(typer.main.get_command(app)) if path not in NO_SETTINGS]


def test_every_command_is_found() -> None:
    # Guards the walk itself: if it found nothing, the test below would pass vacuously.
    names = {" ".join(path) for path in COMMANDS}
    assert {"resume", "log", "plan", "dispatch", "subscribers add", "db upgrade"} <= names


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_an_invalid_setting_is_exit_2_naming_it(path: tuple[str, ...], tmp_path: Path) -> None:
    (tmp_path / "nurture.toml").write_text('batch_size = "many"\n', encoding="utf-8")
    (tmp_path / "subscribers.csv").write_text("email\nkarin@example.com\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    env["COLUMNS"] = "200"
    result = subprocess.run(
        [*NURTURE, *_invocation(path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in result.stderr + result.stdout
    assert result.returncode == 2, result.stderr
    assert "error:" in result.stderr
    assert "batch_size" in result.stderr
    assert "NURTURE_BATCH_SIZE" in result.stderr
