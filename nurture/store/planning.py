"""The reads behind ``nurture plan``: every active enrollment with what a
decision about it needs, read in one transaction so the picture is consistent."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine, Row

from nurture.core.vocabulary import EnrollmentStatus
from nurture.store import queries


@dataclass
class PlanningSnapshot:
    """Active enrollments (joined with their subscriber), and per enrollment,
    subscriber and sequence what the dispatcher would read to decide."""

    enrollments: list[Row[Any]] = field(default_factory=list)
    """Ordered by sequence, then email: enrollment columns plus the subscriber's
    email, timezone, name, locale, tags, attributes and first_name."""
    ledgers: dict[int, list[Row[Any]]] = field(default_factory=dict)
    """Send ledger rows by enrollment id."""
    events: dict[int, list[Row[Any]]] = field(default_factory=dict)
    """Decision events up to ``now`` by subscriber id."""
    versions: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    """Recorded definitions by sequence id, then version."""


def read_active_enrollments(engine: Engine, now: datetime) -> PlanningSnapshot:
    enrollment, subscriber = queries.ENROLLMENT, queries.SUBSCRIBER
    with engine.connect() as conn:
        rows = list(
            conn.execute(
                select(enrollment, subscriber.c.email, subscriber.c.timezone,
                       subscriber.c.name, subscriber.c.locale, subscriber.c.tags,
                       subscriber.c.attributes, subscriber.c.first_name)
                .join(subscriber, subscriber.c.id == enrollment.c.subscriber_id)
                .where(enrollment.c.status == EnrollmentStatus.ACTIVE)
                .order_by(enrollment.c.sequence_id, subscriber.c.email)
            )
        )  # fmt: skip
        if not rows:
            return PlanningSnapshot()
        return PlanningSnapshot(
            enrollments=rows,
            ledgers=queries.load_ledger(conn, [row.id for row in rows]),
            events=queries.load_decision_events(conn, {row.subscriber_id for row in rows}, now),
            versions={
                sid: queries.load_versions(conn, sid) for sid in {row.sequence_id for row in rows}
            },
        )
