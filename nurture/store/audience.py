"""The SQL of the audience service (:mod:`nurture.audience`): subscribers,
their enrollments, the suppression list.

Unlike the dispatcher's :mod:`nurture.store.queries`, these work on a SQLModel
``Session`` and return ORM rows: the service edits the rows it gets and the
session's unit of work writes the changes at the next flush. Nothing here
commits; the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import insert
from sqlmodel import Session, col, select

from nurture.core.vocabulary import EnrollmentStatus
from nurture.store import bulk_audience as bulk
from nurture.store import queries
from nurture.store.tables import EnrollmentRow, SendRow, SubscriberRow

__all__ = [
    "active_enrollment",
    "add_enrollment",
    "enrolled_pairs",
    "enrollments_of",
    "insert_enrollments",
    "insert_subscribers",
    "remember_versions",
    "sends_of",
    "subscriber_by_email",
    "subscribers_by_email",
    "subscribers_page",
    "suppressed_emails",
]


# --------------------------------------------------------------------------- subscribers


def subscriber_by_email(session: Session, email: str) -> SubscriberRow | None:
    """The subscriber stored under ``email`` (already normalised), or None."""
    return session.exec(select(SubscriberRow).where(SubscriberRow.email == email)).first()


def subscribers_by_email(session: Session, emails: Collection[str]) -> dict[str, SubscriberRow]:
    """The stored subscribers among ``emails`` (normalised), by address."""
    if not emails:
        return {}
    # Most addresses of a large import are new: which exist is asked first,
    # cheaply, and only those are loaded as rows.
    stored = bulk.stored_emails(session.connection(), emails)
    if not stored:
        return {}
    query = select(SubscriberRow).where(col(SubscriberRow.email).in_(list(stored)))
    return {row.email: row for row in session.exec(query)}


def insert_subscribers(
    session: Session, values: Sequence[Mapping[str, Any]]
) -> list[SubscriberRow]:
    """Insert new subscribers, one row per mapping of column values; the rows in that order.

    One multi-row INSERT ... RETURNING rather than one ORM object each:
    building SQLModel objects one by one was most of the time of an import.
    """
    if not values:
        return []
    inserted = session.scalars(
        insert(SubscriberRow).returning(SubscriberRow, sort_by_parameter_order=True),
        [dict(v) for v in values],
    )
    return list(inserted)


def subscribers_page(
    session: Session, *, limit: int, offset: int, status: str | None = None
) -> list[SubscriberRow]:
    """Subscribers in the order they were added (by id), optionally of one status."""
    query = select(SubscriberRow)
    if status is not None:
        query = query.where(SubscriberRow.status == status)
    query = query.order_by(col(SubscriberRow.id)).offset(offset).limit(limit)
    return list(session.exec(query))


def sends_of(session: Session, subscriber_id: int | None) -> list[SendRow]:
    """The send log of one subscriber: every step decision, in the order made."""
    query = (
        select(SendRow)
        .where(SendRow.subscriber_id == subscriber_id)
        .order_by(col(SendRow.decided_at), col(SendRow.id))
    )
    return list(session.exec(query))


# --------------------------------------------------------------------------- suppression


def suppressed_emails(session: Session, emails: Iterable[str]) -> set[str]:
    """Those of ``emails`` (normalised) that are on the suppression list, as
    written or hashed by an erasure (:func:`nurture.store.queries.hashed_address`)."""
    return set(queries.suppressed_among(session.connection(), emails))


# --------------------------------------------------------------------------- enrollments


def enrollments_of(session: Session, subscriber_id: int | None) -> list[EnrollmentRow]:
    """Every enrollment of one subscriber, oldest first."""
    query = (
        select(EnrollmentRow)
        .where(EnrollmentRow.subscriber_id == subscriber_id)
        .order_by(col(EnrollmentRow.enrolled_at), col(EnrollmentRow.id))
    )
    return list(session.exec(query))


def enrolled_pairs(session: Session, subscriber_ids: Iterable[int | None]) -> set[tuple[int, str]]:
    """(subscriber id, sequence id) of every enrollment these subscribers ever had."""
    query = select(EnrollmentRow.subscriber_id, EnrollmentRow.sequence_id).where(
        col(EnrollmentRow.subscriber_id).in_(list(subscriber_ids))
    )
    return {(subscriber_id, sequence_id) for subscriber_id, sequence_id in session.exec(query)}


def active_enrollment(
    session: Session, subscriber_id: int | None, sequence_id: str
) -> EnrollmentRow | None:
    """The subscriber's active enrollment in ``sequence_id``, if any (at most one)."""
    query = select(EnrollmentRow).where(
        EnrollmentRow.subscriber_id == subscriber_id,
        EnrollmentRow.sequence_id == sequence_id,
        EnrollmentRow.status == EnrollmentStatus.ACTIVE,
    )
    return session.exec(query).first()


def insert_enrollments(
    session: Session, values: Sequence[Mapping[str, Any]]
) -> list[EnrollmentRow]:
    """Insert enrollments (one mapping of column values each) in one statement."""
    if not values:
        return []
    inserted = session.scalars(
        insert(EnrollmentRow).returning(EnrollmentRow, sort_by_parameter_order=True),
        [dict(v) for v in values],
    )
    return list(inserted)


def add_enrollment(session: Session, values: Mapping[str, Any]) -> EnrollmentRow:
    """Insert one enrollment now (flushed) and return it as a session-tracked row.

    The flush is where the partial unique index (one active enrollment per
    subscriber and sequence) refuses a concurrent duplicate.
    """
    enrollment = EnrollmentRow(**values)
    session.add(enrollment)
    session.flush()
    return enrollment


def remember_versions(
    session: Session, versions: dict[tuple[str, str], dict[str, Any]], now: datetime
) -> None:
    """Record the definition of each (sequence id, version) enrolled into (``nurture plan``)."""
    queries.remember_versions(session.connection(), versions, now)
