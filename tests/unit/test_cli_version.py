"""``nurture --version``: which nurture, and which database schema it migrates to."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nurture.cli.main import app
from nurture.store.migrate import head_revision


def test_version_names_the_package_and_its_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no project here: nothing is read or created
    done = CliRunner().invoke(app, ["--version"])
    assert done.exit_code == 0, done.output
    assert (
        done.stdout.strip() == f"nurture {version('nurture')} (database schema {head_revision()})"
    )
    assert head_revision() is not None and list(tmp_path.iterdir()) == []
