"""The SQL for events: what subscribers and providers report, stored once each."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from nurture.store.queries import EVENT


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
