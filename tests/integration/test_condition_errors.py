"""A ``when`` that raises at send time pauses its sequence; it never skips the step.

The condition below validates (every sample subscriber has a ``plan``
attribute) but raises for a real subscriber without one. Skipping would have
dropped the step for everyone without the attribute, silently; instead the
step waits, the log says why, and the sequence is paused like a spent error
budget until the file is fixed and ``nurture resume`` is run. SQLite and
PostgreSQL, through the real dispatcher.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.engine import Engine

from nurture.app.clock import FixedClock
from nurture.app.runtime import Runtime, build_runtime
from nurture.app.settings import Settings
from nurture.audience.subscribers import add_subscriber
from nurture.core.simulation import simulate
from nurture.core.subscriber import Subscriber
from nurture.store import queries
from nurture.store.db import session_factory
from nurture.store.tables import SendRow
from nurture.testing import MemoryTransport

ROOT = Path(__file__).resolve().parents[2]
STOCKHOLM = ZoneInfo("Europe/Stockholm")
FRIDAY = datetime(2026, 11, 27, 15, 30, tzinfo=STOCKHOLM).astimezone(UTC)
MONDAY = datetime(2026, 11, 30, 10, 0, tzinfo=STOCKHOLM).astimezone(UTC)  # three-models due
SEND = SendRow.__table__  # type: ignore[attr-defined]
FAILING = "subscriber.attributes.plan == 'free'"
SAMPLE = """\
- email: sample@example.com
  name: Sam Sample
  locale: sv
  timezone: Europe/Stockholm
  tags: [b2b]
  attributes: {plan: free, company: Sample AB}
"""


def content(tmp_path: Path, when: str) -> Path:
    """The example content with ``when`` on the three-models step."""
    folder = tmp_path / "sequences"
    folder.mkdir(exist_ok=True)
    text = (ROOT / "sequences" / "sales-process.yaml").read_text(encoding="utf-8")
    text = text.replace('    at: "09:30"\n', f'    at: "09:30"\n    when: "{when}"\n', 1)
    (folder / "sales-process.yaml").write_text(text, encoding="utf-8")
    (folder / "sales-process.sample.yaml").write_text(SAMPLE, encoding="utf-8")
    return folder


def runtime(engine: Engine, tmp_path: Path, transport: MemoryTransport) -> Runtime:
    settings = Settings(
        sequences_dir=content(tmp_path, FAILING),
        templates_dir=ROOT / "templates",
        outbox_dir=tmp_path / "outbox",
        secret_key="test-secret-not-a-placeholder",
        rate_limit=10_000.0,
    )  # type: ignore[call-arg]
    made = build_runtime(
        settings, FixedClock(FRIDAY), transport=transport, engine=engine, migrate=False
    )
    assert made.registry.sequences().get("sales-process") is not None, "the file must validate"
    return made


def add(made: Runtime, email: str, attributes: dict[str, Any]) -> None:
    with session_factory(made.engine)() as session:
        add_subscriber(
            session, email=email, name="Karin Lindqvist", tz="Europe/Stockholm", locale="sv",
            tags=("b2b",), attributes=attributes, consent_source="test", now=FRIDAY,
            sequences=made.registry.sequences(),
        )  # fmt: skip
        session.commit()


def rows(engine: Engine) -> list[tuple[str, str, str, str | None]]:
    query = select(SEND.c.key, SEND.c.step_id, SEND.c.status, SEND.c.reason).order_by(SEND.c.id)
    with engine.connect() as conn:
        return [(r.key, r.step_id, r.status, r.reason) for r in conn.execute(query)]


def test_a_failing_when_holds_the_step_and_pauses_the_sequence(
    engine: Engine, tmp_path: Path
) -> None:
    transport = MemoryTransport()
    made = runtime(engine, tmp_path, transport)
    dispatcher = made.dispatcher
    try:
        add(made, "karin@example.com", {})  # no plan: the condition raises for her
        add(made, "free@example.com", {"plan": "free"})  # true for this one
        dispatcher.dispatch(FRIDAY)
        assert [e.step_id for e in transport.sent] == ["welcome", "welcome"]

        report = dispatcher.dispatch(MONDAY)
        assert report.skipped == 0
        # Nothing more goes out of the paused sequence, not even the email
        # whose condition was true.
        assert [e.step_id for e in transport.sent] == ["welcome", "welcome"]
        held = [row for row in rows(engine) if row[1] == "three-models" and row[3]]
        assert any(
            status == "retry"
            and reason is not None
            and reason.startswith(f"held: condition {FAILING!r} failed: ")
            and "subscriber.attributes has no 'plan'" in reason
            and "`nurture resume sales-process`" in reason
            for _, _, status, reason in held
        ), rows(engine)
        assert all(status != "skipped" for _, _, status, _ in rows(engine))
        with engine.connect() as conn:
            paused = queries.paused_sequences(conn)
        assert "sales-process" in paused
        assert "subscriber.attributes has no 'plan'" in paused["sales-process"]

        # Paused: a later pass sends nothing from it.
        dispatcher.dispatch(MONDAY + timedelta(hours=2))
        assert len(transport.sent) == 2

        # Fixed and resumed: the held step is decided again, not lost.
        content(tmp_path, "subscriber.attributes.get('plan') == 'free'")
        made.registry.reload(force=True)
        with engine.begin() as conn:
            queries.save_sequence_state(
                conn, "sales-process", consecutive_failures=0, paused=False, reason=None,
                now=MONDAY,
            )  # fmt: skip
        dispatcher.dispatch(MONDAY + timedelta(hours=3))
        assert sorted((e.to_email, e.step_id) for e in transport.sent[2:]) == [
            ("free@example.com", "three-models"),
        ]
        decided = {(key, status) for key, step, status, _ in rows(engine) if step == "three-models"}
        assert len(decided) == 2 and {s for _, s in decided} == {"sent", "skipped"}
    finally:
        dispatcher.close()


def test_simulate_shows_the_pause_where_the_dispatcher_would_pause(tmp_path: Path) -> None:
    from nurture.core.loader import load_sequence_file

    loaded, problems = load_sequence_file(content(tmp_path, FAILING) / "sales-process.yaml")
    assert loaded is not None and not problems
    karin = Subscriber(email="karin@example.com", name="Karin", timezone="Europe/Stockholm")
    timeline = simulate(loaded.sequence, karin, FRIDAY)
    assert [(e.step, e.action) for e in timeline] == [
        ("welcome", "send"),
        ("three-models", "paused"),
    ]
    assert "subscriber.attributes has no 'plan'" in timeline[-1].reason
    assert "nurture resume sales-process" in timeline[-1].reason
