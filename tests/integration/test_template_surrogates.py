"""A lone surrogate a template makes (``{{ '\\ud800' }}``) fails that one email
at dispatch, ``failed: could not render``, never ``unknown``.

No UTF-8 can carry it, so the email could never have reached a provider.
Found only when the outbox wrote the bytes, inside the provider call, it read
as an unexpected transport error: ``unknown``, with a traceback in the log,
waiting for ``nurture sends resolve``.
"""

from __future__ import annotations

import json
import logging
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

from nurture.app.clock import FixedClock
from nurture.app.runtime import build_runtime
from nurture.app.settings import Settings
from nurture.store.tables import EnrollmentRow, SendRow, SubscriberRow
from tests.e2e.test_cli_authoring import run
from tests.factories import sequence_dict

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 3, 3, 10, 0, tzinfo=UTC)
SUBSCRIBER = SubscriberRow.__table__  # type: ignore[attr-defined]
ENROLLMENT = EnrollmentRow.__table__  # type: ignore[attr-defined]
SEND = SendRow.__table__  # type: ignore[attr-defined]
# Only a subscriber with the attribute ``s`` gets the surrogate.
SURROGATE = "{% if subscriber.attributes.get('s') %}{{ '\\ud800' }}{% endif %}"
PEOPLE = {"good1@example.com": {}, "bad@example.com": {"s": 1}, "good2@example.com": {}}


def write_project(tmp_path: Path) -> Settings:
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", templates)
    welcome = templates / "en" / "welcome.md"
    welcome.write_text(welcome.read_text(encoding="utf-8") + SURROGATE + "\n", encoding="utf-8")
    sequences = tmp_path / "sequences"
    sequences.mkdir()
    definition = sequence_dict(id="surrogates", timezone="UTC")
    (sequences / "surrogates.yaml").write_text(json.dumps(definition), encoding="utf-8")
    return Settings(
        sequences_dir=sequences,
        templates_dir=templates,
        outbox_dir=tmp_path / "outbox",
        secret_key="surrogate-test-secret-not-a-placeholder",
        rate_limit=100_000.0,
        transport="outbox",  # writes each email's bytes, as SMTP would
    )


def enroll(engine: Engine, version: str) -> None:
    due = NOW - timedelta(hours=1)
    with engine.begin() as conn:
        for email, attributes in PEOPLE.items():
            subscriber_id = conn.execute(
                insert(SUBSCRIBER)
                .values(
                    email=email, name="Sam Sample", first_name="Sam", locale="en",
                    timezone="UTC", tags=[], attributes=attributes, status="active",
                    created_at=NOW, updated_at=NOW,
                )
                .returning(SUBSCRIBER.c.id)
            ).scalar_one()  # fmt: skip
            conn.execute(
                insert(ENROLLMENT).values(
                    subscriber_id=subscriber_id, sequence_id="surrogates",
                    sequence_version=version, status="active", enrolled_at=due,
                    next_due_at=due, updated_at=NOW,
                )
            )  # fmt: skip


@pytest.mark.parametrize("concurrency", [1, 4], ids=["serial", "pooled"])
def test_a_surrogate_from_the_template_fails_that_email_only(
    engine: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture, concurrency: int
) -> None:
    settings = write_project(tmp_path).model_copy(update={"send_concurrency": concurrency})
    runtime = build_runtime(settings, FixedClock(NOW), engine=engine, migrate=False)
    try:
        enroll(engine, runtime.registry.sequences()["surrogates"].version)
        with caplog.at_level(logging.ERROR):
            report = runtime.dispatcher.dispatch(NOW)
    finally:
        runtime.close()

    with engine.connect() as conn:
        rows = conn.execute(
            select(SUBSCRIBER.c.email, SEND.c.status, SEND.c.reason)
            .join(SEND, SEND.c.subscriber_id == SUBSCRIBER.c.id)
            .where(SEND.c.step_id == "welcome")
        )
        ledger = {row.email: (row.status, row.reason or "") for row in rows}
    assert {email: status for email, (status, _) in ledger.items()} == {
        "good1@example.com": "sent",
        "bad@example.com": "failed",
        "good2@example.com": "sent",
    }
    reason = ledger["bad@example.com"][1]
    assert reason.startswith("could not render: ")
    assert "welcome.md" in reason
    assert "not valid Unicode (a lone surrogate U+D800)" in reason
    assert (report.sent, report.failed, report.unknown) == (2, 1, 0)
    assert len(list((tmp_path / "outbox").rglob("*.eml"))) == 2
    assert "unexpected error from transport" not in caplog.text


def test_validate_and_preview_report_it_without_a_traceback(tmp_path: Path) -> None:
    assert run("init", "work", cwd=tmp_path).returncode == 0
    work = tmp_path / "work"
    welcome = work / "templates" / "sv" / "welcome.md"  # the sequence's locale
    welcome.write_text("Hi {{ '\\ud800' }}\n" + welcome.read_text(encoding="utf-8"), "utf-8")
    where = "templates/sv/welcome.md:1:1: "
    message = "the email has text that is not valid Unicode (a lone surrogate U+D800)"

    validated = run("validate", cwd=work)
    assert validated.returncode == 1, validated.stdout + validated.stderr
    assert where + message in validated.stdout
    previewed = run("preview", "sales-process", "--step", "welcome", "--out", "pv", cwd=work)
    assert previewed.returncode == 1
    assert "Traceback" not in previewed.stdout + previewed.stderr
    assert where + message in previewed.stdout + previewed.stderr
