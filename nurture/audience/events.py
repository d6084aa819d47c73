"""Recording what subscribers do (purchases, clicks, unsubscribes) as events.

Events are idempotent by ``provider_event_id``: recording the same one twice is
a no-op (webhook replays, double clicks).

An event that can end an enrollment (:data:`ENDING_EVENTS`: a purchase that
may reach a sequence's goal, an unsubscribe) makes the subscriber's active
enrollments due at once, so the next dispatch pass records the exit then, not
at the next step's due time."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from nurture.core.vocabulary import EventKind
from nurture.store.events import bring_enrollments_forward, insert_event

ENDING_EVENTS = frozenset({EventKind.PURCHASED, EventKind.UNSUBSCRIBED})
"""The kinds the decision function may end an enrollment on."""


def record_event(
    conn: Connection,
    *,
    kind: EventKind | str,
    subscriber_id: int | None,
    occurred_at: datetime,
    received_at: datetime,
    provider_event_id: str | None = None,
    sequence_id: str | None = None,
    step_id: str | None = None,
    product: str | None = None,
    send_id: int | None = None,
    payload: dict[str, Any] | None = None,
    machine: bool = False,
    user_agent: str | None = None,
) -> bool:
    """Store one event; False when an event with this id was already recorded.

    ``kind`` is an :class:`EventKind` or its value; a provider's own word
    (``open``, ``spamreport``) is refused: translate it where it comes in.
    ``machine`` marks a click or open a scanner or proxy most likely made (see
    :mod:`nurture.core.engagement`): kept, but not counted as engagement.
    """
    try:
        checked = EventKind(kind)
    except ValueError as exc:
        words = ", ".join(EventKind)
        raise ValueError(f"unknown event kind {kind!r} (one of {words})") from exc
    inserted = insert_event(
        conn,
        {
            "provider_event_id": provider_event_id or f"nurture:{uuid.uuid4().hex}",
            "kind": checked,
            "subscriber_id": subscriber_id,
            "send_id": send_id,
            "sequence_id": sequence_id,
            "step_id": step_id,
            "product": product,
            "occurred_at": occurred_at,
            "received_at": received_at,
            "payload": payload or {},
            "machine": machine,
            "user_agent": None if user_agent is None else user_agent[:500],
        },
    )
    if inserted and checked in ENDING_EVENTS and subscriber_id is not None:
        bring_enrollments_forward(conn, subscriber_id, occurred_at)
    return inserted
