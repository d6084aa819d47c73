"""The SQL of personal-data export and erasure (:mod:`nurture.audience.personal_data`).

Session-based like :mod:`nurture.store.audience`; nothing here commits.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CursorResult, Executable, delete, or_, update
from sqlmodel import Session, col, select

from nurture.store.queries import hashed_address
from nurture.store.tables import (
    AppEventRow,
    EnrollmentRow,
    EventRow,
    PurchaseRow,
    SendRow,
    SubscriberRow,
    SuppressionRow,
)

__all__ = [
    "erase_rows",
    "events_of",
    "purchases_of",
    "suppress_hashed",
    "suppression_entries",
]


def events_of(session: Session, subscriber_id: int | None) -> list[EventRow]:
    """The provider and purchase events of one subscriber, oldest first."""
    query = (
        select(EventRow)
        .where(EventRow.subscriber_id == subscriber_id)
        .order_by(col(EventRow.occurred_at), col(EventRow.id))
    )
    return list(session.exec(query))


def purchases_of(session: Session, subscriber_id: int | None) -> list[PurchaseRow]:
    query = (
        select(PurchaseRow)
        .where(PurchaseRow.subscriber_id == subscriber_id)
        .order_by(col(PurchaseRow.occurred_at), col(PurchaseRow.id))
    )
    return list(session.exec(query))


def suppression_entries(session: Session, email: str) -> list[SuppressionRow]:
    """The suppression rows of ``email`` (normalised): as written and hashed."""
    keys = [email, hashed_address(email)]
    return list(session.exec(select(SuppressionRow).where(col(SuppressionRow.email).in_(keys))))


def erase_rows(session: Session, subscriber_id: int) -> dict[str, int]:
    """Delete one subscriber and every row about them; anonymise their purchases.

    Deleted: provider events (theirs, or about their sends), app events, the
    ledger, enrollments and the subscriber row. Purchases are kept for the
    revenue figures with no link to anyone and no payload. Explicit rather than
    left to ``ON DELETE CASCADE``, so it does not depend on SQLite's
    ``foreign_keys`` pragma. Returns how many rows of each kind.
    """
    sends = select(SendRow.id).where(SendRow.subscriber_id == subscriber_id)
    counts: dict[str, int] = {}

    def run(what: str, statement: Executable) -> None:
        result: CursorResult[Any] = session.execute(statement)  # type: ignore[assignment]
        counts[what] = int(result.rowcount)

    run(
        "events",
        delete(EventRow).where(
            or_(
                col(EventRow.subscriber_id) == subscriber_id,
                col(EventRow.send_id).in_(sends.scalar_subquery()),
            )
        ),
    )
    run(
        "purchases_anonymised",
        update(PurchaseRow)
        .where(
            or_(
                col(PurchaseRow.subscriber_id) == subscriber_id,
                col(PurchaseRow.send_id).in_(sends.scalar_subquery()),
            )
        )
        .values(subscriber_id=None, send_id=None, payload={}),
    )
    run("app_events", delete(AppEventRow).where(col(AppEventRow.subscriber_id) == subscriber_id))
    run("sends", delete(SendRow).where(col(SendRow.subscriber_id) == subscriber_id))
    run(
        "enrollments",
        delete(EnrollmentRow).where(col(EnrollmentRow.subscriber_id) == subscriber_id),
    )
    run("subscriber", delete(SubscriberRow).where(col(SubscriberRow.id) == subscriber_id))
    session.expire_all()
    return counts


def suppress_hashed(session: Session, email: str, reason: str, now: datetime) -> None:
    """Keep ``email`` (normalised) suppressed by its hash only: its plain entry,
    if any, is replaced by ``sha256:<hex>`` with the same reason."""
    hashed = hashed_address(email)
    plain = session.exec(select(SuppressionRow).where(SuppressionRow.email == email)).first()
    if plain is not None:
        reason = f"{plain.reason}; {reason}"[:500]
    session.execute(delete(SuppressionRow).where(col(SuppressionRow.email) == email))
    exists = session.exec(select(SuppressionRow).where(SuppressionRow.email == hashed)).first()
    if exists is None:
        session.add(SuppressionRow(email=hashed, reason=reason, source="erasure", created_at=now))
    session.flush()
