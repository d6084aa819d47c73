"""``nurture simulate``'s table in an 80-column terminal: the times were two
columns (local, UTC) that left the reasons 15 characters, six lines a step.
Local time and UTC now share one column, a line each, and no step id, time
or header is cut short."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from nurture.cli.main import app


def test_the_timeline_fits_80_columns_with_local_time_over_utc(project: Path) -> None:
    shown = CliRunner().invoke(
        app,
        ["--dir", str(project), "simulate", "sales-process", "--start", "2026-11-27T15:30",
         "--tz", "Europe/Stockholm"],
        env={"COLUMNS": "80"},
    )  # fmt: skip
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert all(len(line) <= 80 for line in lines), shown.output
    assert "…" not in shown.output
    header = next(line for line in lines if "step" in line and "why" in line)
    assert header.split() == ["step", "when", "(local,", "then", "UTC)", "action", "why"]
    row = next(i for i, line in enumerate(lines) if line.strip().startswith("three-models"))
    assert "Mon 2026-11-30 09:30 CET" in lines[row] and "send" in lines[row]
    assert lines[row + 1].split()[:3] == ["2026-11-30", "08:30", "UTC"]
    # The reason keeps the rest of the width: four lines for this one (it
    # took seven when the times were two columns).
    assert "moved from Sun 2026-11-29" in lines[row]
    assert "sending day" in lines[row + 3]
    assert lines[row + 4].strip().startswith("choosing")
