"""The writes of leaving: ending enrollments, cancelling pending ledger rows,
suppressing an address, resubscribing. Services in ``nurture.audience.leaving``."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import delete, update
from sqlmodel import Session, col, select

from nurture.core.vocabulary import EnrollmentStatus, SendStatus
from nurture.store.tables import EnrollmentRow, SendRow, SuppressionRow

PENDING = (SendStatus.QUEUED, SendStatus.RETRY)
"""Ledger rows not yet handed to the provider (``reserved`` ones are in flight)."""


def end_enrollments(
    session: Session,
    subscriber_id: int,
    *,
    sequence_ids: Collection[str] | None,
    status: EnrollmentStatus,
    reason: str,
    now: datetime,
) -> list[str]:
    """End the subscriber's active enrollments (all, or those of ``sequence_ids``)
    and skip their pending ledger rows; the sequences whose enrollment ended."""
    query = select(EnrollmentRow.id, EnrollmentRow.sequence_id).where(
        col(EnrollmentRow.subscriber_id) == subscriber_id,
        col(EnrollmentRow.status) == EnrollmentStatus.ACTIVE,
    )
    if sequence_ids is not None:
        query = query.where(col(EnrollmentRow.sequence_id).in_(list(sequence_ids)))
    rows = list(session.exec(query))
    if not rows:
        return []
    ids = [row[0] for row in rows]
    session.execute(
        update(EnrollmentRow)
        .where(col(EnrollmentRow.id).in_(ids))
        .values(
            status=status,
            status_reason=reason[:500],
            next_due_at=None,
            claimed_by=None,
            claimed_until=None,
            updated_at=now,
        )
    )
    session.execute(
        update(SendRow)
        .where(col(SendRow.enrollment_id).in_(ids), col(SendRow.status).in_(PENDING))
        .values(status=SendStatus.SKIPPED, reason=reason, next_attempt_at=None, sent_at=now)
    )
    return sorted({row[1] for row in rows})


def suppress(session: Session, email: str, *, reason: str, source: str, now: datetime) -> bool:
    """Put the normalised ``email`` on the suppression list; False when it was already."""
    if suppression_source(session, email) is not None:
        return False
    session.add(
        SuppressionRow(email=email, reason=reason[:500], source=source[:50], created_at=now)
    )
    session.flush()
    return True


def suppression_source(session: Session, email: str) -> str | None:
    """Why ``email`` is suppressed (its ``source``), or None when it is not."""
    query = select(SuppressionRow.source).where(col(SuppressionRow.email) == email)
    return session.exec(query).first()


def lift_suppression(session: Session, email: str, *, sources: Collection[str]) -> bool:
    """Remove ``email``'s suppression if it came from one of ``sources``."""
    result = session.execute(
        delete(SuppressionRow).where(
            col(SuppressionRow.email) == email, col(SuppressionRow.source).in_(list(sources))
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
