"""The SQL of the dashboard (:mod:`nurture.admin.dashboard`) and of the
complaint-rate pause (:mod:`nurture.audience.complaints`): ledger rows counted
by status since a time, the queue, and the sends, bounces and complaints of a
window, per sequence.

Sends are counted by ``send.decided_at`` (indexed: a time range is a range
scan), events by ``event.occurred_at``. Read-only.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from nurture.core.vocabulary import EnrollmentStatus, EventKind, SendStatus
from nurture.store.queries import ENROLLMENT, EVENT, SEND

__all__ = ["event_counts", "queue_counts", "sends_by_status", "sent_counts"]


def sends_by_status(conn: Connection, since: datetime, until: datetime) -> dict[str, int]:
    """Ledger rows decided in [``since``, ``until``), counted by status."""
    rows = conn.execute(
        select(SEND.c.status, func.count())
        .where(SEND.c.decided_at >= since, SEND.c.decided_at < until)
        .group_by(SEND.c.status)
    )
    return {str(status): int(count) for status, count in rows}


def queue_counts(conn: Connection, now: datetime, horizon: datetime) -> tuple[int, int]:
    """Active enrollments due by ``now``, and those due after it up to ``horizon``."""
    due = ENROLLMENT.c.next_due_at
    active = ENROLLMENT.c.status == EnrollmentStatus.ACTIVE
    due_now = conn.execute(
        select(func.count()).select_from(ENROLLMENT).where(active, due <= now)
    ).scalar_one()
    due_soon = conn.execute(
        select(func.count()).select_from(ENROLLMENT).where(active, due > now, due <= horizon)
    ).scalar_one()
    return int(due_now), int(due_soon)


def sent_counts(
    conn: Connection, since: datetime, sequence_ids: Collection[str] | None = None
) -> dict[str, int]:
    """``sent`` ledger rows decided since ``since``, per sequence (only those
    of ``sequence_ids`` when given)."""
    query = (
        select(SEND.c.sequence_id, func.count())
        .where(SEND.c.decided_at >= since, SEND.c.status == SendStatus.SENT)
        .group_by(SEND.c.sequence_id)
    )
    if sequence_ids is not None:
        query = query.where(SEND.c.sequence_id.in_(list(sequence_ids)))
    return {str(sequence): int(count) for sequence, count in conn.execute(query)}


def event_counts(
    conn: Connection,
    since: datetime,
    kinds: Collection[EventKind],
    sequence_ids: Collection[str] | None = None,
) -> dict[tuple[str | None, str], int]:
    """Events of ``kinds`` that occurred since ``since``, per (sequence, kind);
    the sequence is None for an event no send was found for."""
    query = (
        select(EVENT.c.sequence_id, EVENT.c.kind, func.count())
        .where(EVENT.c.occurred_at >= since, EVENT.c.kind.in_([str(kind) for kind in kinds]))
        .group_by(EVENT.c.sequence_id, EVENT.c.kind)
    )
    if sequence_ids is not None:
        query = query.where(EVENT.c.sequence_id.in_(list(sequence_ids)))
    return {
        (None if sequence is None else str(sequence), str(kind)): int(count)
        for sequence, kind, count in conn.execute(query)
    }
