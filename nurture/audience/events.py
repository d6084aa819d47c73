"""Recording what subscribers do (purchases, clicks, unsubscribes) as events.

Events are idempotent by ``provider_event_id``: recording the same one twice is
a no-op (webhook replays, double clicks)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from nurture.store.queries import EVENT

EVENT_KINDS = (
    "delivered", "open", "click", "bounce", "spamreport", "unsubscribe", "purchase", "unknown",
)  # fmt: skip


def record_event(
    conn: Connection,
    *,
    kind: str,
    subscriber_id: int | None,
    occurred_at: datetime,
    received_at: datetime,
    provider_event_id: str | None = None,
    sequence_id: str | None = None,
    step_id: str | None = None,
    product: str | None = None,
    send_id: int | None = None,
    payload: dict[str, Any] | None = None,
) -> bool:
    """Store one event; False when an event with this id was already recorded."""
    if kind not in EVENT_KINDS:
        raise ValueError(f"unknown event kind {kind!r}")
    event_id = provider_event_id or f"nurture:{uuid.uuid4().hex}"
    exists = conn.execute(select(EVENT.c.id).where(EVENT.c.provider_event_id == event_id)).first()
    if exists is not None:
        return False
    values = {
        "provider_event_id": event_id,
        "kind": kind,
        "subscriber_id": subscriber_id,
        "send_id": send_id,
        "sequence_id": sequence_id,
        "step_id": step_id,
        "product": product,
        "occurred_at": occurred_at,
        "received_at": received_at,
        "payload": payload or {},
    }
    try:
        with conn.begin_nested():
            conn.execute(EVENT.insert().values(values))
    except IntegrityError:  # a concurrent insert of the same event won
        return False
    return True
