"""The words for states and events, one vocabulary everywhere.

Every status column and every event kind is spelled by one of these enums: the
database CHECK constraints (migration 0002) are built from them, the store
writes them, the core compares against them. They are ``StrEnum``s, so a member
equals the plain string the database hands back (``SendStatus.SENT == "sent"``).

Event kinds are the normalised names django-anymail uses for provider
tracking events, so each provider's own words (SendGrid's ``spamreport``,
``open``, ``bounce`` ...) are translated once, where the event comes in (see
``nurture.transports.sendgrid_events``), and nothing past that boundary knows
a provider's dialect. ``purchased`` is ours: a purchase is reported by the
shop, not by the email provider.
"""

from __future__ import annotations

from enum import StrEnum


class SubscriberStatus(StrEnum):
    """Only ``active`` subscribers are sent to."""

    ACTIVE = "active"
    UNCONFIRMED = "unconfirmed"  # waiting for the double opt-in click
    UNSUBSCRIBED = "unsubscribed"
    INVALID = "invalid"  # the provider rejected the address
    BOUNCED = "bounced"
    COMPLAINED = "complained"


LEAVABLE = frozenset({SubscriberStatus.ACTIVE, SubscriberStatus.UNCONFIRMED})
"""The subscriber statuses an unsubscribe changes: mailed, or about to be."""


def reason_names_status(status: str, reason: str) -> bool:
    """Whether ``reason`` already says ``status`` (``unsubscribed (one-click)``
    for ``unsubscribed``), so a page shows the status once."""
    return reason.startswith(f"{status} (")


class EnrollmentStatus(StrEnum):
    """``active`` until every step is decided (completed), the subscriber left
    or was blocked (exited), or the goal was reached (converted)."""

    ACTIVE = "active"
    COMPLETED = "completed"
    EXITED = "exited"
    CONVERTED = "converted"


class SendStatus(StrEnum):
    """A ledger row's state.

    ``queued`` is planned and rendered but not yet handed to the provider: safe
    to send later (a crash returns it to due). ``reserved`` is committed in the
    moment before the provider is called and confirmed as ``sent`` after;
    ``retry`` is a transient failure waiting for its next attempt; ``unknown``
    means the provider may or may not have it (never resent automatically).
    """

    QUEUED = "queued"
    RESERVED = "reserved"
    SENT = "sent"
    SKIPPED = "skipped"
    FAILED = "failed"
    UNKNOWN = "unknown"
    RETRY = "retry"


class EventKind(StrEnum):
    """What happened to a message or a subscriber (django-anymail's normalised
    tracking event names, plus our own ``purchased``)."""

    QUEUED = "queued"
    SENT = "sent"
    REJECTED = "rejected"  # the provider refused to send it (e.g. a suppressed address)
    FAILED = "failed"
    BOUNCED = "bounced"
    DEFERRED = "deferred"
    DELIVERED = "delivered"
    AUTORESPONDED = "autoresponded"
    OPENED = "opened"
    CLICKED = "clicked"
    COMPLAINED = "complained"
    UNSUBSCRIBED = "unsubscribed"
    SUBSCRIBED = "subscribed"
    PURCHASED = "purchased"
    UNKNOWN = "unknown"  # a provider event we do not (yet) understand; kept, never an error
