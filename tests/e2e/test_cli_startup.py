"""The commands marketers run all day start quickly: ``--help``, ``init``,
``validate``, ``preview`` and ``simulate`` never import the database, web,
scheduler or provider libraries, which take most of a second to load (see
the note at the top of :mod:`nurture.cli.main`).

Checked in a fresh interpreter, since this test process has long imported
them all: it imports the CLI, runs each command in-process and reports which
of those libraries are loaded after it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HEAVY = (
    "sqlalchemy",
    "sqlmodel",
    "alembic",
    "fastapi",
    "uvicorn",
    "apscheduler",
    "httpx",
    "sendgrid",
)

# argv: the folder to work in, then the heavy module names. Prints one JSON
# list: [command, exit code, output, heavy modules loaded after it].
PROBE = """
import json, sys
from typer.testing import CliRunner

folder, heavy = sys.argv[1], sys.argv[2:]

def loaded():
    return sorted(name for name in heavy if name in sys.modules)

import nurture.cli.main

shop = folder + "/shop"
report = [["import nurture.cli.main", 0, "", loaded()]]
for args in (
    ["--help"],
    ["validate", "--help"],
    ["simulate", "--help"],
    ["init", shop],
    ["--dir", shop, "validate"],
    ["--dir", shop, "preview", "sales-process", "--step", "welcome"],
    ["--dir", shop, "simulate", "sales-process", "--start", "2026-11-27T15:30"],
):
    result = CliRunner().invoke(nurture.cli.main.app, args)
    report.append([" ".join(args), result.exit_code, result.output, loaded()])
print(json.dumps(report))
"""


def test_help_init_validate_preview_simulate_load_no_database_web_or_provider(
    tmp_path: Path,
) -> None:
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path), *HEAVY],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr
    report = json.loads(probe.stdout)
    assert len(report) == 8  # the import and every command above
    for command, exit_code, output, loaded in report:
        assert exit_code == 0, f"{command}: exit {exit_code}\n{output}"
        assert loaded == [], f"after `{command}`: {', '.join(loaded)} imported"
