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
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlmodel import Session

from nurture.audience.complaints import ComplaintLimit, check_complaint_rates
from nurture.audience.input import InvalidSubscriberError, normalise_email
from nurture.audience.leaving import Block, Unsubscribe, leave_all
from nurture.core.vocabulary import EventKind, SendStatus, SubscriberStatus
from nurture.store import leaving as store_leaving
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
    paused: list[str] = field(default_factory=list)
    """Sequences this post's complaints paused."""


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
    session: Session,
    events: Iterable[SendGridEvent],
    *,
    now: datetime,
    complaint_limit: ComplaintLimit | None = None,
) -> Applied:
    """Record and act on one webhook post's events (see the module's docstring).

    A post carries up to a few thousand events, so the lookups (ledger rows,
    subscribers, events already recorded) and the inserts are one query per
    chunk of a batch; only the events that change something (a confirmation,
    a block, an unsubscribe) are acted on one by one. With ``complaint_limit``,
    the sequences new spam complaints name have their complaint rate checked
    once, after the post (:mod:`nurture.audience.complaints`).
    """
    batch = list(events)
    applied = Applied(received=len(batch))
    conn = session.connection()
    by_key = store.sends_by_key(conn, [e.send_id for e in batch if e.send_id is not None])
    by_message = store.sends_by_message_id(
        conn,
        [
            e.message_id
            for e in batch
            if e.message_id is not None and (e.send_id is None or e.send_id not in by_key)
        ],
    )
    planned: list[_Planned] = []
    seen: set[str] = set()
    for event in batch:
        identifier = event_id(event)
        if identifier in seen:  # the same event twice in one post
            applied.duplicates += 1
            continue
        seen.add(identifier)
        send = by_key.get(event.send_id) if event.send_id is not None else None
        if send is None and event.message_id is not None:
            send = by_message.get(event.message_id)
        if send is None:
            applied.unmatched += 1
        # A time in the future (a wrong clock) is taken as now: an exit is never
        # recorded before it happened.
        occurred = event.occurred_at if event.occurred_at and event.occurred_at <= now else now
        planned.append(_Planned(event, identifier, send, _email(event.email), occurred))
    ids = store.subscriber_ids_by_email(
        conn, [p.email for p in planned if p.send is None and p.email is not None]
    )
    for item in planned:
        if item.send is not None:
            item.subscriber_id = item.send.subscriber_id
        elif item.email is not None:
            item.subscriber_id = ids.get(item.email)
    already = store.recorded_event_ids(conn, [p.identifier for p in planned])
    fresh = [p for p in planned if p.identifier not in already]
    inserted = store.insert_new_events(conn, [_row(p, now) for p in fresh])
    applied.duplicates += len(planned) - len(inserted)
    applied.recorded += len(inserted)
    acting = [p for p in fresh if p.identifier in inserted]
    subscribers = store_leaving.subscribers_by_id(
        session, [p.subscriber_id for p in acting if p.subscriber_id is not None and _changes(p)]
    )
    leaving: list[Block | Unsubscribe] = []  # applied together, in their order
    complained: set[str] = set()
    for item in acting:
        _act(session, item, subscribers, leaving, now, applied)
        if item.event.kind == EventKind.COMPLAINED:
            sequence = item.send.sequence_id if item.send else _name(item.event.sequence_id)
            if sequence is not None:
                complained.add(sequence)
    for action, left in zip(leaving, leave_all(session, leaving, source=SOURCE), strict=True):
        if isinstance(action, Unsubscribe) and left.changed:
            applied.unsubscribed += 1
    session.flush()
    if complaint_limit is not None and complained:
        applied.paused = check_complaint_rates(
            session.connection(), sorted(complained), complaint_limit, now
        )
    return applied


@dataclass
class _Planned:
    event: SendGridEvent
    identifier: str
    send: store.EventSend | None
    email: str | None
    occurred: datetime
    subscriber_id: int | None = None


def _row(item: _Planned, now: datetime) -> dict[str, Any]:
    event, send = item.event, item.send
    agent = _text(event.payload, "useragent")
    return {
        "provider_event_id": item.identifier,
        "kind": EventKind(event.kind),
        "subscriber_id": item.subscriber_id,
        "send_id": send.id if send else None,
        "sequence_id": send.sequence_id if send else _name(event.sequence_id),
        "step_id": send.step_id if send else _name(event.step_id),
        "product": None,
        "occurred_at": item.occurred,
        "received_at": now,
        "payload": dict(event.payload),
        "machine": event.machine,
        "user_agent": None if agent is None else agent[:500],
    }


def _changes(item: _Planned) -> bool:
    """Whether the event blocks an address or unsubscribes someone."""
    return _blocking_status(item.event) is not None or item.event.kind == EventKind.UNSUBSCRIBED


def _act(
    session: Session,
    item: _Planned,
    subscribers: dict[int, SubscriberRow],
    leaving: list[Block | Unsubscribe],
    now: datetime,
    applied: Applied,
) -> None:
    """What a newly recorded event changes: an ``unknown`` send confirmed now;
    an address blocked or a subscriber unsubscribed, added to ``leaving``."""
    event, send = item.event, item.send
    if send is not None and send.status == SendStatus.UNKNOWN and event.kind != EventKind.UNKNOWN:
        settled = settle_send(
            session.connection(),
            send.id,
            status=SendStatus.SENT,
            resolution=f"as-sent: SendGrid reported it {event.provider_event} ({item.identifier})",
            by=SOURCE,
            now=now,
        )
        applied.confirmed += int(settled)
    if not _changes(item):
        return
    subscriber = subscribers.get(item.subscriber_id) if item.subscriber_id is not None else None
    status = _blocking_status(event)
    if status is not None:
        address = subscriber.email if subscriber is not None else item.email
        if address is not None:
            leaving.append(Block(address, subscriber, status, _reason(event), item.occurred))
            applied.blocked += 1
    elif subscriber is not None:
        payload = {"provider_event_id": item.identifier, "event": event.provider_event}
        leaving.append(Unsubscribe(subscriber, item.occurred, SOURCE, payload))


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
