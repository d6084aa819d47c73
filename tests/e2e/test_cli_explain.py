"""``nurture explain EMAIL`` through the real executable, after real dispatch
passes (run in this process with the dispatcher ``nurture dispatch`` runs)."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from nurture.core.loader import load_sequence_file
from nurture.core.simulation import simulate
from nurture.core.subscriber import Subscriber
from tests.e2e.test_cli_engine import NURTURE, env, run
from tests.e2e.test_cli_plan import FRIDAY, add, dispatch_in_process, make_work


def test_explain_prints_the_timeline_and_its_json(tmp_path: Path, db_url: str) -> None:
    work = make_work(tmp_path)
    add(work, db_url, FRIDAY, ("karin@example.com", "Europe/Stockholm"))
    dispatch_in_process(work, db_url, FRIDAY)  # the welcome goes out
    now = FRIDAY.isoformat()

    shown = run("--now", now, "explain", "Karin@Example.com", cwd=work, db_url=db_url)
    assert shown.returncode == 0, shown.stderr
    assert "sales-process: active" in shown.stdout
    assert "three-models" in shown.stdout and "pending" in shown.stdout
    assert "Sun is not a sending day" in shown.stdout
    assert "(projected)" in shown.stdout
    # An 80-column terminal: what happened over when, in one column, neither
    # folded, and every line within 80 (the due line was cut at 80 in the
    # middle of its zone, and the when column folded "CET" to a line of its
    # own, leaving the reasons 20 characters).
    narrow = subprocess.run(
        [*NURTURE, "--now", now, "explain", "karin@example.com"],
        cwd=work, env={**env(db_url), "COLUMNS": "80"}, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert narrow.returncode == 0, narrow.stderr
    lines = narrow.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), narrow.stdout
    row = next(i for i, line in enumerate(lines) if line.startswith("three-models"))
    assert lines[row].split("│")[1].strip() == "pending", narrow.stdout
    assert lines[row + 1].split("│")[1].strip() == "Mon 2026-11-30 09:30 CET", narrow.stdout
    assert "  next due Mon 2026-11-30 09:30 CET (Europe/Stockholm)" in lines

    data = run("--now", now, "explain", "karin@example.com", "--json", cwd=work, db_url=db_url)
    assert data.returncode == 0, data.stderr
    report = json.loads(data.stdout)
    [enrollment] = report["enrollments"]
    states = {line["step"]: line["state"] for line in enrollment["steps"]}
    assert states == {
        "welcome": "sent",
        "three-models": "pending",
        "choosing": "would send",
        "case-study": "would send",
        "offer": "would send",
    }
    loaded, _ = load_sequence_file(work / "sequences" / "sales-process.yaml")
    assert loaded is not None
    view = Subscriber("karin@example.com", "Test Person", locale="en", timezone="Europe/Stockholm")
    expected = simulate(loaded.sequence, view, FRIDAY)[1].at.astimezone(UTC)
    due = datetime.fromisoformat(enrollment["next_due_at"].replace("Z", "+00:00"))
    assert due == expected


def test_a_left_sequence_has_nothing_due_and_says_so(tmp_path: Path, db_url: str) -> None:
    work = make_work(tmp_path)
    add(work, db_url, FRIDAY, ("karin@example.com", "Europe/Stockholm"))
    left = run(
        "subscribers", "unsubscribe", "karin@example.com", "--sequence", "sales-process",
        cwd=work, db_url=db_url,
    )  # fmt: skip
    assert left.returncode == 0, left.stderr

    shown = run(
        "--now", FRIDAY.isoformat(), "explain", "karin@example.com", cwd=work, db_url=db_url
    )

    assert shown.returncode == 0, shown.stderr
    assert "sales-process: exited" in shown.stdout
    # It said "next due - (Europe/Stockholm)": a zone for no time at all.
    assert "  nothing more is due" in shown.stdout.splitlines()
    assert "next due" not in shown.stdout
    # Why it ended is said once, on the enrollment's line, not again on each
    # of the five steps it never reached.
    assert shown.stdout.count("unsubscribed from this sequence") == 1, shown.stdout
    assert shown.stdout.count("the enrollment ended first (exited)") == 5, shown.stdout


def test_an_unknown_address_is_a_clear_error(tmp_path: Path, db_url: str) -> None:
    work = make_work(tmp_path)
    missing = run("explain", "nobody@example.com", cwd=work, db_url=db_url)
    assert missing.returncode == 1
    assert "no subscriber nobody@example.com" in missing.stderr
    assert "Traceback" not in missing.stderr
    bad = run("explain", "not an address", cwd=work, db_url=db_url)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
