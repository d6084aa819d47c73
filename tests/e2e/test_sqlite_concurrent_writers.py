"""Three kinds of process writing one SQLite file at once — the web app (the
ingest API), the worker and the command line — never lose a write and never
crash: every connection waits on a busy timeout, and WAL lets readers go on.

``nurture run`` (web and worker in one process) and a second ``nurture
worker`` dispatch while a thread posts subscribers to the API and another
runs ``nurture subscribers add`` over and over. Afterwards every acknowledged
write is in the database, every enrolled subscriber got exactly one welcome
email, and no process logged "database is locked".
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import text

from nurture.store.db import make_engine
from tests.e2e.folders import enable_example
from tests.e2e.test_cli_engine import NOW, NURTURE, env, free_port, run

API_PEOPLE = 40
CLI_PEOPLE = 6


@pytest.mark.timeout(400)
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_web_worker_and_cli_share_one_sqlite_file(tmp_path: Path, db_url: str) -> None:
    assert run("init", "work", cwd=tmp_path, db_url=db_url).returncode == 0
    work = tmp_path / "work"
    enable_example(work)
    created = run("tokens", "create", "site", cwd=work, db_url=db_url)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    port = free_port()
    values = env(db_url)
    values.update(NURTURE_NOW=NOW, NURTURE_DISPATCH_INTERVAL="0.2")
    processes = [
        subprocess.Popen(
            [*NURTURE, *command],
            cwd=work,
            env=values,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for command in (["run", "--port", str(port)], ["worker"])
    ]
    api_ok: list[str] = []
    cli_ok: list[str] = []
    problems: list[str] = []

    def post_subscribers() -> None:
        deadline = time.monotonic() + 60
        for n in range(API_PEOPLE):
            address = f"api{n}@example.com"
            body = {
                "email": address, "tags": ["b2b"], "confirmed": True,
                "consent": {"source": "test", "text": "yes"},
            }  # fmt: skip
            while time.monotonic() < deadline:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/api/v1/subscribers",
                    data=json.dumps(body).encode(),
                    headers={"Authorization": f"Bearer {token}"},
                    method="POST",
                )
                try:
                    with urllib.request.urlopen(request, timeout=30) as answer:
                        if answer.status in (200, 201):
                            api_ok.append(address)
                    break
                except urllib.error.HTTPError as error:
                    problems.append(f"{address}: HTTP {error.code} {error.read()[:200]!r}")
                    break
                except OSError:
                    time.sleep(0.2)  # the app is still starting

    def add_on_the_command_line() -> None:
        for n in range(CLI_PEOPLE):
            address = f"cli{n}@example.com"
            added = run("--now", NOW, "subscribers", "add", address, "--tag", "b2b",
                        cwd=work, db_url=db_url)  # fmt: skip
            if added.returncode == 0:
                cli_ok.append(address)
            else:
                problems.append(f"{address}: exit {added.returncode}: {added.stderr[-300:]}")

    threads = [
        threading.Thread(target=post_subscribers),
        threading.Thread(target=add_on_the_command_line),
    ]
    outputs: list[str] = []
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=240)
        want = set(api_ok) | set(cli_ok)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(_sent_to(db_url)) < len(want):
            time.sleep(0.5)
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            output, _ = process.communicate(timeout=60)
            outputs.append(output)
    assert problems == []
    assert len(api_ok) == API_PEOPLE and len(cli_ok) == CLI_PEOPLE
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output[-2000:]
        assert "database is locked" not in output, output[-2000:]
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            stored = {row[0] for row in conn.execute(text("SELECT email FROM subscriber"))}
    finally:
        engine.dispose()
    assert want <= stored  # every acknowledged write is there
    sent = _sent_to(db_url)
    assert sorted(sent) == sorted(want)  # each one welcome email, exactly once
    outbox = list((work / "outbox").glob("*.eml"))
    assert len(outbox) == len(want)


def _sent_to(db_url: str) -> list[str]:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT subscriber.email FROM send JOIN subscriber"
                    " ON subscriber.id = send.subscriber_id WHERE send.status = 'sent'"
                )
            )
            return [row[0] for row in rows]
    finally:
        engine.dispose()
