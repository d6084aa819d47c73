"""The SQL of click and open tracking: the send a token names, the clicks
already recorded on it, and marking clicks as a machine's afterwards."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection, Row

from nurture.core.vocabulary import EventKind
from nurture.store.queries import EVENT, SEND

_SEND_COLUMNS = ("id", "subscriber_id", "sequence_id", "step_id", "sent_at")


def send_by_key(conn: Connection, key: str, *, lock: bool = False) -> Row[Any] | None:
    """The ledger row with ``key`` (unique index): what an event on it records.

    ``lock``: on PostgreSQL the row is locked (``FOR UPDATE``) until the
    transaction ends, so clicks on one email are recorded one at a time and
    each sees the ones before it (a scanner follows every link at once). SQLite
    runs one writer at a time anyway: write first, then read.
    """
    columns = [SEND.c[name] for name in _SEND_COLUMNS]
    statement = select(*columns).where(SEND.c.key == key)
    if lock and conn.dialect.name == "postgresql":
        statement = statement.with_for_update()
    return conn.execute(statement).first()


def clicks_between(
    conn: Connection, send_id: int, start: datetime, end: datetime
) -> list[Row[Any]]:
    """The clicks recorded on one send between ``start`` and ``end`` (inclusive):
    id, provider_event_id, occurred_at and payload (index on event.send_id)."""
    columns = [EVENT.c[name] for name in ("id", "provider_event_id", "occurred_at", "payload")]
    rows = conn.execute(
        select(*columns)
        .where(
            EVENT.c.send_id == send_id,
            EVENT.c.kind == EventKind.CLICKED,
            EVENT.c.occurred_at >= start,
            EVENT.c.occurred_at <= end,
        )
        .order_by(EVENT.c.occurred_at, EVENT.c.id)
    )
    return list(rows)


def mark_machine(conn: Connection, event_ids: Collection[int]) -> int:
    """Mark events as a machine's (not engagement); returns how many changed."""
    if not event_ids:
        return 0
    result = conn.execute(
        update(EVENT)
        .where(EVENT.c.id.in_(list(event_ids)), EVENT.c.machine.is_(False))
        .values(machine=True)
    )
    return int(result.rowcount or 0)
