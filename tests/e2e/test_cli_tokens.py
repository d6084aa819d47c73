"""``nurture tokens create|list|revoke`` through the real executable: the token
is printed once and stored only as its SHA-256; ``list`` never shows it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.e2e.test_cli_engine import run


@pytest.fixture
def work(tmp_path: Path, db_url: str) -> Path:
    assert run("init", "work", cwd=tmp_path, db_url=db_url).returncode == 0
    return tmp_path / "work"


def _stored(db_url: str) -> list[tuple[str, str, str]]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT name, scope, token_hash FROM api_token ORDER BY id"))
            return [(row.name, row.scope, row.token_hash) for row in rows]
    finally:
        engine.dispose()


def test_a_token_is_shown_once_stored_hashed_listed_and_revoked(work: Path, db_url: str) -> None:
    created = run("tokens", "create", "website", cwd=work, db_url=db_url)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("nrt_") and len(token) > 40
    assert "shown only now" in created.stderr

    admin = run("tokens", "create", "ops", "--scope", "admin", cwd=work, db_url=db_url)
    assert admin.returncode == 0, admin.stderr
    stored = _stored(db_url)
    assert stored[0] == ("website", "ingest", hashlib.sha256(token.encode()).hexdigest())
    assert stored[1][:2] == ("ops", "admin")

    listed = run("tokens", "list", cwd=work, db_url=db_url)
    assert listed.returncode == 0, listed.stderr
    assert "website" in listed.stdout and "ops" in listed.stdout and "admin" in listed.stdout
    assert token not in listed.stdout and stored[0][2] not in listed.stdout

    again = run("tokens", "create", "website", cwd=work, db_url=db_url)
    assert again.returncode == 1
    assert "exists" in again.stderr

    bad_scope = run("tokens", "create", "x", "--scope", "root", cwd=work, db_url=db_url)
    assert bad_scope.returncode == 1
    assert "scope must be one of ingest, admin" in bad_scope.stderr

    revoked = run("tokens", "revoke", "website", cwd=work, db_url=db_url)
    assert revoked.returncode == 0, revoked.stderr
    assert [name for name, _, _ in _stored(db_url)] == ["ops"]

    missing = run("tokens", "revoke", "website", cwd=work, db_url=db_url)
    assert missing.returncode == 1
    assert "no token called 'website'" in missing.stderr
