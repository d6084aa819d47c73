"""/healthz says when the worker's passes fail, and says it without personal data."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from nurture.app.clock import FixedClock
from nurture.app.runtime import build_runtime
from nurture.app.worker import Worker
from nurture.audience.subscribers import add_subscriber
from nurture.sending.dispatcher import DispatchReport
from nurture.store.db import session_factory
from nurture.testing import MemoryTransport
from nurture.web.app import create_app
from tests.factories import example_workdir

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 27, 14, 30, tzinfo=UTC)
ERROR_TEXT = "value too long for column subject: 'Hello karin@example.com'"


class BreakableDispatcher:
    """The runtime's real dispatcher, with a switch that makes its passes raise
    (as a poison row or a database outage did: every tick failed)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.broken = False

    def dispatch(self, now: datetime) -> DispatchReport:
        if self.broken:
            raise RuntimeError(ERROR_TEXT)
        report: DispatchReport = self.real.dispatch(now)
        return report

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def _no_personal_data(text: str) -> None:
    assert "karin@example.com" not in text
    assert "value too long" not in text


def test_a_worker_whose_passes_fail_is_reported_degraded(engine: Engine, tmp_path: Path) -> None:
    runtime = build_runtime(
        example_workdir(tmp_path), FixedClock(NOW), transport=MemoryTransport(), engine=engine,
        migrate=False,
    )  # fmt: skip
    with session_factory(engine)() as session:
        add_subscriber(
            session, email="karin@example.com", tags=("b2b",), consent_source="test",
            now=NOW, sequences=runtime.registry.sequences(),
        )  # fmt: skip
        session.commit()
    dispatcher = BreakableDispatcher(runtime.dispatcher)
    runtime.dispatcher = dispatcher  # type: ignore[assignment]
    worker = Worker(runtime)
    dispatcher.broken = True
    worker.tick()
    worker.tick()

    # `nurture run`: the in-process worker, and its heartbeat row.
    answer = TestClient(create_app(runtime, worker)).get("/healthz")
    assert answer.status_code == 503, answer.text
    body = answer.json()
    assert body["status"] == "degraded"
    assert body["worker"]["failed_passes"] == 2
    assert body["worker"]["error_kind"] == "RuntimeError"
    assert body["workers"][0]["last_pass"] == "failed"
    _no_personal_data(answer.text)

    # `nurture web` next to a separate worker: the heartbeat row alone says it.
    answer = TestClient(create_app(runtime)).get("/healthz")
    assert answer.status_code == 503
    assert answer.json()["status"] == "degraded"
    _no_personal_data(answer.text)
    assert "karin@example.com" not in json.dumps(answer.json())

    # A good pass clears it.
    dispatcher.broken = False
    report = worker.tick()
    assert report is not None and report.sent == 1
    answer = TestClient(create_app(runtime, worker)).get("/healthz")
    assert (answer.status_code, answer.json()["status"]) == (200, "ok")
    assert answer.json()["worker"]["failed_passes"] == 0
    runtime.close()


def test_no_recent_tick_is_degraded(engine: Engine, tmp_path: Path) -> None:
    runtime = build_runtime(
        example_workdir(tmp_path), FixedClock(NOW), transport=MemoryTransport(), engine=engine,
        migrate=False,
    )  # fmt: skip
    assert TestClient(create_app(runtime)).get("/healthz").status_code == 200  # no worker yet
    Worker(runtime).tick()
    assert TestClient(create_app(runtime)).get("/healthz").status_code == 200
    # The worker died: an hour later its last tick is all there is.
    runtime.clock = FixedClock(NOW + timedelta(hours=1))
    answer = TestClient(create_app(runtime)).get("/healthz")
    assert answer.status_code == 503
    body = answer.json()
    assert body["status"] == "degraded"
    assert body["workers"][0]["recent"] is False
    assert any("no worker has ticked" in problem for problem in body["problems"])
    runtime.close()
