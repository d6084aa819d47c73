"""The SQL of the problems page (:mod:`nurture.admin.problems`): the sends
that went wrong (``failed``) or whose outcome nobody knows (``unknown``), and
the sequences that are paused.

Read-only; settling a send is :mod:`nurture.store.resolve`, resuming a
sequence :func:`nurture.store.queries.resume_sequence`.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.engine import Connection

from nurture.core.vocabulary import SendStatus
from nurture.store.queries import SEND, SEQUENCE_STATE, SUBSCRIBER

__all__ = ["PROBLEM_STATUSES", "PausedSequence", "ProblemSend", "paused", "problem_sends"]

PROBLEM_STATUSES = (SendStatus.UNKNOWN, SendStatus.FAILED)


@dataclass(frozen=True)
class ProblemSend:
    """One ``failed`` or ``unknown`` ledger row, with whom it was for."""

    id: int
    key: str
    email: str
    name: str
    sequence_id: str
    step_id: str
    subject: str | None
    status: str
    decided_at: datetime
    sent_at: datetime | None
    reason: str | None
    attempts: int
    provider_message_id: str | None
    resolution: str | None
    resolved_by: str | None
    resolved_at: datetime | None


@dataclass(frozen=True)
class PausedSequence:
    sequence_id: str
    reason: str
    since: datetime


def problem_sends(
    conn: Connection,
    *,
    statuses: Collection[str] = PROBLEM_STATUSES,
    sequence: str | None = None,
    limit: int = 200,
) -> list[ProblemSend]:
    """``failed`` and ``unknown`` rows (or those of ``statuses``), newest
    decision first; every filter a bound parameter."""
    query = (
        select(
            SEND.c.id,
            SEND.c.key,
            SUBSCRIBER.c.email,
            SUBSCRIBER.c.name,
            SEND.c.sequence_id,
            SEND.c.step_id,
            SEND.c.subject,
            SEND.c.status,
            SEND.c.decided_at,
            SEND.c.sent_at,
            SEND.c.reason,
            SEND.c.attempts,
            SEND.c.provider_message_id,
            SEND.c.resolution,
            SEND.c.resolved_by,
            SEND.c.resolved_at,
        )
        .join(SUBSCRIBER, SUBSCRIBER.c.id == SEND.c.subscriber_id)
        .where(SEND.c.status.in_([str(status) for status in statuses]))
        .order_by(SEND.c.decided_at.desc(), SEND.c.id.desc())
        .limit(limit)
    )
    if sequence:
        query = query.where(SEND.c.sequence_id == sequence)
    return [ProblemSend(**row._mapping) for row in conn.execute(query)]


def paused(conn: Connection) -> list[PausedSequence]:
    """Paused sequences, by id, with why and since when."""
    rows = conn.execute(
        select(
            SEQUENCE_STATE.c.sequence_id,
            SEQUENCE_STATE.c.paused_reason,
            SEQUENCE_STATE.c.updated_at,
        )
        .where(SEQUENCE_STATE.c.paused.is_(True))
        .order_by(SEQUENCE_STATE.c.sequence_id)
    )
    return [
        PausedSequence(row.sequence_id, row.paused_reason or "", row.updated_at) for row in rows
    ]
