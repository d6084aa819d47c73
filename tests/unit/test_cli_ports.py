"""``nurture run --port`` and ``nurture web --port`` take a TCP port: a number
past 65535 (or below 0) is a usage error naming the option, exit 2, before
anything is done; not a traceback from ``bind()`` after the database was
migrated."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import nurture.cli.engine as engine_cli
from nurture.cli.main import app


def nurture(project: Path, *args: str) -> Any:
    return CliRunner().invoke(app, ["--dir", str(project), *args], env={"COLUMNS": "500"})


@pytest.mark.parametrize("command", ["run", "web"])
@pytest.mark.parametrize("port", ["70000", "65536", "-1", "99999999999999999999"])
def test_a_port_out_of_range_is_a_usage_error(project: Path, command: str, port: str) -> None:
    result = nurture(project, command, "--port", port)
    output = " ".join(re.sub("[│╭╮╰╯─]", " ", result.output).split())
    assert result.exit_code == 2, output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Invalid value for '--port'" in output
    assert not (project / "nurture.db").exists()  # refused before anything was done


@pytest.mark.parametrize("command", ["run", "web"])
@pytest.mark.parametrize("port", ["1", "8000", "65535"])
def test_a_port_in_range_is_served(
    project: Path, monkeypatch: pytest.MonkeyPatch, command: str, port: str
) -> None:
    served: list[tuple[str, int, bool]] = []

    def serve(ctx: Any, host: str, port: int, *, with_worker: bool) -> None:
        served.append((host, port, with_worker))

    monkeypatch.setattr(engine_cli, "_serve", serve)
    result = nurture(project, command, "--port", port)
    assert result.exit_code == 0, result.output
    assert served == [("127.0.0.1", int(port), command == "run")]
