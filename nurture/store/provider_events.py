"""The SQL of provider events (SendGrid's Event Webhook): finding the ledger
row and the subscriber an event is about, and what reconcile needs to decide
whether an ``unknown`` send's silence means anything.

Nothing here commits: the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, and_, func, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from nurture.core.vocabulary import EventKind, SendStatus
from nurture.store.chunks import chunked
from nurture.store.tables import EventRow, SendRow, SubscriberRow

__all__ = [
    "DELIVERY_KINDS",
    "EventSend",
    "insert_new_events",
    "last_delivery_event",
    "recorded_event_ids",
    "sends_by_key",
    "sends_by_message_id",
    "subscriber_ids_by_email",
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


# --------------------------------------------------------------------------- batches
# One webhook post carries up to a few thousand events: each lookup below is
# one query per chunk of values, not one per event.


def sends_by_key(conn: Connection, keys: Iterable[str]) -> dict[str, EventSend]:
    """The ledger rows with these send ids (our ``nurture_send_id``), by key."""
    wanted = sorted({key for key in keys if len(key) <= 32})
    found: dict[str, EventSend] = {}
    for chunk in chunked(wanted):
        for row in conn.execute(select(*_COLUMNS).where(SEND.c.key.in_(chunk))):
            found[row.key] = EventSend(**row._mapping)
    return found


def sends_by_message_id(conn: Connection, message_ids: Iterable[str]) -> dict[str, EventSend]:
    """The ledger rows the provider answered these message ids for (the first
    row of each), by message id."""
    wanted = sorted({value for value in message_ids if len(value) <= 200})
    found: dict[str, EventSend] = {}
    for chunk in chunked(wanted):
        rows = conn.execute(
            select(SEND.c.provider_message_id, *_COLUMNS)
            .where(SEND.c.provider_message_id.in_(chunk))
            .order_by(SEND.c.id)
        )
        for row in rows:
            values = dict(row._mapping)
            found.setdefault(values.pop("provider_message_id"), EventSend(**values))
    return found


def subscriber_ids_by_email(conn: Connection, emails: Iterable[str]) -> dict[str, int]:
    """The ids of the subscribers stored under these (normalised) addresses."""
    found: dict[str, int] = {}
    for chunk in chunked(sorted(set(emails))):
        rows = conn.execute(
            select(SUBSCRIBER.c.email, SUBSCRIBER.c.id).where(SUBSCRIBER.c.email.in_(chunk))
        )
        found.update({row.email: int(row.id) for row in rows})
    return found


def recorded_event_ids(conn: Connection, event_ids: Iterable[str]) -> set[str]:
    """Those of ``event_ids`` already recorded."""
    found: set[str] = set()
    for chunk in chunked(sorted(set(event_ids))):
        rows = conn.execute(
            select(EVENT.c.provider_event_id).where(EVENT.c.provider_event_id.in_(chunk))
        )
        found.update(row.provider_event_id for row in rows)
    return found


def insert_new_events(conn: Connection, rows: list[dict[str, Any]]) -> set[str]:
    """Insert event rows whose ``provider_event_id`` is not yet recorded; the
    ids inserted. A concurrent post inserting the same event first wins, and
    this one skips it (insert ... on conflict do nothing)."""
    if not rows:
        return set()
    insert = sqlite_insert if conn.dialect.name == "sqlite" else postgresql_insert
    statement = (
        insert(EVENT)
        .on_conflict_do_nothing(index_elements=[EVENT.c.provider_event_id])
        .returning(EVENT.c.provider_event_id)
    )
    # One order for every post (by send, then kind): concurrent posts about
    # the same sends then take the locks of the event and funnel rows in the
    # same order, rather than deadlocking over them.
    ordered = sorted(
        rows, key=lambda row: (row.get("send_id") or 0, str(row["kind"]), row["provider_event_id"])
    )
    inserted: set[str] = set()
    for chunk in chunked(ordered):
        result = conn.execute(statement, list(chunk))
        inserted.update(row.provider_event_id for row in result)
    return inserted
