"""Read-only queries for admins and the demo: the send log, what is still running."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection, Engine

from nurture.core.vocabulary import EnrollmentStatus
from nurture.store.queries import ENROLLMENT, SEND, SUBSCRIBER
from nurture.store.signup import confirmation_log


def send_log(
    engine: Engine,
    *,
    email: str | None = None,
    sequence: str | None = None,
    status: str | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Newest decisions first (index on send.decided_at); confirmation emails
    (:mod:`nurture.store.signup`) are listed with them as ``signup/confirmation``."""
    query = (
        select(SEND, SUBSCRIBER.c.email)
        .join(SUBSCRIBER, SUBSCRIBER.c.id == SEND.c.subscriber_id)
        .order_by(SEND.c.decided_at.desc(), SEND.c.id.desc())
        .limit(limit)
    )
    if email is not None:
        query = query.where(SUBSCRIBER.c.email == email.strip().lower())
    if sequence is not None:
        query = query.where(SEND.c.sequence_id == sequence)
    if status is not None:
        query = query.where(SEND.c.status == status)
    with engine.connect() as conn:
        rows = [dict(row._mapping) for row in conn.execute(query)]
        if sequence is None or sequence == "signup":
            rows += confirmation_log(conn, email=email, status=status, limit=limit)
    rows.sort(key=lambda row: (row["decided_at"], row["id"]), reverse=True)
    return rows[:limit]


def active_enrollment_count(conn: Connection) -> int:
    """How many enrollments still have steps to decide."""
    count = conn.execute(
        select(func.count())
        .select_from(ENROLLMENT)
        .where(ENROLLMENT.c.status == EnrollmentStatus.ACTIVE)
    ).scalar_one()
    return int(count)


def due_enrollment_count(conn: Connection, now: datetime) -> int:
    """How many active enrollments are due at ``now``: the size of the pass
    ``nurture dispatch`` is about to make (for its progress bar). The same
    range scan on ``ix_enrollment_due (status, next_due_at)`` as the claim."""
    count = conn.execute(
        select(func.count())
        .select_from(ENROLLMENT)
        .where(
            ENROLLMENT.c.status == EnrollmentStatus.ACTIVE,
            ENROLLMENT.c.next_due_at <= now,
        )
    ).scalar_one()
    return int(count)
