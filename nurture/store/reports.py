"""Read-only queries for admins and the demo: the send log, what is still running."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection, Engine

from nurture.core.vocabulary import EnrollmentStatus
from nurture.store.queries import ENROLLMENT
from nurture.store.sendlog import SendFilter, with_confirmations


def send_log(
    engine: Engine,
    *,
    email: str | None = None,
    sequence: str | None = None,
    status: str | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Newest decisions first, confirmation emails (:mod:`nurture.store.signup`)
    among them as ``signup/confirmation``: :func:`nurture.store.sendlog.with_confirmations`."""
    where = SendFilter(
        email=None if email is None else email.strip().lower(), sequence=sequence, status=status
    )
    with engine.connect() as conn:
        return with_confirmations(conn, where, limit=limit)


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
