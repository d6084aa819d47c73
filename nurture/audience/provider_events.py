"""What SendGrid's Event Webhook tells us, applied: each event stored once,
tied to its ledger row and subscriber, and acted on.

* Every event becomes an ``event`` row, deduplicated by SendGrid's
  ``sg_event_id`` (SendGrid delivers at least once: a replayed batch changes
  nothing). An event type we do not know is kept as ``unknown``.
* The ledger row is found by our ``nurture_send_id`` custom arg (else by the
  message id SendGrid answered with); the subscriber by that row, else by the
  event's address. An event about a send we do not know is kept all the same.
* Any event about an ``unknown`` send proves SendGrid had it: the row becomes
  ``sent``, with a resolution saying which event settled it.
* A hard bounce, a drop for a bad address and a spam report block the address
  (:func:`nurture.audience.leaving.block`); an unsubscribe or a group
  unsubscribe unsubscribes from all email
  (:func:`nurture.audience.leaving.unsubscribe`). Opens and clicks are only
  recorded (a machine open is marked so).

Effects only ever stop mail or confirm a send, never undo either, so the order
events arrive in does not matter: a late ``delivered`` after a bounce leaves
the bounce standing. Everything flushes, nothing commits: the caller owns the
transaction (one per webhook post).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session

from nurture.audience.events import record_event
from nurture.audience.input import InvalidSubscriberError, normalise_email
from nurture.audience.leaving import block, unsubscribe
from nurture.core.vocabulary import EventKind, SendStatus, SubscriberStatus
from nurture.store import provider_events as store
from nurture.store.resolve import settle_send
from nurture.store.tables import SubscriberRow
from nurture.transports.sendgrid_events import SendGridEvent

__all__ = ["SOURCE", "Applied", "apply_sendgrid_events", "drop_status"]

SOURCE = "sendgrid"
"""The suppression source and ``via`` of what these events do, and who settled a send."""

_ID_LIMIT = 200  # event.provider_event_id
_NAME_LIMIT = 100  # event.sequence_id, event.step_id


@dataclass
class Applied:
    """What one post did, for the answer and the log (counts only: no addresses)."""

    received: int = 0
    recorded: int = 0
    duplicates: int = 0
    confirmed: int = 0
    blocked: int = 0
    unsubscribed: int = 0
    unmatched: int = 0


def drop_status(reason: str | None) -> SubscriberStatus | None:
    """The status a ``dropped`` event's ``reason`` gives the address, or None
    when the drop says nothing bad about it (spam content, a size limit ...)."""
    words = (reason or "").lower()
    if "bounced address" in words:
        return SubscriberStatus.BOUNCED
    if "spam reporting address" in words:
        return SubscriberStatus.COMPLAINED
    if "invalid" in words:
        return SubscriberStatus.INVALID
    return None


def event_id(event: SendGridEvent) -> str:
    """The event's idempotency key: ``sg_event_id``; for an event without one
    (or one too long for the column) a digest of the whole object, so a replay
    of it is still recognised."""
    given = event.provider_event_id
    if given is not None and len(given) <= _ID_LIMIT:
        return given
    canonical = json.dumps(event.payload, sort_keys=True, separators=(",", ":"), default=str)
    return "sendgrid-sha256:" + hashlib.sha256(canonical.encode("utf-8", "replace")).hexdigest()


def _name(value: str | None) -> str | None:
    return value if value is not None and len(value) <= _NAME_LIMIT else None


def _email(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return normalise_email(value)
    except InvalidSubscriberError:
        return None


def _text(payload: Any, key: str) -> str | None:
    value = payload.get(key)
    return value if isinstance(value, str) and value else None


def apply_sendgrid_events(
    session: Session, events: Iterable[SendGridEvent], *, now: datetime
) -> Applied:
    """Record and act on one webhook post's events (see the module's docstring)."""
    applied = Applied()
    for event in events:
        applied.received += 1
        _apply(session, event, now, applied)
    session.flush()
    return applied


def _apply(session: Session, event: SendGridEvent, now: datetime, applied: Applied) -> None:
    conn = session.connection()
    send = store.send_for_event(conn, key=event.send_id, message_id=event.message_id)
    email = _email(event.email)
    subscriber_id = send.subscriber_id if send is not None else None
    if subscriber_id is None and email is not None:
        subscriber_id = store.subscriber_id_by_email(conn, email)
    if send is None:
        applied.unmatched += 1
    # A time in the future (a wrong clock) is taken as now: an exit is never
    # recorded before it happened.
    occurred = event.occurred_at if event.occurred_at and event.occurred_at <= now else now
    identifier = event_id(event)
    inserted = record_event(
        conn,
        kind=event.kind,
        subscriber_id=subscriber_id,
        occurred_at=occurred,
        received_at=now,
        provider_event_id=identifier,
        sequence_id=send.sequence_id if send else _name(event.sequence_id),
        step_id=send.step_id if send else _name(event.step_id),
        send_id=send.id if send else None,
        payload=dict(event.payload),
        machine=event.machine,
        user_agent=_text(event.payload, "useragent"),
    )
    if not inserted:
        applied.duplicates += 1
        return
    applied.recorded += 1
    confirms = send is not None and send.status == SendStatus.UNKNOWN
    if confirms and send is not None and event.kind != EventKind.UNKNOWN:
        settled = settle_send(
            conn,
            send.id,
            status=SendStatus.SENT,
            resolution=f"as-sent: SendGrid reported it {event.provider_event} ({identifier})",
            by=SOURCE,
            now=now,
        )
        applied.confirmed += int(settled)
    subscriber = session.get(SubscriberRow, subscriber_id) if subscriber_id is not None else None
    status = _blocking_status(event)
    if status is not None:
        address = subscriber.email if subscriber is not None else email
        if address is not None:
            block(
                session, address, subscriber, status=status, source=SOURCE, now=occurred,
                reason=_reason(event),
            )  # fmt: skip
            applied.blocked += 1
    elif event.kind == EventKind.UNSUBSCRIBED and subscriber is not None:
        left = unsubscribe(
            session, subscriber, now=occurred, via=SOURCE,
            payload={"provider_event_id": identifier, "event": event.provider_event},
        )  # fmt: skip
        if left.changed:
            applied.unsubscribed += 1


def _blocking_status(event: SendGridEvent) -> SubscriberStatus | None:
    if event.kind == EventKind.BOUNCED:
        # ``type: blocked`` is already FAILED (see sendgrid_events.kind_of);
        # only a bounce that says so, or says nothing, is about the address.
        kind = event.payload.get("type")
        return SubscriberStatus.BOUNCED if kind in (None, "bounce") else None
    if event.kind == EventKind.COMPLAINED:
        return SubscriberStatus.COMPLAINED
    if event.kind == EventKind.REJECTED:
        return drop_status(_text(event.payload, "reason"))
    return None


def _reason(event: SendGridEvent) -> str:
    why = _text(event.payload, "reason") or _text(event.payload, "type")
    detail = f": {why}" if why else ""
    return f"SendGrid {event.provider_event}{detail}"[:500]
