"""The writes of leaving: ending enrollments, cancelling pending ledger rows,
suppressing an address, resubscribing. Services in ``nurture.audience.leaving``."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, or_, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, select

from nurture.core.vocabulary import EnrollmentStatus, SendStatus
from nurture.store.chunks import chunked
from nurture.store.queries import SUPPRESSION
from nurture.store.tables import EnrollmentRow, SendRow, SubscriberRow, SuppressionRow

PENDING = (SendStatus.QUEUED, SendStatus.RETRY)
"""Ledger rows not yet handed to the provider (``reserved`` ones are in flight)."""


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


# --------------------------------------------------------------------------- batches
# A webhook post can block thousands of addresses at once: these read and write
# them one query (or one executemany) per chunk, not a few queries per address.


def subscribers_by_id(session: Session, ids: Collection[int]) -> dict[int, SubscriberRow]:
    """The subscriber rows with these ids (loaded into ``session``), by id."""
    found: dict[int, SubscriberRow] = {}
    for chunk in chunked(sorted(set(ids))):
        for row in session.exec(select(SubscriberRow).where(col(SubscriberRow.id).in_(chunk))):
            assert row.id is not None
            found[row.id] = row
    return found


def active_enrollments(
    session: Session, subscriber_ids: Collection[int]
) -> dict[int, list[tuple[int, str]]]:
    """Each subscriber's active enrollments, as (enrollment id, sequence id)."""
    found: dict[int, list[tuple[int, str]]] = {}
    for chunk in chunked(sorted(set(subscriber_ids))):
        query = select(
            EnrollmentRow.subscriber_id, EnrollmentRow.id, EnrollmentRow.sequence_id
        ).where(
            col(EnrollmentRow.subscriber_id).in_(chunk),
            col(EnrollmentRow.status) == EnrollmentStatus.ACTIVE,
        )
        for subscriber_id, enrollment_id, sequence_id in session.exec(query):
            assert enrollment_id is not None
            found.setdefault(subscriber_id, []).append((enrollment_id, sequence_id))
    return found


@dataclass(frozen=True)
class Ending:
    """One enrollment to end: its new status and why, from ``now``."""

    enrollment_id: int
    status: EnrollmentStatus
    reason: str
    now: datetime


def end_enrollment_ids(session: Session, endings: list[Ending]) -> None:
    """End these enrollments and skip their pending ledger rows: one
    executemany per table, however many there are."""
    if not endings:
        return
    enrollment, send = EnrollmentRow.__table__, SendRow.__table__  # type: ignore[attr-defined]
    conn = session.connection()
    conn.execute(
        update(enrollment)
        .where(enrollment.c.id == bindparam("e_id"))
        .values(
            status=bindparam("e_status"),
            status_reason=bindparam("e_short"),
            next_due_at=None,
            claimed_by=None,
            claimed_until=None,
            updated_at=bindparam("e_now"),
        ),
        [_binds(ending) for ending in endings],
    )
    conn.execute(
        update(send)
        # An IN list is not allowed in an executemany: one comparison each.
        .where(
            send.c.enrollment_id == bindparam("e_id"),
            or_(*(send.c.status == status for status in PENDING)),
        )
        .values(
            status=SendStatus.SKIPPED,
            reason=bindparam("e_reason"),
            next_attempt_at=None,
            sent_at=bindparam("e_now"),
        ),
        [_binds(ending) for ending in endings],
    )


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
    active = active_enrollments(session, [subscriber_id]).get(subscriber_id, [])
    ending = [
        (enrollment_id, sequence_id)
        for enrollment_id, sequence_id in active
        if sequence_ids is None or sequence_id in sequence_ids
    ]
    end_enrollment_ids(session, [Ending(id_, status, reason, now) for id_, _ in ending])
    return sorted({sequence_id for _, sequence_id in ending})


def _binds(ending: Ending) -> dict[str, Any]:
    return {
        "e_id": ending.enrollment_id,
        "e_status": ending.status,
        "e_short": ending.reason[:500],
        "e_reason": ending.reason,
        "e_now": ending.now,
    }


def suppression_sources(session: Session, emails: Collection[str]) -> dict[str, str]:
    """The suppression source of each of ``emails`` that is suppressed."""
    found: dict[str, str] = {}
    for chunk in chunked(sorted(set(emails))):
        query = select(SuppressionRow.email, SuppressionRow.source).where(
            col(SuppressionRow.email).in_(chunk)
        )
        found.update(dict(session.exec(query).all()))
    return found


def add_suppressions(session: Session, rows: list[SuppressionRow]) -> None:
    """Insert these suppressions (none of them suppressed yet: the caller checked).

    Another transaction (a second unsubscribe click, a bounce for the same
    address) may insert one of them between that check and this insert: that
    row is left as it is (insert ... on conflict do nothing), not an error."""
    if not rows:
        return
    conn = session.connection()
    insert = sqlite_insert if conn.dialect.name == "sqlite" else postgresql_insert
    statement = insert(SUPPRESSION).on_conflict_do_nothing(index_elements=[SUPPRESSION.c.email])
    values = [
        {"email": r.email, "reason": r.reason, "source": r.source, "created_at": r.created_at}
        for r in sorted(rows, key=lambda row: row.email)
    ]
    for chunk in chunked(values):
        conn.execute(statement, list(chunk))
