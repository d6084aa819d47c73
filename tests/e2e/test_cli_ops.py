"""The operations commands through the real ``nurture`` executable: ``doctor``,
``db backup`` (and restoring what it wrote), and ``--log-format json``."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from nurture.store.db import autovacuum_enabled, make_engine
from nurture.testing import FakeSendGrid
from tests.e2e.folders import PUBLIC_BASE_URL, enable_example
from tests.factories import POSTAL_ADDRESS

NURTURE = [sys.executable, "-m", "nurture"]
NOW = "2026-11-27T14:30:00Z"  # Friday 15:30 in Stockholm
API_KEY = "SG.e2e-doctor-key.e2e-S3cret-Part"


def env(db_url: str, **extra: str) -> dict[str, str]:
    values = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    values.update(COLUMNS="200", NURTURE_DATABASE_URL=db_url, **extra)
    return values


def run(*args: str, cwd: Path, db_url: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*NURTURE, *args],
        cwd=cwd,
        env=env(db_url, **extra),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def work(tmp_path: Path, db_url: str) -> Path:
    assert run("init", "work", cwd=tmp_path, db_url=db_url).returncode == 0
    enable_example(tmp_path / "work")
    return tmp_path / "work"


def autovacuum_on(db_url: str) -> bool:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return bool(autovacuum_enabled(conn))
    finally:
        engine.dispose()


def doctor(work: Path, db_url: str, **extra: str) -> tuple[int, dict[str, dict[str, str]]]:
    done = run("doctor", "--json", "--skip-dns", "--timeout", "2", cwd=work, db_url=db_url, **extra)
    report = json.loads(done.stdout)
    assert report["status"] in ("ok", "warn", "fail")
    return done.returncode, {check["name"]: check for check in report["checks"]}


def test_doctor_says_what_to_fix_and_exits_1_on_a_failure(work: Path, db_url: str) -> None:
    code, checks = doctor(work, db_url)
    assert code == 1
    assert checks["database"]["status"] == "fail"
    assert "nurture db upgrade" in checks["database"]["fix"]
    assert checks["configuration"]["status"] == "ok"
    # init's placeholders (the sender, the postal address) are validate's warnings.
    assert checks["sequences"]["status"] == "warn"
    assert checks["sequences"]["detail"].startswith("1 enabled: sales-process;")
    assert checks["transport"]["status"] == "ok"  # the outbox folder can be written
    assert checks["dns"]["status"] == "skip"

    assert run("db", "upgrade", cwd=work, db_url=db_url).returncode == 0
    code, checks = doctor(work, db_url)
    assert checks["database"]["status"] == "ok", checks["database"]
    assert "migrations at head" in checks["database"]["detail"]
    if db_url.startswith("postgresql"):  # what the server says, either way
        expected = "ok" if autovacuum_on(db_url) else "warn"
        assert checks["database maintenance"]["status"] == expected, checks
    else:
        assert "database maintenance" not in checks
    # localhost base_url with the outbox: a warning, nothing listening: a warning.
    assert checks["base_url"]["status"] == "warn"
    assert checks["base_url answers"]["status"] == "warn"
    assert code == 0

    printed = run("doctor", "--skip-dns", "--timeout", "1", cwd=work, db_url=db_url)
    assert printed.returncode == 0
    assert "ok    database" in printed.stdout
    assert "fix: " in printed.stdout
    assert "0 failed" in printed.stdout


def test_doctor_checks_sendgrid_with_a_sandbox_request(work: Path, db_url: str) -> None:
    assert run("db", "upgrade", cwd=work, db_url=db_url).returncode == 0
    with FakeSendGrid(api_key=API_KEY) as fake:
        settings = {
            "NURTURE_TRANSPORT": "sendgrid",
            "NURTURE_SENDGRID_API_HOST": fake.url,
            "NURTURE_BASE_URL": PUBLIC_BASE_URL,
            "NURTURE_POSTAL_ADDRESS": POSTAL_ADDRESS,
        }
        code, checks = doctor(work, db_url, NURTURE_SENDGRID_API_KEY=API_KEY, **settings)
        assert checks["transport"]["status"] == "ok", checks["transport"]
        assert "sandbox" in checks["transport"]["detail"]
        assert checks["base_url"]["status"] == "ok"
        assert fake.delivered == [] and len(fake.requests) == 1
        assert code == 0

        wrong = "SG.wrong-key.nope"
        code, checks = doctor(work, db_url, NURTURE_SENDGRID_API_KEY=wrong, **settings)
        assert code == 1
        assert checks["transport"]["status"] == "fail"
        assert wrong not in json.dumps(checks)


def test_doctor_reports_a_broken_configuration(work: Path, db_url: str) -> None:
    (work / "nurture.toml").write_text('batch_size = "many"\n', encoding="utf-8")
    code, checks = doctor(work, db_url)
    assert code == 2  # as every command's configuration error; the JSON still says why
    assert list(checks) == ["configuration"]
    assert checks["configuration"]["status"] == "fail"
    assert "batch_size" in checks["configuration"]["detail"]


def table_counts(path: Path) -> dict[str, list[tuple[object, ...]]]:
    with sqlite3.connect(path) as conn:
        names = [
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        ]
        return {name: sorted(conn.execute(f'SELECT * FROM "{name}"'), key=repr) for name in names}


def test_backup_copies_a_live_database_and_restores(
    work: Path, db_url: str, tmp_path: Path
) -> None:
    added = run(
        "--now", NOW, "subscribers", "add", "karin@example.com", "--tag", "b2b",
        "--tz", "Europe/Stockholm", cwd=work, db_url=db_url,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert run("--now", NOW, "dispatch", cwd=work, db_url=db_url).returncode == 0
    target = tmp_path / "backups" / "nurture.db"  # the folder is made

    if db_url.startswith("postgresql"):
        done = run("db", "backup", str(target), cwd=work, db_url=db_url)
        assert done.returncode == 2
        # The folder is missing: the line makes it, as the SQLite backup would.
        assert done.stdout.startswith(f"mkdir -p {target.parent} && pg_dump ")
        assert "--format=custom" in done.stdout and str(target) in done.stdout
        assert not target.exists()
        if shutil.which("pg_dump") is not None:  # the line works as printed
            dumped = subprocess.run(
                done.stdout.strip(), shell=True, capture_output=True, text=True, timeout=120
            )
            assert dumped.returncode == 0, dumped.stderr
            assert target.read_bytes().startswith(b"PGDMP")  # pg_dump's custom format
            again = run("db", "backup", str(target), cwd=work, db_url=db_url)
            assert again.stdout.startswith("pg_dump ")  # the folder is there now
        return

    source = Path(db_url.removeprefix("sqlite:///"))
    # Another process keeps writing while the copy is made (as a worker would).
    stop = threading.Event()

    def write() -> None:
        with sqlite3.connect(source, timeout=30) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS scratch (n INTEGER)")
            while not stop.wait(0.002):
                conn.execute("INSERT INTO scratch VALUES (1)")
                conn.commit()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        done = run("db", "backup", str(target), cwd=work, db_url=db_url)
    finally:
        stop.set()
        writer.join()
    assert done.returncode == 0, done.stderr
    assert "backed up" in done.stdout and "made the folder" in done.stdout
    with sqlite3.connect(target) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)

    again = run("db", "backup", str(target), cwd=work, db_url=db_url)
    assert again.returncode == 2
    assert "--force" in again.stderr
    assert run("db", "backup", str(target), "--force", cwd=work, db_url=db_url).returncode == 0

    # Restore: the worker stopped, the file copied back over the database.
    expected = table_counts(source)
    assert expected["send"] and expected["subscriber"]
    source.unlink()
    for suffix in ("-wal", "-shm"):
        Path(f"{source}{suffix}").unlink(missing_ok=True)
    source.write_bytes(target.read_bytes())
    assert table_counts(source) == expected
    listed = run("log", cwd=work, db_url=db_url)
    assert listed.returncode == 0 and "karin@example.com" in listed.stdout


def test_json_logs_from_the_command_line(work: Path, db_url: str) -> None:
    run(
        "--now",
        NOW,
        "subscribers",
        "add",
        "bo@example.com",
        "--tag",
        "b2b",
        cwd=work,
        db_url=db_url,
    )
    # A broken sequence file: loading the sequences logs it (action config.invalid).
    (work / "sequences" / "broken.yaml").write_text("version: 1\nid: broken\n", encoding="utf-8")
    for args, extra in (
        (("--log-format", "json"), {}),
        ((), {"NURTURE_LOG_FORMAT": "json"}),
    ):
        done = run(*args, "-v", "--now", NOW, "dispatch", cwd=work, db_url=db_url, **extra)
        assert done.returncode == 0, done.stderr
        records = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
        assert records, done.stderr
        assert all(
            set(record) >= {"time", "level", "logger", "action", "message"} for record in records
        )
    bad = run("--log-format", "xml", "schema", cwd=work, db_url=db_url)
    assert bad.returncode == 2 and "--log-format" in bad.stderr
