"""The SQL for purchases: stored once per (source, order id), and the sends a
purchase may be credited to (:mod:`nurture.audience.purchases` decides which)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from nurture.core.vocabulary import EventKind, SendStatus
from nurture.store.queries import ENROLLMENT, EVENT, SEND, SUBSCRIBER
from nurture.store.tables import PurchaseRow

PURCHASE: Table = PurchaseRow.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class SendRef:
    """The send a purchase is credited to."""

    id: int
    key: str
    subscriber_id: int
    sequence_id: str
    step_id: str


_SEND_COLUMNS = (SEND.c.id, SEND.c.key, SEND.c.subscriber_id, SEND.c.sequence_id, SEND.c.step_id)


def _ref(row: Any) -> SendRef | None:
    if row is None:
        return None
    return SendRef(row.id, row.key, row.subscriber_id, row.sequence_id, row.step_id)


def purchase_id(conn: Connection, source: str, order_id: str) -> int | None:
    """The id of the purchase stored for (``source``, ``order_id``), if any."""
    found = conn.execute(
        select(PURCHASE.c.id).where(PURCHASE.c.source == source, PURCHASE.c.order_id == order_id)
    ).first()
    return None if found is None else int(found.id)


def insert_purchase(conn: Connection, values: dict[str, Any]) -> int | None:
    """Insert one purchase; its id, or None when (source, order id) is stored.

    The unique constraint settles a race with a concurrent insert of the same
    order: the insert runs in a savepoint, so the caller's transaction survives.
    """
    try:
        with conn.begin_nested():
            result = conn.execute(PURCHASE.insert().values(values).returning(PURCHASE.c.id))
            new_id = int(result.scalar_one())
    except IntegrityError:
        if purchase_id(conn, str(values["source"]), str(values["order_id"])) is not None:
            return None
        raise
    return new_id


def subscriber_id_by_email(conn: Connection, email: str) -> int | None:
    """The id of the subscriber with this (normalised) address."""
    found = conn.execute(select(SUBSCRIBER.c.id).where(SUBSCRIBER.c.email == email)).first()
    return None if found is None else int(found.id)


def send_by_key(conn: Connection, key: str) -> SendRef | None:
    """The send with this key (``send.key``, what a ``nurture_ref`` names)."""
    return _ref(conn.execute(select(*_SEND_COLUMNS).where(SEND.c.key == key)).first())


def last_human_click(
    conn: Connection, subscriber_id: int, *, since: datetime, until: datetime
) -> SendRef | None:
    """The send whose link ``subscriber_id`` last clicked in [since, until],
    counting only clicks by a person (``event.machine`` false): link scanners
    and privacy proxies earn nothing."""
    row = conn.execute(
        select(*_SEND_COLUMNS)
        .select_from(EVENT.join(SEND, SEND.c.id == EVENT.c.send_id))
        .where(
            SEND.c.subscriber_id == subscriber_id,
            EVENT.c.kind == EventKind.CLICKED,
            EVENT.c.machine.is_(False),
            EVENT.c.occurred_at >= since,
            EVENT.c.occurred_at <= until,
        )
        .order_by(EVENT.c.occurred_at.desc(), EVENT.c.id.desc())
        .limit(1)
    ).first()
    return _ref(row)


def last_delivered_send(conn: Connection, subscriber_id: int) -> SendRef | None:
    """The last send with status ``sent`` of ``subscriber_id``'s most recent
    enrollment (the sequence they joined last)."""
    latest = (
        select(ENROLLMENT.c.id)
        .where(ENROLLMENT.c.subscriber_id == subscriber_id)
        .order_by(ENROLLMENT.c.enrolled_at.desc(), ENROLLMENT.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    row = conn.execute(
        select(*_SEND_COLUMNS)
        .where(SEND.c.enrollment_id == latest, SEND.c.status == SendStatus.SENT)
        .order_by(SEND.c.sent_at.desc(), SEND.c.id.desc())
        .limit(1)
    ).first()
    return _ref(row)
