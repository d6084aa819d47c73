"""Read-only counts for the demo, ``dispatch`` and ``/metrics``: what is still running,
what is due. (The send log is :mod:`nurture.store.sendlog`.)"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from nurture.core.vocabulary import EnrollmentStatus
from nurture.store.queries import ENROLLMENT


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
    range scan on ``ix_enrollment_due (status, next_due_at, id)`` as the claim."""
    count = conn.execute(
        select(func.count())
        .select_from(ENROLLMENT)
        .where(
            ENROLLMENT.c.status == EnrollmentStatus.ACTIVE,
            ENROLLMENT.c.next_due_at <= now,
        )
    ).scalar_one()
    return int(count)
