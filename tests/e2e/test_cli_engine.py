"""The engine through the real ``nurture`` executable: subscribers, dispatch,
plan, and ``nurture run`` serving /healthz while its worker sends."""

from __future__ import annotations

import email
import email.policy
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.folders import enable_example

NURTURE = [sys.executable, "-m", "nurture"]
NOW = "2026-11-27T14:30:00Z"  # Friday 15:30 in Stockholm


def env(db_url: str) -> dict[str, str]:
    values = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    values.update(COLUMNS="200", NURTURE_DATABASE_URL=db_url)
    return values


def run(*args: str, cwd: Path, db_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*NURTURE, *args], cwd=cwd, env=env(db_url), capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def work(tmp_path: Path, db_url: str) -> Path:
    assert run("init", "work", cwd=tmp_path, db_url=db_url).returncode == 0
    enable_example(tmp_path / "work")
    return tmp_path / "work"


def test_add_dispatch_and_read_the_outbox(work: Path, db_url: str) -> None:
    added = run(
        "--now", NOW, "subscribers", "add", "Karin@Example.com", "--name", "Karin Lindqvist",
        "--tz", "Europe/Stockholm", "--locale", "sv", "--tag", "b2b", cwd=work, db_url=db_url,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "enrolled in sales-process" in added.stdout
    first = run("--now", NOW, "dispatch", "--once", cwd=work, db_url=db_url)
    assert first.returncode == 0, first.stderr
    assert "sent 1," in first.stdout
    again = run("--now", NOW, "dispatch", cwd=work, db_url=db_url)
    assert "sent 0," in again.stdout
    [path] = sorted((work / "outbox").glob("*.eml"))
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert message["To"].addresses[0].addr_spec == "karin@example.com"
    assert message["Subject"] == "Välkommen, Karin!"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message.get_body(("plain",)) is not None and message.get_body(("html",)) is not None
    log = run("log", "--email", "karin@example.com", cwd=work, db_url=db_url)
    assert "welcome" in log.stdout and "sent" in log.stdout
    plan = run("--now", NOW, "plan", cwd=work, db_url=db_url)
    assert plan.returncode == 0, plan.stderr
    assert "every active enrollment is on the current version" in plan.stdout


def test_bad_now_is_a_clear_error(work: Path, db_url: str) -> None:
    result = run("--now", "2026-11-27T14:30", "dispatch", "--once", cwd=work, db_url=db_url)
    assert result.returncode == 2
    assert "has no time zone" in result.stderr


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_run_serves_healthz_and_sends(work: Path, db_url: str) -> None:
    assert run(
        "--now", NOW, "subscribers", "add", "jamie@example.com", "--tz", "America/New_York",
        "--tag", "b2b", cwd=work, db_url=db_url,
    ).returncode == 0  # fmt: skip
    port = free_port()
    values = env(db_url)
    values.update(NURTURE_NOW=NOW, NURTURE_DISPATCH_INTERVAL="0.5")
    process = subprocess.Popen(
        [*NURTURE, "run", "--port", str(port)], cwd=work, env=values,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        body: dict[str, object] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/healthz", timeout=2
                ) as answer:
                    body = json.loads(answer.read())
                if body.get("workers") and list((work / "outbox").glob("*.eml")):
                    break
            except OSError:
                pass
            time.sleep(0.3)
        assert body.get("status") == "ok", body
        assert body["database"] == {"status": "ok", "dialect": db_url.split(":")[0].split("+")[0]}
        workers = body["workers"]
        assert (
            isinstance(workers, list) and workers[0]["last_tick_at"] == "2026-11-27T14:30:00+00:00"
        )
        assert len(list((work / "outbox").glob("*.eml"))) == 1
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output


def test_worker_sends_and_stops_cleanly_on_sigterm(work: Path, db_url: str) -> None:
    assert run(
        "--now", NOW, "subscribers", "add", "karin@example.com", "--tag", "b2b",
        cwd=work, db_url=db_url,
    ).returncode == 0  # fmt: skip
    values = env(db_url)
    values.update(NURTURE_NOW=NOW, NURTURE_DISPATCH_INTERVAL="0.5")
    process = subprocess.Popen(
        [*NURTURE, "worker"], cwd=work, env=values,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list((work / "outbox").glob("*.eml")):
            time.sleep(0.2)
        assert len(list((work / "outbox").glob("*.eml"))) == 1
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert "finishing the emails in flight" in output
    assert "stopped" in output


def test_outside_text_is_printed_as_it_is(work: Path, db_url: str) -> None:
    # A name is never read as Rich markup: "[bold]" stays on screen.
    result = run("resume", "[bold]launch[/bold]", cwd=work, db_url=db_url)
    assert result.returncode == 1
    assert "[bold]launch[/bold] is not paused" in result.stderr
