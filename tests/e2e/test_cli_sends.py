"""``nurture sends list`` and ``nurture sends resolve`` through the real
executable: a send left ``unknown`` by a provider that never answered is
found, resent once at the next pass, and cannot be resolved twice."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nurture.testing.fake_sendgrid import FakeSendGrid
from tests.e2e.folders import enable_example, public_settings

NURTURE = [sys.executable, "-m", "nurture"]
NOW = "2026-11-27T14:30:00Z"  # Friday 15:30 in Stockholm
LATER = "2026-11-27T15:30:00Z"
API_KEY = "SG.e2e-sends-key.not-a-real-one"


@pytest.fixture
def fake() -> Iterator[FakeSendGrid]:
    with FakeSendGrid(api_key=API_KEY) as server:
        yield server


@pytest.fixture
def work(tmp_path: Path, db_url: str, fake: FakeSendGrid) -> Path:
    assert run("init", "work", cwd=tmp_path, db_url=db_url).returncode == 0
    folder = tmp_path / "work"
    enable_example(folder)
    toml = folder / "nurture.toml"
    sendgrid = f'transport = "sendgrid"\nsendgrid_api_host = "{fake.url}"\nsendgrid_timeout = 0.5'
    text = toml.read_text("utf-8").replace('transport = "outbox"', sendgrid)
    toml.write_text(public_settings(text), "utf-8")
    return folder


def run(*args: str, cwd: Path, db_url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    env.update(COLUMNS="80", NURTURE_DATABASE_URL=db_url, NURTURE_SENDGRID_API_KEY=API_KEY)
    return subprocess.run(
        [*NURTURE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_an_unknown_send_is_listed_resent_once_and_settled(
    work: Path, db_url: str, fake: FakeSendGrid
) -> None:
    added = run(
        "--now", NOW, "subscribers", "add", "karin@example.com", "--tag", "b2b",
        cwd=work, db_url=db_url,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    fake.enqueue("hang", seconds=3.0)  # longer than the client's timeout: ambiguous
    first = run("--now", NOW, "dispatch", "--once", cwd=work, db_url=db_url)
    assert first.returncode == 1, first.stderr  # a send whose outcome is unknown
    assert "unknown 1" in first.stdout, first.stdout
    assert "unknown 1, first: karin@example.com (sales-process/welcome): " in first.stdout

    listed = run("sends", "list", "--status", "unknown", cwd=work, db_url=db_url)
    assert listed.returncode == 0, listed.stderr
    assert "karin@example.com" in listed.stdout
    assert max(len(line) for line in listed.stdout.splitlines()) <= 80, listed.stdout
    [send_id] = re.findall(r"^\s*(\d+)\s+\d{4}-\d\d-\d\d ", listed.stdout, re.MULTILINE)
    # The address over its sequence/step, neither folded.
    lines = listed.stdout.splitlines()
    row = next(i for i, line in enumerate(lines) if "karin@example.com" in line)
    assert lines[row + 1].split() == ["sales-process/welcome"], listed.stdout

    no_flag = run("sends", "resolve", send_id, "--why", "x", cwd=work, db_url=db_url)
    assert no_flag.returncode == 2
    assert "exactly one of --as-sent, --resend, --give-up" in no_flag.stderr

    resolved = run(
        "--now", LATER, "sends", "resolve", send_id, "--resend",
        "--why", "not in SendGrid's activity feed", "--by", "ops",
        cwd=work, db_url=db_url,
    )  # fmt: skip
    assert resolved.returncode == 0, resolved.stderr
    assert f"send {send_id} (sales-process/welcome): will be sent again" in resolved.stdout

    again = run("--now", LATER, "dispatch", "--once", cwd=work, db_url=db_url)
    assert again.returncode == 0, again.stderr
    assert "sent 1," in again.stdout, again.stdout
    assert len(fake.delivered) == 1

    twice = run("sends", "resolve", send_id, "--as-sent", "--why", "again", cwd=work, db_url=db_url)
    assert twice.returncode == 1
    assert "is sent: only unknown sends can be resolved" in twice.stderr
    listed = run("sends", "list", cwd=work, db_url=db_url)
    assert re.search(rf"{send_id}\s.*karin@example.com.*\ssent\s", listed.stdout), listed.stdout

    nothing = run(
        "sends", "resolve", "--all-unknown", "--give-up", "--why", "none left",
        cwd=work, db_url=db_url,
    )  # fmt: skip
    assert nothing.returncode == 0, nothing.stderr
    assert "no unknown sends" in nothing.stdout
