"""What sites and apps send through ``/api/v1``: subscribers and app events.

**Subscribers** (:func:`ingest_subscriber`) go through the same
:class:`~nurture.audience.input.SubscriberInput` and
:func:`~nurture.audience.subscribers.upsert_subscribers` as the CLI and the CSV
import. ``confirmed=True`` is the caller saying it collected the consent itself:
the subscriber is ``active`` and enrolled by the sequences' triggers. Otherwise
the subscriber is ``unconfirmed`` and enrolled in nothing until confirmed
(double opt-in). An address that is suppressed (an erased address included,
see :mod:`nurture.audience.personal_data`) is stored but never enrolled or
mailed; the result says so.

**App events** (:func:`record_app_event`) are idempotent by the caller's
``event_id``: a replay changes nothing. The subscriber must exist: an event
cannot carry consent, so an unknown address is refused
(:class:`UnknownSubscriberError`) rather than created; post the subscriber
first. An event whose name a sequence's ``trigger: {event: NAME}`` names
enrolls the subscriber (:func:`~nurture.audience.enrollment.enroll_on_event`),
with the event's properties kept on the enrollment for ``trigger.properties``.

Every function flushes but does not commit: the caller owns the transaction.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from nurture.audience.consent import Consent
from nurture.audience.enrollment import enroll_on_event
from nurture.audience.input import InvalidSubscriberError, SubscriberInput, check_text
from nurture.audience.subscribers import upsert_subscribers
from nurture.audience.suppression import is_suppressed
from nurture.core.loader import LoadedSequence
from nurture.core.model import TRIGGER_EVENT_PATTERN
from nurture.core.vocabulary import SubscriberStatus
from nurture.errors import NurtureError
from nurture.store import api as store
from nurture.store import audience as audience_store
from nurture.store.tables import AppEventRow, EnrollmentRow, SubscriberRow

__all__ = [
    "CLOCK_SKEW",
    "EVENT_LIMITS",
    "Ingested",
    "RecordedEvent",
    "UnknownSubscriberError",
    "check_event",
    "ingest_subscriber",
    "record_app_event",
]

EVENT_LIMITS = {"event_id": 200, "properties": 50, "properties_json": 8000, "value": 2000}
"""The most an app event may hold: its id's characters, properties, the
properties as JSON, and one string in them."""

_EVENT_NAME = re.compile(TRIGGER_EVENT_PATTERN)

CLOCK_SKEW = timedelta(minutes=5)
"""How far in the future a caller's timestamp may be (its clock may run ahead of ours)."""


class UnknownSubscriberError(NurtureError):
    """An app event names an address that is not a subscriber."""


@dataclass(frozen=True)
class Ingested:
    row: SubscriberRow
    created: bool
    enrollments: list[EnrollmentRow]
    suppressed: bool


@dataclass(frozen=True)
class RecordedEvent:
    event: AppEventRow
    replay: bool
    enrollments: list[EnrollmentRow]


def ingest_subscriber(
    session: Session,
    data: SubscriberInput,
    consent: Consent,
    *,
    consent_at: datetime | None,
    confirmed: bool,
    now: datetime,
    sequences: Mapping[str, LoadedSequence],
) -> Ingested:
    """Create or update one subscriber from the API (see the module doc).

    ``consent_at`` (when the caller collected the consent, not after ``now``)
    is recorded instead of ``now`` when this call records the consent.
    """
    if consent_at is not None and consent_at > now + CLOCK_SKEW:
        raise InvalidSubscriberError("consent.at is in the future")
    created = audience_store.subscriber_by_email(session, data.email) is None
    result = upsert_subscribers(
        session,
        [data],
        consent=consent,
        status=SubscriberStatus.ACTIVE if confirmed else SubscriberStatus.UNCONFIRMED,
        now=now,
        sequences=sequences,
    )
    row = result.rows[0]
    if consent_at is not None and row.consent_at == now:
        row.consent_at = min(consent_at, now)
        session.flush()
    return Ingested(row, created, result.enrollments, is_suppressed(session, row.email))


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def check_event(name: str, event_id: str, properties: Mapping[str, Any]) -> dict[str, Any]:
    """The properties as stored, or :class:`InvalidSubscriberError` naming the bad field."""
    if not _EVENT_NAME.match(name):
        raise InvalidSubscriberError(
            "name must be 1-100 lower-case letters, digits, '_', '.' or '-', "
            "starting with a letter (trial_started)"
        )
    if not event_id.strip():
        raise InvalidSubscriberError("id is empty")
    check_text("id", event_id, EVENT_LIMITS["event_id"])
    if len(properties) > EVENT_LIMITS["properties"]:
        raise InvalidSubscriberError(f"properties: more than {EVENT_LIMITS['properties']}")
    try:
        written = json.dumps(properties, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidSubscriberError("properties cannot be stored as JSON") from exc
    if len(written) > EVENT_LIMITS["properties_json"]:
        raise InvalidSubscriberError(
            f"properties are longer than {EVENT_LIMITS['properties_json']} characters as JSON"
        )
    for text in _strings(properties):
        check_text("properties", text, EVENT_LIMITS["value"], one_line=False)
    result: dict[str, Any] = json.loads(written)
    return result


def record_app_event(
    session: Session,
    *,
    email: str,
    name: str,
    event_id: str,
    properties: Mapping[str, Any],
    occurred_at: datetime | None,
    now: datetime,
    sequences: Mapping[str, LoadedSequence],
) -> RecordedEvent:
    """Record an app event once by ``event_id`` and enroll where it triggers.

    ``email`` must be normalised. Raises :class:`InvalidSubscriberError` for a
    bad field and :class:`UnknownSubscriberError` for an unknown address
    (nothing is written either way).
    """
    stored = check_event(name, event_id, properties)
    if occurred_at is not None and occurred_at > now + CLOCK_SKEW:
        raise InvalidSubscriberError("occurred_at is in the future")
    existing = store.app_event_by_id(session, event_id)
    if existing is not None:
        return RecordedEvent(existing, True, [])
    subscriber = audience_store.subscriber_by_email(session, email)
    if subscriber is None:
        raise UnknownSubscriberError(
            f"no subscriber {email}: POST /api/v1/subscribers first (an event carries no consent)"
        )
    values = {
        "event_id": event_id,
        "subscriber_id": subscriber.id,
        "name": name,
        "properties": stored,
        "occurred_at": min(occurred_at, now) if occurred_at is not None else now,
        "received_at": now,
    }
    try:
        with session.begin_nested():
            row = store.add_app_event(session, values)
    except IntegrityError:  # the same event posted twice at the same moment
        replayed = store.app_event_by_id(session, event_id)
        if replayed is None:
            raise
        return RecordedEvent(replayed, True, [])
    enrollments = enroll_on_event(session, subscriber, name, stored, sequences, now)
    return RecordedEvent(row, False, enrollments)
