"""Settling ``unknown`` sends (:func:`nurture.sending.resolve.resolve_sends`)
against a real database and the real dispatcher: the unknown sends are made by
the dispatcher itself, from an ambiguous transport error."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from nurture.app.clock import FixedClock
from nurture.app.runtime import Runtime, build_runtime
from nurture.app.settings import Settings
from nurture.audience.subscribers import add_subscriber
from nurture.errors import AmbiguousSendError
from nurture.sending.resolve import Resolution, ResolveError, resolve_sends
from nurture.store.db import session_factory
from nurture.store.tables import EnrollmentRow, SendRow, SubscriberRow
from nurture.testing import MemoryTransport
from tests.factories import sequence_dict

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 3, 3, 10, 0, tzinfo=UTC)  # a Tuesday morning
LATER = NOW + timedelta(hours=1)
SEND = SendRow.__table__  # type: ignore[attr-defined]
ENROLLMENT = EnrollmentRow.__table__  # type: ignore[attr-defined]
SUBSCRIBER = SubscriberRow.__table__  # type: ignore[attr-defined]


@dataclass
class World:
    runtime: Runtime
    transport: MemoryTransport

    def add(self, email: str) -> None:
        with session_factory(self.runtime.engine)() as session:
            add_subscriber(
                session, email=email, tags=["t"], consent_source="test", now=NOW,
                sequences=self.runtime.registry.sequences(),
            )  # fmt: skip
            session.commit()

    def ledger(self) -> dict[tuple[str, str], tuple[int, str, str | None, str | None]]:
        """(email, step) -> (send id, status, resolution, resolved_by)."""
        with self.runtime.engine.connect() as conn:
            rows = conn.execute(
                select(
                    SEND.c.id, SEND.c.step_id, SEND.c.status, SEND.c.resolution,
                    SEND.c.resolved_by, SUBSCRIBER.c.email,
                ).join(SUBSCRIBER, SUBSCRIBER.c.id == SEND.c.subscriber_id)
            ).all()  # fmt: skip
        return {(r.email, r.step_id): (r.id, r.status, r.resolution, r.resolved_by) for r in rows}

    def enrollment(self) -> tuple[str, datetime | None]:
        with self.runtime.engine.connect() as conn:
            row = conn.execute(
                select(ENROLLMENT.c.status, ENROLLMENT.c.next_due_at).order_by(ENROLLMENT.c.id)
            ).first()
        assert row is not None
        return row.status, row.next_due_at

    def resolve(self, refs: list[str], resolution: Resolution, **options: object) -> list[int]:
        settled = resolve_sends(
            self.runtime.engine,
            refs,
            all_unknown=bool(options.get("all_unknown", False)),
            resolution=resolution,
            why=str(options.get("why", "checked the provider's activity feed")),
            by="admin",
            now=LATER,
        )
        return [send.id for send in settled]


@pytest.fixture
def world(engine: Engine, tmp_path: Path) -> Iterator[World]:
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    (tmp_path / "sequences").mkdir()
    definition = sequence_dict(id="resolve", timezone="UTC", trigger={"tags": ["t"]})
    (tmp_path / "sequences" / "resolve.yaml").write_text(json.dumps(definition), "utf-8")
    transport = MemoryTransport()
    settings = Settings(
        sequences_dir=tmp_path / "sequences",
        templates_dir=tmp_path / "templates",
        outbox_dir=tmp_path / "outbox",
        secret_key="resolve-test-secret-not-a-placeholder",
        rate_limit=10_000.0,
    )
    runtime = build_runtime(
        settings, FixedClock(NOW), transport=transport, engine=engine, migrate=False
    )
    yield World(runtime, transport)
    runtime.dispatcher.close()


def unknown_welcome(world: World, *, reached: bool = False) -> int:
    """One subscriber whose welcome is ``unknown``; its send id."""
    world.add("a@example.com")
    error = AmbiguousSendError("timed out after the request was sent")
    if reached:
        world.transport.accept_then_raise(error)
    else:
        world.transport.fail_next(error)
    world.runtime.dispatcher.dispatch(NOW)
    send_id, status, _, _ = world.ledger()[("a@example.com", "welcome")]
    assert status == "unknown"
    return send_id


def test_resend_sends_the_step_once_more_and_records_who_and_why(world: World) -> None:
    send_id = unknown_welcome(world)
    assert world.transport.sent == []
    assert world.resolve([str(send_id)], Resolution.RESEND) == [send_id]
    assert world.ledger()[("a@example.com", "welcome")][1:] == (
        "retry",
        "resend: checked the provider's activity feed",
        "admin",
    )
    assert world.enrollment() == ("active", LATER)
    world.runtime.dispatcher.dispatch(LATER)
    assert [e.step_id for e in world.transport.sent] == ["welcome"]
    assert world.ledger()[("a@example.com", "welcome")][1] == "sent"
    # Once, not again.
    world.runtime.dispatcher.dispatch(LATER)
    assert len(world.transport.sent) == 1


def test_as_sent_and_give_up_by_send_key(world: World) -> None:
    send_id = unknown_welcome(world, reached=True)
    with world.runtime.engine.connect() as conn:
        key = conn.execute(select(SEND.c.key).where(SEND.c.id == send_id)).scalar_one()
    assert world.resolve([key], Resolution.AS_SENT) == [send_id]
    assert world.ledger()[("a@example.com", "welcome")][1:3] == (
        "sent",
        "as-sent: checked the provider's activity feed",
    )
    world.runtime.dispatcher.dispatch(LATER)
    assert len(world.transport.sent) == 1  # never sent again
    world.add("b@example.com")
    world.transport.fail_next(AmbiguousSendError("timed out"))
    world.runtime.dispatcher.dispatch(LATER)
    [other] = world.resolve([], Resolution.GIVE_UP, all_unknown=True, why="customer asked")
    assert world.ledger()[("b@example.com", "welcome")][1:] == (
        "failed",
        "give-up: customer asked",
        "admin",
    )
    assert other != send_id


def test_only_unknown_sends_and_nothing_changes_on_a_refusal(world: World) -> None:
    send_id = unknown_welcome(world)
    world.add("b@example.com")
    world.runtime.dispatcher.dispatch(NOW)
    sent_id = world.ledger()[("b@example.com", "welcome")][0]
    huge = "9" * 20  # no id column holds it: the database failed on it (a traceback)
    with pytest.raises(ResolveError) as refused:
        world.resolve([str(send_id), str(sent_id), "999999", huge], Resolution.AS_SENT)
    message = str(refused.value)
    assert f"send {sent_id} (welcome) is sent: only unknown sends" in message
    assert "no send 999999" in message and f"no send {huge}" in message
    # All or nothing: the unknown one named with them is still unknown.
    assert world.ledger()[("a@example.com", "welcome")][1:] == ("unknown", None, None)
    with pytest.raises(ResolveError, match="say why"):
        world.resolve([str(send_id)], Resolution.AS_SENT, why="  ")


def test_resend_refused_once_a_later_step_was_decided(world: World) -> None:
    send_id = unknown_welcome(world)
    # The enrollment went on: the offer, two days later, goes out.
    world.runtime.dispatcher.dispatch(NOW + timedelta(days=3))
    assert world.ledger()[("a@example.com", "offer")][1] == "sent"
    with pytest.raises(ResolveError, match="a later step of this enrollment was already decided"):
        world.resolve([str(send_id)], Resolution.RESEND)
    assert world.ledger()[("a@example.com", "welcome")][1] == "unknown"


def test_resend_of_the_last_step_reopens_a_completed_enrollment(world: World) -> None:
    world.add("a@example.com")
    world.runtime.dispatcher.dispatch(NOW)
    world.transport.fail_next(AmbiguousSendError("timed out"))
    offer_time = NOW + timedelta(days=3)
    world.runtime.dispatcher.dispatch(offer_time)
    send_id, status, _, _ = world.ledger()[("a@example.com", "offer")]
    assert status == "unknown"
    assert world.enrollment()[0] == "completed"
    resolve_sends(
        world.runtime.engine, [str(send_id)], all_unknown=False, resolution=Resolution.RESEND,
        why="bounced at the relay", by="admin", now=offer_time + timedelta(hours=1),
    )  # fmt: skip
    assert world.enrollment() == ("active", offer_time + timedelta(hours=1))
    world.runtime.dispatcher.dispatch(offer_time + timedelta(hours=1))
    assert [e.step_id for e in world.transport.sent] == ["welcome", "offer"]
    assert world.enrollment()[0] == "completed"
