"""The SQL of sign-up with double opt-in (:mod:`nurture.audience.signup`).

Confirmation emails are not steps of a sequence, so they have no ledger row
(``send`` needs an enrollment, and an unconfirmed subscriber has none). Each
one is recorded as an ``event`` row instead: kind ``sent`` (or ``failed``),
``payload = {"purpose": "confirmation", ...}`` and a ``provider_event_id``
starting with :data:`CONFIRMATION_PREFIX`, by which :func:`confirmation_log`
finds them for ``nurture log`` and :func:`last_confirmation_at` for the resend
throttle. Nothing here commits: the caller owns the transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection
from sqlmodel import Session, col

from nurture.core.vocabulary import EventKind
from nurture.store.tables import EventRow, SubscriberRow

__all__ = [
    "CONFIRMATION_PREFIX",
    "add_confirmation_event",
    "confirmation_join",
    "confirmation_log",
    "last_confirmation_at",
    "recent_confirmations",
    "subscriber_by_id",
]

CONFIRMATION_PREFIX = "confirmation:"
"""How the ``provider_event_id`` of a confirmation email's event starts."""


def subscriber_by_id(session: Session, subscriber_id: int) -> SubscriberRow | None:
    """The subscriber with this id, or None."""
    return session.get(SubscriberRow, subscriber_id)


def add_confirmation_event(
    session: Session,
    *,
    key: str,
    subscriber_id: int,
    sent: bool,
    at: datetime,
    payload: dict[str, Any],
) -> None:
    """Record one confirmation email (``sent``) or a failed attempt at one."""
    session.add(
        EventRow(
            provider_event_id=f"{CONFIRMATION_PREFIX}{key}",
            kind=EventKind.SENT if sent else EventKind.FAILED,
            subscriber_id=subscriber_id,
            occurred_at=at,
            received_at=at,
            payload={"purpose": "confirmation", **payload},
        )
    )
    session.flush()


def confirmation_join(session: Session, subscriber_id: int, key: str) -> dict[str, Any] | None:
    """What the confirmation email ``key`` sent to ``subscriber_id`` asks to
    join (the ``join`` of its event's payload), or None: no such email sent
    to that subscriber, or one that asked to confirm a new address."""
    query = select(col(EventRow.payload)).where(
        col(EventRow.provider_event_id) == f"{CONFIRMATION_PREFIX}{key}",
        col(EventRow.subscriber_id) == subscriber_id,
        col(EventRow.kind) == EventKind.SENT,
    )
    payload = session.execute(query).scalar_one_or_none()
    join = payload.get("join") if isinstance(payload, dict) else None
    return join if isinstance(join, dict) else None


def last_confirmation_at(session: Session, subscriber_id: int) -> datetime | None:
    """When the subscriber's latest confirmation email was sent, or None."""
    query = (
        select(col(EventRow.occurred_at))
        .where(
            col(EventRow.subscriber_id) == subscriber_id,
            col(EventRow.kind) == EventKind.SENT,
            col(EventRow.provider_event_id).startswith(CONFIRMATION_PREFIX),
        )
        .order_by(col(EventRow.occurred_at).desc())
        .limit(1)
    )
    found: datetime | None = session.execute(query).scalar_one_or_none()
    return found


def recent_confirmations(
    session: Session, subscriber_id: int, since: datetime
) -> list[tuple[datetime, dict[str, Any]]]:
    """When each confirmation email sent to ``subscriber_id`` at or after
    ``since`` went out, with its event's payload; newest first."""
    query = (
        select(col(EventRow.occurred_at), col(EventRow.payload))
        .where(
            col(EventRow.subscriber_id) == subscriber_id,
            col(EventRow.kind) == EventKind.SENT,
            col(EventRow.provider_event_id).startswith(CONFIRMATION_PREFIX),
            col(EventRow.occurred_at) >= since,
        )
        .order_by(col(EventRow.occurred_at).desc())
    )
    return [
        (at, payload if isinstance(payload, dict) else {})
        for at, payload in session.execute(query).all()
    ]


def confirmation_log(
    conn: Connection,
    *,
    email: str | None,
    status: str | None,
    limit: int,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[dict[str, Any]]:
    """Confirmation emails as rows shaped like the send log's (newest first),
    sent at or after ``since`` and before ``until`` when given.

    ``sequence_id`` is ``signup`` and ``step_id`` ``confirmation``; ``reason``
    says why a send failed; ``provider_message_id`` is the Message-ID.
    """
    query = (
        select(
            col(EventRow.id),
            col(EventRow.occurred_at),
            col(EventRow.kind),
            col(EventRow.payload),
            col(SubscriberRow.email),
        )
        .join(SubscriberRow, col(SubscriberRow.id) == col(EventRow.subscriber_id))
        .where(col(EventRow.provider_event_id).startswith(CONFIRMATION_PREFIX))
        .order_by(col(EventRow.occurred_at).desc(), col(EventRow.id).desc())
        .limit(limit)
    )
    if email is not None:
        query = query.where(col(SubscriberRow.email) == email.strip().lower())
    if status is not None:
        query = query.where(col(EventRow.kind) == status)
    if since is not None:
        query = query.where(col(EventRow.occurred_at) >= since)
    if until is not None:
        query = query.where(col(EventRow.occurred_at) < until)
    rows = []
    for event_id, occurred_at, kind, stored, address in conn.execute(query):
        payload = stored if isinstance(stored, dict) else {}
        rows.append(
            {
                "id": event_id,
                "decided_at": occurred_at,
                "status": kind,
                "email": address,
                "name": None,
                "sent_at": occurred_at if kind == EventKind.SENT else None,
                "subject": None,
                "key": None,
                "sequence_version": None,
                "sequence_id": "signup",
                "step_id": "confirmation",
                "reason": payload.get("error"),
                "provider_message_id": payload.get("message_id"),
                "attempts": 1,
            }
        )
    return rows
