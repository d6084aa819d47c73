"""The SQL of provider events (SendGrid's Event Webhook): finding the ledger
row and the subscriber an event is about, and what reconcile needs to decide
whether an ``unknown`` send's silence means anything.

Nothing here commits: the caller owns the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Table, and_, func, select
from sqlalchemy.engine import Connection

from nurture.core.vocabulary import EventKind, SendStatus
from nurture.store.tables import EventRow, SendRow, SubscriberRow

__all__ = [
    "DELIVERY_KINDS",
    "EventSend",
    "last_delivery_event",
    "send_for_event",
    "subscriber_id_by_email",
    "unconfirmed_sends",
]

SEND: Table = SendRow.__table__  # type: ignore[attr-defined]
EVENT: Table = EventRow.__table__  # type: ignore[attr-defined]
SUBSCRIBER: Table = SubscriberRow.__table__  # type: ignore[attr-defined]

DELIVERY_KINDS = (
    EventKind.QUEUED,
    EventKind.DELIVERED,
    EventKind.DEFERRED,
    EventKind.BOUNCED,
    EventKind.REJECTED,
    EventKind.FAILED,
)
"""Kinds only a provider reports about a send (nurture records none of them
itself): proof that the provider's webhook is reaching us."""


@dataclass(frozen=True)
class EventSend:
    """The ledger row an event is about."""

    id: int
    key: str
    subscriber_id: int
    sequence_id: str
    step_id: str
    status: str


_COLUMNS = (
    SEND.c.id,
    SEND.c.key,
    SEND.c.subscriber_id,
    SEND.c.sequence_id,
    SEND.c.step_id,
    SEND.c.status,
)


def send_for_event(
    conn: Connection, *, key: str | None, message_id: str | None
) -> EventSend | None:
    """The ledger row with our send id ``key`` (the ``nurture_send_id`` custom
    arg), else the one the provider answered ``message_id`` for; None if neither."""
    if key is not None and len(key) <= 32:
        row = conn.execute(select(*_COLUMNS).where(SEND.c.key == key)).first()
        if row is not None:
            return EventSend(**row._mapping)
    if message_id is not None and len(message_id) <= 200:
        row = conn.execute(
            select(*_COLUMNS)
            .where(SEND.c.provider_message_id == message_id)
            .order_by(SEND.c.id)
            .limit(1)
        ).first()
        if row is not None:
            return EventSend(**row._mapping)
    return None


def subscriber_id_by_email(conn: Connection, email: str) -> int | None:
    """The id of the subscriber stored under ``email`` (normalised), or None."""
    found = conn.execute(select(SUBSCRIBER.c.id).where(SUBSCRIBER.c.email == email)).first()
    return None if found is None else int(found.id)


def last_delivery_event(conn: Connection) -> datetime | None:
    """When the newest event of a :data:`DELIVERY_KINDS` kind was received."""
    value = conn.execute(
        select(func.max(EVENT.c.received_at)).where(EVENT.c.kind.in_(list(DELIVERY_KINDS)))
    ).scalar_one()
    return value if isinstance(value, datetime) else None


def unconfirmed_sends(conn: Connection, *, before: datetime) -> list[tuple[int, datetime]]:
    """``unknown`` ledger rows that no event is about, that became unknown at
    or before ``before`` and that were never settled (``resolution`` is empty:
    a row an admin or reconcile settled once is never picked again), in id
    order: (id, when it became unknown)."""
    any_event = select(EVENT.c.id).where(EVENT.c.send_id == SEND.c.id).exists()
    since = func.coalesce(SEND.c.sent_at, SEND.c.decided_at)
    rows = conn.execute(
        select(SEND.c.id, since.label("since"))
        .where(
            and_(
                SEND.c.status == SendStatus.UNKNOWN,
                SEND.c.resolution.is_(None),
                since <= before,
                ~any_event,
            )
        )
        .order_by(SEND.c.id)
    )
    return [(int(row.id), row.since) for row in rows]
