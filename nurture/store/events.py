"""The SQL for events: what subscribers and providers report, stored once each."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from nurture.core.vocabulary import EnrollmentStatus
from nurture.store.queries import ENROLLMENT, EVENT


def event_recorded(conn: Connection, provider_event_id: str) -> bool:
    """Whether an event with this id is stored (unique index on the column)."""
    found = conn.execute(
        select(EVENT.c.id).where(EVENT.c.provider_event_id == provider_event_id)
    ).first()
    return found is not None


def insert_event(conn: Connection, values: dict[str, Any]) -> bool:
    """Insert one event row; False when one with its ``provider_event_id`` exists.

    Checked first (the common replay costs no failed insert), and the unique
    index settles a race with a concurrent insert of the same event: that
    insert runs in a savepoint so the caller's transaction survives it.
    """
    event_id = str(values["provider_event_id"])
    if event_recorded(conn, event_id):
        return False
    try:
        with conn.begin_nested():
            conn.execute(EVENT.insert().values(values))
    except IntegrityError:
        # Only a duplicate is a no-op; any other violation (a kind outside
        # the CHECK, a missing subscriber) is a bug to hear about.
        if event_recorded(conn, event_id):
            return False
        raise
    return True


def bring_enrollments_forward(conn: Connection, subscriber_id: int, at: datetime) -> int:
    """Make ``subscriber_id``'s active enrollments due at ``at`` at the latest.

    After an event that can end an enrollment (a purchase, an unsubscribe),
    the dispatcher looks at the subscriber at once instead of at the next
    step's due time, so the exit is recorded when it happened (as ``nurture
    simulate`` shows it). An enrollment the event does not end is simply
    rescheduled by that pass. Returns how many enrollments were brought forward.
    """
    result = conn.execute(
        update(ENROLLMENT)
        .where(
            ENROLLMENT.c.subscriber_id == subscriber_id,
            ENROLLMENT.c.status == EnrollmentStatus.ACTIVE,
            ENROLLMENT.c.next_due_at > at,
        )
        .values(next_due_at=at)
    )
    return int(result.rowcount or 0)
