"""Fixtures the unit tests of the CLI share."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from nurture.cli.main import app


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder made by ``nurture init shop`` (the example sequence, disabled)."""
    monkeypatch.chdir(tmp_path)
    made = CliRunner().invoke(app, ["init", "shop"])
    assert made.exit_code == 0, made.output
    return tmp_path / "shop"
