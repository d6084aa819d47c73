"""``nurture stats`` through the real executable: the funnel with revenue
after a real dispatch and a purchase, as a table and as JSON; an unknown
sequence is exit 1; ``--rebuild`` gives the same figures."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.e2e.folders import enable_example
from tests.e2e.test_cli_engine import NOW, run

LATER = "2026-11-27T16:00:00Z"


@pytest.fixture
def work(tmp_path: Path, db_url: str) -> Path:
    assert run("init", "work", cwd=tmp_path, db_url=db_url).returncode == 0
    enable_example(tmp_path / "work")
    work = tmp_path / "work"
    added = run(
        "--now", NOW, "subscribers", "add", "karin@example.com", "--tz", "Europe/Stockholm",
        "--locale", "sv", "--tag", "b2b", cwd=work, db_url=db_url,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    sent = run("--now", NOW, "dispatch", "--once", cwd=work, db_url=db_url)
    assert "sent 1," in sent.stdout, sent.stdout + sent.stderr
    bought = run(
        "--now", LATER, "events", "add", "purchase", "--email", "karin@example.com",
        "--product", "sales-audit", "--amount", "19.99", "--currency", "SEK",
        "--order-id", "A-1", "--at", LATER, cwd=work, db_url=db_url,
    )  # fmt: skip
    assert bought.returncode == 0, bought.stderr
    return work


def test_stats_shows_the_funnel_with_revenue(work: Path, db_url: str) -> None:
    shown = run("stats", "sales-process", cwd=work, db_url=db_url)
    assert shown.returncode == 0, shown.stderr
    assert "sales-process" in shown.stdout and "welcome" in shown.stdout
    assert "19.99 SEK" in shown.stdout
    # One conversion of one sent: the count, and its rate on the line below.
    assert re.search(r"welcome +1 .* 1 .*\n.* 100.0%", shown.stdout), shown.stdout

    as_json = run("stats", "--json", cwd=work, db_url=db_url)
    assert as_json.returncode == 0, as_json.stderr
    [funnel] = json.loads(as_json.stdout)
    assert funnel["sequence"] == "sales-process"
    first = funnel["steps"][0]
    assert (first["step"], first["sent"], first["conversions"]) == ("welcome", 1, 1)
    assert first["revenue"] == {"SEK": "19.99"} and funnel["revenue"] == {"SEK": "19.99"}

    rebuilt = run("stats", "--json", "--rebuild", cwd=work, db_url=db_url)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert json.loads(rebuilt.stdout) == [funnel]
    assert "Rebuilt" in rebuilt.stderr


def test_an_unknown_sequence_is_exit_1(work: Path, db_url: str) -> None:
    answer = run("stats", "no-such-sequence", cwd=work, db_url=db_url)
    assert answer.returncode == 1
    assert "no sequence 'no-such-sequence'" in answer.stderr
    assert "Traceback" not in answer.stderr
