"""``nurture log`` through the real executable: its filters (step, date range)
and ``--json`` for scripts, and a bad date as exit 2 with a message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.folders import enable_example
from tests.e2e.test_cli_engine import run

FRIDAY = "2026-11-27T14:30:00Z"
MONDAY = "2026-11-30T10:00:00Z"


@pytest.fixture
def work(tmp_path: Path, db_url: str) -> Path:
    assert run("init", "work", cwd=tmp_path, db_url=db_url).returncode == 0
    enable_example(tmp_path / "work")
    return tmp_path / "work"


def _sent(folder: Path, db_url: str) -> None:
    """Karin's welcome on Friday, Jamie's on Monday."""
    for now, address in ((FRIDAY, "karin@example.com"), (MONDAY, "jamie@example.com")):
        added = run(
            "--now", now, "subscribers", "add", address, "--tag", "b2b", cwd=folder, db_url=db_url
        )
        assert added.returncode == 0, added.stderr
        sent = run("--now", now, "dispatch", cwd=folder, db_url=db_url)
        assert sent.returncode in (0, 1), sent.stderr


def _json(work: Path, db_url: str, *args: str) -> list[dict[str, object]]:
    shown = run("log", "--json", *args, cwd=work, db_url=db_url)
    assert shown.returncode == 0, shown.stderr
    rows = json.loads(shown.stdout)
    assert isinstance(rows, list)
    return rows


def test_log_filters_by_step_and_date_range(work: Path, db_url: str) -> None:
    _sent(work, db_url)
    everything = _json(work, db_url)
    welcomes = {(row["email"], row["step"], row["status"]) for row in everything}
    assert ("karin@example.com", "welcome", "sent") in welcomes
    assert ("jamie@example.com", "welcome", "sent") in welcomes
    assert all(set(row) >= {"id", "decided_at", "subject", "latest_event"} for row in everything)
    friday = _json(work, db_url, "--until", "2026-11-27")
    assert {row["email"] for row in friday} == {"karin@example.com"}
    saturday = _json(work, db_url, "--since", "2026-11-30T00:00:00Z", "--step", "welcome")
    assert [(row["email"], row["step"]) for row in saturday] == [("jamie@example.com", "welcome")]
    assert _json(work, db_url, "--step", "no-such-step") == []
    one = _json(work, db_url, "--limit", "1")
    assert len(one) == 1 and one[0]["email"] == "jamie@example.com"  # newest first
    # The table for people shows the same rows.
    shown = run("log", "--step", "welcome", "--since", "2026-11-30", cwd=work, db_url=db_url)
    assert shown.returncode == 0, shown.stderr
    assert "jamie@example.com" in shown.stdout and "karin@example.com" not in shown.stdout
    empty = run("log", "--until", "2026-01-01", cwd=work, db_url=db_url)
    assert "the send log is empty for these filters" in empty.stdout


def test_a_bad_date_is_exit_2_with_a_clear_message(work: Path, db_url: str) -> None:
    for option in ("--since", "--until"):
        refused = run("log", option, "last tuesday", cwd=work, db_url=db_url)
        assert refused.returncode == 2
        assert option in refused.stderr and "ISO 8601" in refused.stderr
        assert "Traceback" not in refused.stderr
