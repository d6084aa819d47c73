"""Hostile values through the real ``nurture`` executable: a subscriber row whose
name and subject value carry CR/LF and terminal escapes (written straight to the
database, past the input checks, as an older version or another tool might
have), and a provider whose error echoes the API key."""

from __future__ import annotations

import email
import email.policy
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import Session, select

from nurture.store.db import make_engine
from nurture.store.tables import SendRow, SubscriberRow
from nurture.testing import FakeSendGrid
from tests.e2e.folders import PUBLIC_BASE_URL, enable_example
from tests.e2e.test_cli_engine import NOW, NURTURE, env, run
from tests.factories import POSTAL_ADDRESS

HOSTILE_NAME = "Anna\r\nBcc: everyone@example.com\x1b[31m\x1b]0;owned\x07"
# A key in no format the patterns know (not "SG.x.y", no "Bearer").
API_KEY = "sk_live_7Hq2-Zx9Lp4vW8nT"


@pytest.fixture
def work(tmp_path: Path, db_url: str) -> Iterator[Path]:
    assert run("init", "work", cwd=tmp_path, db_url=db_url).returncode == 0
    folder = tmp_path / "work"
    enable_example(folder)
    added = run(
        "--now", NOW, "subscribers", "add", "anna@example.com", "--name", "Anna",
        "--tag", "b2b", cwd=folder, db_url=db_url,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    yield folder


def _make_hostile(db_url: str) -> None:
    """Give Anna's row a name and first name (the welcome subject's value) no input allows."""
    engine = make_engine(db_url)
    try:
        with Session(engine) as session:
            row = session.exec(select(SubscriberRow)).one()
            row.name = HOSTILE_NAME
            row.first_name = HOSTILE_NAME
            row.attributes = {"note": "\x1b[2J\x1b[Hcleared"}
            session.add(row)
            session.commit()
    finally:
        engine.dispose()


def _reasons(db_url: str) -> list[str | None]:
    engine = make_engine(db_url)
    try:
        with Session(engine) as session:
            return list(session.exec(select(SendRow.reason)).all())
    finally:
        engine.dispose()


def _no_terminal_controls(text: str) -> bool:
    return not any((ord(c) < 32 and c not in "\n") or 0x7F <= ord(c) <= 0x9F for c in text)


def test_controls_in_a_stored_name_reach_neither_headers_nor_the_terminal(
    work: Path, db_url: str
) -> None:
    _make_hostile(db_url)
    sent = run("--now", NOW, "dispatch", "--once", cwd=work, db_url=db_url)
    assert sent.returncode == 0, sent.stderr
    assert "sent 1," in sent.stdout

    [path] = sorted((work / "outbox").glob("*.eml"))
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert message["Bcc"] is None
    subject = str(message["Subject"])
    assert subject.startswith("Welcome, Anna Bcc: everyone@example.com") or subject.startswith(
        "Välkommen, Anna Bcc: everyone@example.com"
    ), subject
    assert _no_terminal_controls(subject) and "\n" not in subject
    to_name = message["To"].addresses[0].display_name
    assert "\r" not in to_name and "\x1b" not in to_name

    # Everything printed escapes the controls: visible, not obeyed.
    for args in (
        ("subscribers", "list"),
        ("subscribers", "show", "anna@example.com"),
        ("log",),
    ):
        shown = run(*args, cwd=work, db_url=db_url)
        assert shown.returncode == 0, (args, shown.stderr)
        assert _no_terminal_controls(shown.stdout), (args, shown.stdout)
        if args[0] == "subscribers":
            assert "\\x1b[31m" in shown.stdout, (args, shown.stdout)


def test_controls_in_a_stored_name_do_not_fail_a_sendgrid_send(work: Path, db_url: str) -> None:
    # A CR/LF name used to make SendGrid refuse every send to it, counting
    # against the sequence's error budget.
    _make_hostile(db_url)
    with FakeSendGrid(api_key=API_KEY) as fake:
        values = {
            "NURTURE_TRANSPORT": "sendgrid",
            "NURTURE_SENDGRID_API_KEY": API_KEY,
            "NURTURE_SENDGRID_API_HOST": fake.url,
            "NURTURE_BASE_URL": PUBLIC_BASE_URL,
            "NURTURE_POSTAL_ADDRESS": POSTAL_ADDRESS,
        }
        sent = _run_with(values, work, db_url, "--now", NOW, "dispatch", "--once")
        assert sent.returncode == 0, sent.stderr
        assert "sent 1," in sent.stdout, sent.stdout
        [body] = fake.delivered
    recipient = body["personalizations"][0]["to"][0]
    assert "\r" not in recipient.get("name", "") and "\x1b" not in recipient.get("name", "")
    assert "\n" not in body["subject"] and "\x1b" not in body["subject"]


def _run_with(
    extra: dict[str, str], cwd: Path, db_url: str, *args: str
) -> subprocess.CompletedProcess[str]:
    values = env(db_url)
    values.update(extra)
    return subprocess.run(
        [*NURTURE, *args], cwd=cwd, env=values, capture_output=True, text=True, timeout=120
    )


def test_a_provider_error_echoing_the_key_is_redacted_by_value(work: Path, db_url: str) -> None:
    with FakeSendGrid() as fake:
        # The error a misconfigured proxy or provider might give: the key, verbatim.
        fake.enqueue("400", message=f"the key {API_KEY} may not send from this address")
        values = {
            "NURTURE_TRANSPORT": "sendgrid",
            "NURTURE_SENDGRID_API_KEY": API_KEY,
            "NURTURE_SENDGRID_API_HOST": fake.url,
            "NURTURE_BASE_URL": PUBLIC_BASE_URL,
            "NURTURE_POSTAL_ADDRESS": POSTAL_ADDRESS,
        }
        sent = _run_with(values, work, db_url, "--now", NOW, "dispatch", "--once")
        assert fake.stats()["received"] == 1
    assert API_KEY not in sent.stdout + sent.stderr
    [reason] = _reasons(db_url)
    assert reason is not None and "may not send from this address" in reason
    assert API_KEY not in reason and "[redacted]" in reason
    shown = run("log", cwd=work, db_url=db_url)
    assert shown.returncode == 0, shown.stderr
    assert "[redacted]" in shown.stdout and API_KEY not in shown.stdout
    # Nor any prefix of it long enough to matter (cut-off provider text).
    assert API_KEY[:8] not in shown.stdout and API_KEY[:8] not in reason
