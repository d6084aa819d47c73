"""``nurture subscribers export|erase`` through the real executable: everything
held about a person, then its erasure, after which the address is never
enrolled again, whether added by hand or imported."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.e2e.folders import enable_example
from tests.e2e.test_cli_engine import NOW, NURTURE, env, run


@pytest.fixture
def work(tmp_path: Path, db_url: str) -> Path:
    assert run("init", "work", cwd=tmp_path, db_url=db_url).returncode == 0
    enable_example(tmp_path / "work")
    return tmp_path / "work"


def _count(db_url: str, sql: str) -> int:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(sql)).scalar_one())
    finally:
        engine.dispose()


def test_export_then_erase_keeps_the_address_suppressed_by_its_hash(
    work: Path, db_url: str
) -> None:
    added = run(
        "--now", NOW, "subscribers", "add", "Karin@Example.com", "--name", "Karin",
        "--tag", "b2b", "--consent", "Send me the course", cwd=work, db_url=db_url,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert run("--now", NOW, "dispatch", "--once", cwd=work, db_url=db_url).returncode == 0

    exported = run("subscribers", "export", "karin@example.com", cwd=work, db_url=db_url)
    assert exported.returncode == 0, exported.stderr
    data = json.loads(exported.stdout)
    assert data["subscriber"]["email"] == "karin@example.com"
    assert data["subscriber"]["consent_text"] == "Send me the course"
    assert [e["sequence_id"] for e in data["enrollments"]] == ["sales-process"]
    assert [s["step_id"] for s in data["sends"]] == ["welcome"]
    assert data["sends"][0]["status"] == "sent"
    assert data["suppression"] == []

    declined = subprocess.run(
        [*NURTURE, "subscribers", "erase", "karin@example.com"],
        cwd=work, env=env(db_url), capture_output=True, text=True, input="n\n", timeout=120,
    )  # fmt: skip
    assert declined.returncode == 1
    assert _count(db_url, "SELECT count(*) FROM subscriber") == 1

    erased = run("subscribers", "erase", "karin@example.com", "--yes", cwd=work, db_url=db_url)
    assert erased.returncode == 0, erased.stderr
    assert "Erased karin@example.com" in erased.stdout
    for table in ("subscriber", "enrollment", "send"):
        assert _count(db_url, f"SELECT count(*) FROM {table}") == 0, table
    digest = hashlib.sha256(b"karin@example.com").hexdigest()
    assert _count(db_url, f"SELECT count(*) FROM suppression WHERE email = 'sha256:{digest}'") == 1
    assert _count(db_url, "SELECT count(*) FROM suppression WHERE email LIKE '%karin%'") == 0

    # Back by hand, then by import: stored, never enrolled.
    again = run(
        "--now", NOW, "subscribers", "add", "karin@example.com", "--tag", "b2b",
        cwd=work, db_url=db_url,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "not enrolled: the address is on the suppression list" in again.stdout
    (work / "leads.csv").write_text("email,tags\nKARIN@example.com,b2b\n", "utf-8")
    imported = run("--now", NOW, "subscribers", "import", "leads.csv", cwd=work, db_url=db_url)
    assert imported.returncode == 0, imported.stderr
    assert _count(db_url, "SELECT count(*) FROM enrollment") == 0


def test_export_of_an_unknown_address_fails(work: Path, db_url: str) -> None:
    missing = run("subscribers", "export", "nobody@example.com", cwd=work, db_url=db_url)
    assert missing.returncode == 1
    assert "nothing is held about 'nobody@example.com'" in missing.stderr
    bad = run("subscribers", "erase", "not-an-address", "--yes", cwd=work, db_url=db_url)
    assert bad.returncode == 1
    assert "invalid email address" in bad.stderr
