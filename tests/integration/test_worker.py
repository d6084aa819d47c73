"""The worker's jobs: reload keeps the last good version; the tick records a
heartbeat; 401 halts dispatching loudly; /healthz reports both."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from nurture.app.clock import FixedClock
from nurture.app.runtime import build_runtime
from nurture.app.worker import Worker
from nurture.audience.subscribers import add_subscriber
from nurture.errors import AuthenticationError
from nurture.store import heartbeat
from nurture.store.db import session_factory
from nurture.testing import MemoryTransport
from nurture.web.app import create_app
from tests.factories import example_workdir

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 27, 14, 30, tzinfo=UTC)


def test_reload_keeps_last_good_version(
    engine: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = example_workdir(tmp_path)
    transport = MemoryTransport()
    runtime = build_runtime(
        settings, FixedClock(NOW), transport=transport, engine=engine, migrate=False
    )
    good = runtime.registry.sequences()["sales-process"]
    path = tmp_path / "sequences" / "sales-process.yaml"
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    index = next(i for i, line in enumerate(lines) if line.strip() == "wait: 2 days")
    lines[index] = lines[index].replace("2 days", "2 fortnights")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with caplog.at_level(logging.ERROR, logger="nurture.app.registry"):
        problems = runtime.registry.reload()
    assert [(p.file.endswith("sales-process.yaml"), p.line) for p in problems] == [
        (True, index + 1)
    ]
    assert f"sales-process.yaml:{index + 1}:" in caplog.text
    assert "still running its last good version" in caplog.text
    assert runtime.registry.sequences()["sales-process"] is good
    # A valid edit of the sequence next to a broken template: the template is
    # refused, and with it the edit; the last good library keeps rendering.
    library = runtime.registry.library()
    path.write_text(text.replace("wait: 2 days", "wait: 3 days", 1), encoding="utf-8")
    template = tmp_path / "templates" / "en" / "welcome.md"
    good_template = template.read_text(encoding="utf-8")
    template.write_text(good_template + "\nBROKEN {{ nope }}\n", encoding="utf-8")
    assert runtime.registry.reload()
    assert runtime.registry.sequences()["sales-process"] is good
    assert runtime.registry.library() is library
    with session_factory(engine)() as session:
        add_subscriber(
            session, email="karin@example.com", tags=("b2b",), locale="en", consent_source="test",
            now=NOW, sequences=runtime.registry.sequences(),
        )  # fmt: skip
        session.commit()
    report = runtime.dispatcher.dispatch(NOW)
    assert (report.sent, report.failed) == (1, 0)
    [welcome] = transport.sent
    assert welcome.step_id == "welcome"
    bodies = welcome.bodies()
    assert bodies is not None and bodies[0] is not None
    assert "Thanks for signing up" in bodies[0]
    assert "BROKEN" not in bodies[0]
    # A valid edit takes effect.
    template.write_text(good_template, encoding="utf-8")
    assert runtime.registry.reload() == []
    assert runtime.registry.sequences()["sales-process"].version != good.version
    runtime.close()


def test_tick_heartbeat_and_healthz(engine: Engine, tmp_path: Path) -> None:
    settings = example_workdir(tmp_path)
    transport = MemoryTransport()
    runtime = build_runtime(
        settings, FixedClock(NOW), transport=transport, engine=engine, migrate=False
    )
    with session_factory(engine)() as session:
        add_subscriber(
            session, email="karin@example.com", tags=("b2b",), consent_source="test",
            now=NOW, sequences=runtime.registry.sequences(),
        )  # fmt: skip
        session.commit()
    worker = Worker(runtime)
    report = worker.tick()
    assert report is not None and report.sent == 1
    client = TestClient(create_app(runtime))
    body = client.get("/healthz").json()
    assert body["status"] == "ok"
    assert body["database"]["status"] == "ok"
    assert body["workers"][0]["last_tick_at"] == NOW.isoformat()
    assert body["sequences"] == ["sales-process"]

    # 401 from the provider: dispatching stops, loudly, and healthz says so.
    runtime.clock = FixedClock(NOW + timedelta(days=3))
    transport.fail_next(AuthenticationError("401 Unauthorized: the API key is wrong"))
    assert worker.tick() is None
    assert worker.halted is not None and "API key" in worker.halted
    answer = TestClient(create_app(runtime, worker)).get("/healthz")
    body = answer.json()
    assert (answer.status_code, body["status"]) == (503, "degraded")
    assert body["worker"]["halted"] is True
    # The kind of error, not its text (which may quote a subscriber).
    assert body["workers"][0]["error_kind"] == "DispatchHalted"
    assert "API key" not in answer.text
    runtime.close()


def test_a_clean_stop_forgets_the_worker_and_reconcile_forgets_the_silent(
    engine: Engine, tmp_path: Path
) -> None:
    """Worker ids are new at every start: without this, every restart left a
    row behind, late forever on the dashboard, /healthz and /metrics."""
    runtime = build_runtime(
        example_workdir(tmp_path), FixedClock(NOW), transport=MemoryTransport(), engine=engine,
        migrate=False,
    )  # fmt: skip
    with engine.begin() as conn:
        heartbeat.record_tick(conn, "killed-two-days-ago", NOW - timedelta(days=2), None)
        heartbeat.record_tick(conn, "killed-an-hour-ago", NOW - timedelta(hours=1), "Boom")
    worker = Worker(runtime)
    worker.tick()
    with engine.connect() as conn:
        ids = [tick.worker_id for tick in heartbeat.worker_ticks(conn)]
    assert ids == [worker.worker_id, "killed-an-hour-ago", "killed-two-days-ago"]
    # An hour's silence is shown (as late): a day's is forgotten.
    worker.reconcile()
    with engine.connect() as conn:
        ids = [tick.worker_id for tick in heartbeat.worker_ticks(conn)]
    assert ids == [worker.worker_id, "killed-an-hour-ago"]
    # Never the reconciling worker's own row, however long since its last
    # tick (the demo's clock runs a day a second).
    runtime.clock = FixedClock(NOW + timedelta(days=3))
    worker.reconcile()
    with engine.connect() as conn:
        ids = [tick.worker_id for tick in heartbeat.worker_ticks(conn)]
    assert ids == [worker.worker_id]
    worker.stop()
    with engine.connect() as conn:
        assert heartbeat.worker_ticks(conn) == []
    runtime.close()
