"""The store's reads behind ``nurture plan``, on SQLite and PostgreSQL: active
enrollments come in bounded keyset batches, each enrollment once, with its
ledger, events and suppression; counts come per version and status."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

from nurture.core.vocabulary import EventKind, SendStatus
from nurture.store import planning, queries

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def seed(engine: Engine, count: int) -> None:
    """``count`` subscribers in 'drip': every third completed, the rest active;
    subscriber 1 has a sent step, an open and a suppressed address."""
    with engine.begin() as conn:
        conn.execute(
            insert(queries.SUBSCRIBER),
            [
                {"email": f"p{n}@example.com", "name": f"P {n}", "tags": [], "attributes": {},
                 "status": "active", "created_at": NOW, "updated_at": NOW}
                for n in range(count)
            ],
        )  # fmt: skip
        ids = {
            row.email: row.id
            for row in conn.execute(select(queries.SUBSCRIBER.c.id, queries.SUBSCRIBER.c.email))
        }
        conn.execute(
            insert(queries.ENROLLMENT),
            [
                {"subscriber_id": ids[f"p{n}@example.com"], "sequence_id": "drip",
                 "sequence_version": "v1" if n % 2 else "v2",
                 "status": "completed" if n % 3 == 0 else "active",
                 "enrolled_at": NOW, "next_due_at": NOW, "updated_at": NOW}
                for n in range(count)
            ],
        )  # fmt: skip
        one = ids["p1@example.com"]
        enrollment = conn.execute(
            select(queries.ENROLLMENT.c.id).where(queries.ENROLLMENT.c.subscriber_id == one)
        ).scalar_one()
        conn.execute(
            insert(queries.SEND),
            {"key": "k1", "enrollment_id": enrollment, "subscriber_id": one, "sequence_id": "drip",
             "sequence_version": "v1", "step_id": "hello", "status": SendStatus.SENT,
             "due_at": NOW - timedelta(days=1), "decided_at": NOW - timedelta(days=1),
             "sent_at": NOW - timedelta(days=1), "attempts": 1},
        )  # fmt: skip
        conn.execute(
            insert(queries.EVENT),
            [
                {"provider_event_id": "e1", "kind": EventKind.OPENED, "subscriber_id": one,
                 "step_id": "hello", "occurred_at": NOW - timedelta(hours=1),
                 "received_at": NOW, "payload": {}},
                {"provider_event_id": "e2", "kind": EventKind.CLICKED, "subscriber_id": one,
                 "step_id": "hello", "occurred_at": NOW + timedelta(hours=1),
                 "received_at": NOW, "payload": {}},
            ],
        )  # fmt: skip
        conn.execute(
            insert(queries.SUPPRESSION),
            {"email": "p1@example.com", "reason": "bounced", "created_at": NOW},
        )


def test_active_enrollments_stream_in_bounded_batches(engine: Engine) -> None:
    seed(engine, 25)
    with planning.snapshot(engine) as conn:
        batches = list(planning.active_enrollments(conn, NOW, batch=4))
    assert all(len(batch) <= 4 for batch in batches)
    seen = [live.email for batch in batches for live in batch]
    expected = [f"p{n}@example.com" for n in range(25) if n % 3]
    assert seen == expected  # each active enrollment once, in creation order
    one = next(live for batch in batches for live in batch if live.email == "p1@example.com")
    assert [(e.step_id, e.status) for e in one.ledger] == [("hello", SendStatus.SENT)]
    assert [e.kind for e in one.events] == [EventKind.OPENED]  # not the click after NOW
    assert one.suppressed == "bounced"
    assert (one.version, one.position, one.view.email) == ("v1", None, "p1@example.com")


def test_one_sequence_and_counts_per_version(engine: Engine) -> None:
    seed(engine, 12)
    with planning.snapshot(engine) as conn:
        assert list(planning.active_enrollments(conn, NOW, sequence_id="other")) == []
        counts = planning.enrollment_counts(conn, "drip")
        assert planning.enrollment_counts(conn, "other") == []
        completed = planning.completed_emails(conn, "drip", "v1", 5)
        enrollments = planning.enrollments_of(conn, "p3@example.com", NOW)
    by_key = {(c.version, c.status): c.count for c in counts}
    assert by_key == {("v1", "active"): 4, ("v1", "completed"): 2,
                      ("v2", "active"): 4, ("v2", "completed"): 2}  # fmt: skip
    assert completed == ["p3@example.com", "p9@example.com"]
    assert [(e.email, e.status) for e in enrollments] == [("p3@example.com", "completed")]
