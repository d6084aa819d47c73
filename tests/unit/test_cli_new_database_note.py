"""A command that creates a new SQLite database says so, once.

An operator on a server who forgot ``NURTURE_DATABASE_URL`` ran ``subscribers
show`` and ``admin create-user`` against a new, empty ``nurture.db`` beside
``nurture.toml``, and nothing said so: the admin could never log in.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from nurture.cli.main import app

NOTE = "note: no database at"


def _run(project: Path, *args: str) -> tuple[int, str, str]:
    done = CliRunner().invoke(app, ["-C", str(project), *args])
    return done.exit_code, done.stdout, done.stderr


def test_the_first_command_that_creates_the_database_says_so(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NURTURE_DATABASE_URL", raising=False)
    code, out, err = _run(project, "subscribers", "show", "karin@example.com")
    assert code == 1 and "no subscriber 'karin@example.com'" in out + err
    assert f"{NOTE} {project / 'nurture.db'}: creating a new, empty one" in " ".join(err.split())
    assert "set NURTURE_DATABASE_URL" in " ".join(err.split())
    assert NOTE not in out  # stderr only: output piped elsewhere stays clean
    assert (project / "nurture.db").is_file()
    code, out, err = _run(project, "subscribers", "show", "karin@example.com")
    assert code == 1 and NOTE not in err  # it exists now: nothing to say


def test_a_backup_creates_nothing_and_so_says_nothing_of_creating(
    project: Path, tmp_path: Path
) -> None:
    code, out, err = _run(project, "db", "backup", str(tmp_path / "copy.db"))
    assert code == 2 and "no database file at" in out + err
    assert NOTE not in out + err
    assert not (project / "nurture.db").exists()
