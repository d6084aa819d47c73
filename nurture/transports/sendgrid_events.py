"""SendGrid's Event Webhook in our words: the boundary where its ``event``
names become :class:`~nurture.core.vocabulary.EventKind`.

SendGrid posts a JSON array of event objects. Each one has ``event``,
``email``, ``timestamp`` (Unix seconds), ``sg_event_id`` (unique per event:
our idempotency key) and ``sg_message_id``; the custom args we send with every
email (``nurture_send_id``, ``nurture_sequence``, ``nurture_step``, see
``nurture.transports.sendgrid``) come back as top-level keys. Some events add
their own fields: ``type`` on a bounce, ``url`` on a click,
``sg_machine_open`` on an open.

Pure: no HTTP, no database. Nothing here raises for an event type we do not
know (SendGrid adds types; account events share the webhook): it becomes
``EventKind.UNKNOWN`` with its payload kept, to be looked at later.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from nurture.core.timing import EARLIEST, LATEST
from nurture.core.vocabulary import EventKind

KINDS: Mapping[str, EventKind] = MappingProxyType(
    {
        "processed": EventKind.QUEUED,  # accepted, about to be sent
        "dropped": EventKind.REJECTED,  # never sent (suppressed address, invalid ...)
        "delivered": EventKind.DELIVERED,
        "deferred": EventKind.DEFERRED,  # the receiving server said "try later"
        "bounce": EventKind.BOUNCED,  # see BLOCKED_KIND for type=blocked
        "open": EventKind.OPENED,
        "click": EventKind.CLICKED,
        "spamreport": EventKind.COMPLAINED,
        "unsubscribe": EventKind.UNSUBSCRIBED,
        "group_unsubscribe": EventKind.UNSUBSCRIBED,
        "group_resubscribe": EventKind.SUBSCRIBED,
    }
)

# An event ``timestamp`` outside EARLIEST..LATEST is no time SendGrid reports:
# it is taken as missing (a future time is taken as the receive time anyway).

# A bounce with ``type: blocked`` is the receiving server refusing the message
# (the sending IP's reputation, content), not the address: this message failed,
# but marking the subscriber as bounced would suppress a good address.
BLOCKED_KIND = EventKind.FAILED


@dataclass(frozen=True)
class SendGridEvent:
    """One Event Webhook event, read. ``payload`` is the object as SendGrid
    sent it, untouched, for the event row and for anything not read here."""

    kind: EventKind
    occurred_at: datetime | None
    """From ``timestamp``, aware UTC; None when missing, not a number or not a
    plausible time (see :data:`EARLIEST`): the caller then uses the time it
    received the post."""
    provider_event_id: str | None
    message_id: str | None
    """``sg_message_id`` up to its first dot: the ``X-Message-Id`` the Mail
    Send API answered with, which the ledger keeps as ``provider_message_id``
    (SendGrid appends a per-recipient ``.filter...`` suffix in events)."""
    email: str | None
    send_id: str | None
    """Our ``nurture_send_id`` custom arg (the ledger row's key)."""
    sequence_id: str | None
    step_id: str | None
    url: str | None
    """The link clicked (clicks only)."""
    machine: bool
    """An open by a machine, not a person (``sg_machine_open``: Apple Mail
    Privacy Protection and security scanners prefetch every image)."""
    provider_event: str
    """SendGrid's own word for it (``bounce``, ``spamreport`` ...)."""
    payload: Mapping[str, Any]


def kind_of(payload: Mapping[str, Any]) -> EventKind:
    """The :class:`EventKind` of one event object; ``UNKNOWN`` when its
    ``event`` is missing or not one we know."""
    name = payload.get("event")
    if not isinstance(name, str):
        return EventKind.UNKNOWN
    if name == "bounce" and payload.get("type") == "blocked":
        return BLOCKED_KIND
    return KINDS.get(name, EventKind.UNKNOWN)


def read_event(payload: Mapping[str, Any]) -> SendGridEvent:
    """One event object of a webhook post, in our words.

    Raises :class:`TypeError` only when ``payload`` is not a JSON object; any
    object reads, with None for what it lacks.
    """
    if not isinstance(payload, Mapping):
        raise TypeError(f"a SendGrid event is a JSON object, got {type(payload).__name__}")
    message_id = _text(payload, "sg_message_id")
    name = payload.get("event")
    return SendGridEvent(
        kind=kind_of(payload),
        occurred_at=_timestamp(payload.get("timestamp")),
        provider_event_id=_text(payload, "sg_event_id"),
        message_id=message_id.split(".", 1)[0] if message_id else None,
        email=_text(payload, "email"),
        send_id=_text(payload, "nurture_send_id"),
        sequence_id=_text(payload, "nurture_sequence"),
        step_id=_text(payload, "nurture_step"),
        url=_text(payload, "url"),
        machine=payload.get("sg_machine_open") is True,
        provider_event=name if isinstance(name, str) else "",
        payload=payload,
    )


def read_events(body: Any) -> list[SendGridEvent]:
    """Every event of a webhook post (a JSON array of objects)."""
    if not isinstance(body, list):
        raise TypeError(f"a SendGrid webhook post is a JSON array, got {type(body).__name__}")
    return [read_event(item) for item in body]


def _text(payload: Mapping[str, Any], key: str) -> str | None:
    value = payload.get(key)
    return value if isinstance(value, str) and value else None


def _timestamp(value: Any) -> datetime | None:
    # bool is an int in Python, and never a time.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        moment = datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):  # too large, or not finite
        return None
    # A signed event may still carry any number. One outside these years is no
    # time SendGrid reports, so it counts as missing like any other bad
    # timestamp (the receive time is used) instead of being stored: near
    # datetime.min or max, shifting it into a time zone overflows, and the
    # admin pages that show it fail.
    return moment if EARLIEST <= moment < LATEST else None
