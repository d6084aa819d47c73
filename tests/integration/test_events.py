"""Recording events: one vocabulary, idempotent by provider event id."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from nurture.audience.events import record_event
from nurture.core.vocabulary import EventKind
from nurture.store.events import insert_event
from nurture.store.queries import ENROLLMENT
from nurture.store.reports import active_enrollment_count

NOW = datetime(2025, 3, 4, 9, 30, tzinfo=UTC)


def _kinds(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(text("SELECT kind FROM event ORDER BY id")).scalars())


def test_an_event_is_recorded_once(engine: Engine) -> None:
    with engine.begin() as conn:
        first = record_event(
            conn, kind=EventKind.PURCHASED, subscriber_id=None, occurred_at=NOW,
            received_at=NOW, provider_event_id="shop-1", product="sales-audit",
        )  # fmt: skip
        again = record_event(
            conn, kind=EventKind.PURCHASED, subscriber_id=None, occurred_at=NOW,
            received_at=NOW, provider_event_id="shop-1", product="sales-audit",
        )  # fmt: skip
    assert (first, again) == (True, False)
    assert _kinds(engine) == ["purchased"]


def test_the_value_of_a_kind_is_accepted_a_provider_word_is_not(engine: Engine) -> None:
    with engine.begin() as conn:
        assert record_event(
            conn, kind="clicked", subscriber_id=None, occurred_at=NOW, received_at=NOW
        )
        with pytest.raises(ValueError, match="unknown event kind 'click'"):
            record_event(conn, kind="click", subscriber_id=None, occurred_at=NOW, received_at=NOW)
    assert _kinds(engine) == ["clicked"]


def test_only_a_duplicate_is_a_quiet_no_op(engine: Engine) -> None:
    # The CHECK on event.kind raises IntegrityError too: that must not pass
    # for "already recorded".
    values = {
        "provider_event_id": "e1",
        "kind": "open",
        "subscriber_id": None,
        "occurred_at": NOW,
        "received_at": NOW,
        "payload": {},
    }
    with engine.begin() as conn, pytest.raises(IntegrityError):
        insert_event(conn, values)
    assert _kinds(engine) == []


def test_active_enrollments_are_counted(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO subscriber (id, email, name, tags, attributes, status, created_at,"
                " updated_at) VALUES (1, 'anna@example.com', '', '[]', '{}', 'active', :t, :t)"
            ),
            {"t": NOW.replace(tzinfo=None)},
        )
        for number, status in enumerate(("active", "completed", "active", "converted")):
            conn.execute(
                text(
                    "INSERT INTO enrollment (subscriber_id, sequence_id, sequence_version,"
                    " status, enrolled_at, updated_at) VALUES (1, :seq, 'v1', :status, :t, :t)"
                ),
                {"seq": f"s{number}", "status": status, "t": NOW.replace(tzinfo=None)},
            )
    with engine.connect() as conn:
        assert active_enrollment_count(conn) == 2


def test_a_purchase_makes_the_subscribers_enrollments_due_when_it_happened(
    engine: Engine,
) -> None:
    # So the dispatcher records the exit at the purchase, not at the next step.
    later = NOW.replace(day=10).replace(tzinfo=None)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO subscriber (id, email, name, tags, attributes, status, created_at,"
                " updated_at) VALUES (1, 'anna@example.com', '', '[]', '{}', 'active', :t, :t)"
            ),
            {"t": NOW.replace(tzinfo=None)},
        )
        for number, status in enumerate(("active", "completed")):
            conn.execute(
                text(
                    "INSERT INTO enrollment (subscriber_id, sequence_id, sequence_version,"
                    " status, enrolled_at, next_due_at, updated_at)"
                    " VALUES (1, :seq, 'v1', :status, :t, :due, :t)"
                ),
                {"seq": f"s{number}", "status": status, "t": NOW.replace(tzinfo=None),
                 "due": later},
            )  # fmt: skip
        record_event(
            conn, kind=EventKind.PURCHASED, subscriber_id=1, occurred_at=NOW,
            received_at=NOW, product="sales-audit",
        )  # fmt: skip
        record_event(conn, kind=EventKind.OPENED, subscriber_id=1, occurred_at=NOW.replace(
            day=5), received_at=NOW)  # fmt: skip
    with engine.connect() as conn:
        due = {
            row.sequence_id: row.next_due_at
            for row in conn.execute(select(ENROLLMENT.c.sequence_id, ENROLLMENT.c.next_due_at))
        }
    # The active enrollment only (s0), at the purchase; an open changes nothing.
    assert due == {"s0": NOW, "s1": later.replace(tzinfo=UTC)}
