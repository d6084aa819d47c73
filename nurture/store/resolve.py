"""The SQL of ``nurture sends``: listing ledger rows and settling ``unknown`` ones.

A send is ``unknown`` when the request may or may not have reached the
provider (a worker died mid-call, a timeout after the request went out). The
dispatcher never resends it on its own; an admin settles it
(:mod:`nurture.sending.resolve`): as sent, sent again, or given up. Each write
here is conditional on the row still being ``unknown``, so two admins (or an
admin and, later, the provider's events) cannot settle one send twice.

Nothing here commits: the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, Table, func, select, update
from sqlalchemy.engine import Connection

from nurture.core.vocabulary import EnrollmentStatus, SendStatus
from nurture.store.tables import EnrollmentRow, SendRow, SubscriberRow

__all__ = [
    "SendLine",
    "UnknownSend",
    "active_enrollment_elsewhere",
    "find_sends",
    "later_decisions",
    "list_sends",
    "make_enrollment_due",
    "settle_send",
    "unknown_sends",
]

SEND: Table = SendRow.__table__  # type: ignore[attr-defined]
ENROLLMENT: Table = EnrollmentRow.__table__  # type: ignore[attr-defined]
SUBSCRIBER: Table = SubscriberRow.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class SendLine:
    """One ledger row as ``nurture sends list`` shows it."""

    id: int
    key: str
    email: str
    sequence_id: str
    step_id: str
    status: str
    decided_at: datetime
    reason: str | None
    resolution: str | None


@dataclass(frozen=True)
class UnknownSend:
    """What settling one send needs to know about it and its enrollment."""

    id: int
    key: str
    status: str
    enrollment_id: int
    subscriber_id: int
    sequence_id: str
    step_id: str
    enrollment_status: str
    enrollment_reason: str | None


def list_sends(conn: Connection, *, status: str | None, limit: int) -> list[SendLine]:
    """Ledger rows, newest decision first, optionally of one status."""
    query = select(
        SEND.c.id,
        SEND.c.key,
        SUBSCRIBER.c.email,
        SEND.c.sequence_id,
        SEND.c.step_id,
        SEND.c.status,
        SEND.c.decided_at,
        SEND.c.reason,
        SEND.c.resolution,
    ).join(SUBSCRIBER, SUBSCRIBER.c.id == SEND.c.subscriber_id)
    if status is not None:
        query = query.where(SEND.c.status == status)
    query = query.order_by(SEND.c.decided_at.desc(), SEND.c.id.desc()).limit(limit)
    return [SendLine(**row._mapping) for row in conn.execute(query)]


def _with_enrollment() -> Select[Any]:
    return select(
        SEND.c.id,
        SEND.c.key,
        SEND.c.status,
        SEND.c.enrollment_id,
        SEND.c.subscriber_id,
        SEND.c.sequence_id,
        SEND.c.step_id,
        ENROLLMENT.c.status.label("enrollment_status"),
        ENROLLMENT.c.status_reason.label("enrollment_reason"),
    ).join(ENROLLMENT, ENROLLMENT.c.id == SEND.c.enrollment_id)


def find_sends(
    conn: Connection, *, ids: Collection[int] = (), keys: Collection[str] = ()
) -> list[UnknownSend]:
    """The ledger rows with these ids (``send.id``) or send keys (the id the
    provider was given), whatever their status, in id order."""
    found: list[UnknownSend] = []
    if ids:
        rows = conn.execute(_with_enrollment().where(SEND.c.id.in_(list(ids))))
        found += [UnknownSend(**row._mapping) for row in rows]
    if keys:
        rows = conn.execute(_with_enrollment().where(SEND.c.key.in_(list(keys))))
        found += [UnknownSend(**row._mapping) for row in rows]
    unique = {send.id: send for send in found}
    return [unique[send_id] for send_id in sorted(unique)]


def unknown_sends(conn: Connection) -> list[UnknownSend]:
    """Every ``unknown`` ledger row, in id order."""
    rows = conn.execute(
        _with_enrollment().where(SEND.c.status == SendStatus.UNKNOWN).order_by(SEND.c.id)
    )
    return [UnknownSend(**row._mapping) for row in rows]


def later_decisions(conn: Connection, send: UnknownSend) -> int:
    """How many steps of this send's enrollment were decided after it."""
    count = conn.execute(
        select(func.count())
        .select_from(SEND)
        .where(SEND.c.enrollment_id == send.enrollment_id, SEND.c.id > send.id)
    ).scalar_one()
    return int(count)


def active_enrollment_elsewhere(conn: Connection, send: UnknownSend) -> bool:
    """Whether the subscriber has another active enrollment in this sequence
    (only one may be active: ``uq_enrollment_active``)."""
    found = conn.execute(
        select(ENROLLMENT.c.id).where(
            ENROLLMENT.c.subscriber_id == send.subscriber_id,
            ENROLLMENT.c.sequence_id == send.sequence_id,
            ENROLLMENT.c.status == EnrollmentStatus.ACTIVE,
            ENROLLMENT.c.id != send.enrollment_id,
        )
    ).first()
    return found is not None


def settle_send(
    conn: Connection,
    send_id: int,
    *,
    status: SendStatus,
    resolution: str,
    by: str,
    now: datetime,
    next_attempt_at: datetime | None = None,
) -> bool:
    """Move one ``unknown`` row to ``status``, recording how, who and when.
    False when the row is no longer ``unknown`` (someone settled it first)."""
    result = conn.execute(
        update(SEND)
        .where(SEND.c.id == send_id, SEND.c.status == SendStatus.UNKNOWN)
        .values(
            status=status,
            resolution=resolution,
            resolved_by=by,
            resolved_at=now,
            next_attempt_at=next_attempt_at,
            lease_until=None,
        )
    )
    return bool(result.rowcount)


def make_enrollment_due(conn: Connection, enrollment_id: int, now: datetime) -> bool:
    """Make an enrollment due at ``now`` (no later than it already was), and
    active again if it had completed; a claim on it is left alone. False when
    it is neither active nor completed (the subscriber left, or converted)."""
    row = conn.execute(
        select(ENROLLMENT.c.status, ENROLLMENT.c.next_due_at).where(
            ENROLLMENT.c.id == enrollment_id
        )
    ).first()
    if row is None or row.status not in (EnrollmentStatus.ACTIVE, EnrollmentStatus.COMPLETED):
        return False
    due = now if row.next_due_at is None else min(row.next_due_at, now)
    result = conn.execute(
        update(ENROLLMENT)
        .where(ENROLLMENT.c.id == enrollment_id, ENROLLMENT.c.status == row.status)
        .values(status=EnrollmentStatus.ACTIVE, status_reason=None, next_due_at=due, updated_at=now)
    )
    return bool(result.rowcount)
