"""A person's data exported and erased over a real database (SQLite and
PostgreSQL): events deleted, purchases kept without a link to them, the
address suppressed only by its hash, and the dispatcher honouring that."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from nurture.app.clock import FixedClock
from nurture.app.runtime import build_runtime
from nurture.audience.personal_data import erase_personal_data, export_personal_data
from nurture.audience.subscribers import add_subscriber, get_subscriber
from nurture.store import queries
from nurture.store.db import session_factory
from nurture.store.tables import EventRow, PurchaseRow, SuppressionRow
from nurture.testing import MemoryTransport
from tests.factories import example_workdir

NOW = datetime(2026, 11, 27, 14, 30, tzinfo=UTC)  # Friday 15:30 in Stockholm


def test_erasure_deletes_events_anonymises_purchases_and_suppresses_the_hash(
    engine: Engine, tmp_path: Path
) -> None:
    transport = MemoryTransport()
    runtime = build_runtime(
        example_workdir(tmp_path), FixedClock(NOW), transport=transport, engine=engine,
        migrate=False,
    )  # fmt: skip
    sequences = runtime.registry.sequences()
    sessions = session_factory(engine)
    with sessions() as session:
        row, _ = add_subscriber(
            session, email="karin@example.com", tags=("b2b",), consent_source="test",
            now=NOW, sequences=sequences,
        )  # fmt: skip
        session.add(
            EventRow(
                provider_event_id="sg-1", kind="opened", subscriber_id=row.id,
                occurred_at=NOW, received_at=NOW, payload={"email": "karin@example.com"},
            )
        )  # fmt: skip
        session.add(
            PurchaseRow(
                source="manual", order_id="o-1", subscriber_id=row.id, amount=Decimal("4900"),
                currency="SEK", occurred_at=NOW, received_at=NOW,
                payload={"email": "karin@example.com"},
            )
        )  # fmt: skip
        session.add(SuppressionRow(email="karin@example.com", reason="bounced", created_at=NOW))
        session.commit()
    assert runtime.dispatcher.dispatch(NOW).sent == 0  # suppressed by its plain address

    with sessions() as session:
        exported = export_personal_data(session, "KARIN@example.com")
        assert exported is not None
        assert exported["subscriber"]["consent_source"] == "test"
        assert [e["kind"] for e in exported["events"]] == ["opened"]
        assert [p["order_id"] for p in exported["purchases"]] == ["o-1"]
        assert [s["reason"] for s in exported["suppression"]] == ["bounced"]

        erased = erase_personal_data(session, "karin@example.com", NOW)
        session.commit()
        assert erased.found and erased.counts["events"] == 1
        assert get_subscriber(session, "karin@example.com") is None
        assert session.scalar(select(func.count()).select_from(EventRow)) == 0
        purchase = session.scalars(select(PurchaseRow)).one()
        assert purchase.subscriber_id is None and purchase.payload == {}
        assert purchase.amount == Decimal("4900")
        [entry] = session.scalars(select(SuppressionRow)).all()
        assert entry.email == queries.hashed_address("karin@example.com")
        assert entry.reason.startswith("bounced")
        after = export_personal_data(session, "karin@example.com")
        assert after is not None and after["subscriber"] is None
        assert [s["email"] for s in after["suppression"]] == [entry.email]

        # Back again: stored, but never enrolled and never mailed.
        _, enrollments = add_subscriber(
            session, email="karin@example.com", tags=("b2b",), consent_source="test",
            now=NOW, sequences=sequences,
        )  # fmt: skip
        session.commit()
        assert enrollments == []
    with engine.connect() as conn:
        assert set(queries.suppressed_among(conn, ["karin@example.com"])) == {"karin@example.com"}
    assert runtime.dispatcher.dispatch(NOW).sent == 0
    assert transport.sent == []
