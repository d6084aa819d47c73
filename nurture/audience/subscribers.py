"""The subscriber service: add (or update) and look up subscribers.

A shell module: every function takes a SQLModel ``Session``, the loaded
sequences and ``now`` (aware UTC) as arguments, and never reads the clock or the
settings itself. :func:`add_subscriber` and :func:`upsert_subscribers` flush but
do not commit: the caller (a CLI command, a web request) owns the transaction.
The SQL is in :mod:`nurture.store.audience`.

The parts, each in its module (their names are re-exported here):

* :mod:`nurture.audience.input`: :class:`SubscriberInput`, the checked fields;
* :mod:`nurture.audience.consent`: :class:`Consent`, the opt-in record;
* :mod:`nurture.audience.enrollment`: :func:`enroll`, :func:`unenroll`,
  :func:`enroll_matching` and the enrollment-on-subscribe rule;
* :mod:`nurture.audience.suppression`: addresses never mailed;
* :mod:`nurture.audience.csv_import`: a CSV file through :func:`upsert_subscribers`.

**Re-adding an address updates it, never duplicates it.** Only what is given
overwrites (an empty name, or ``None`` for first name / time zone / locale,
keeps the stored value); tags are merged (union, order kept); attributes are
merged (given keys win). When nothing changes, nothing is written, not even
``updated_at``: re-importing a file is a no-op. Two requests adding the same
*new* address at the same moment: the second fails on the unique address
(``IntegrityError``) and may simply be retried.

Errors (all :class:`~nurture.errors.NurtureError`): :class:`InvalidSubscriberError`
(a refused field; the message names it), :class:`EnrollmentError` (already
enrolled, not enrolled, may not be mailed).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlmodel import Session

from nurture.audience.consent import Consent
from nurture.audience.enrollment import (
    EnrollmentError,
    enroll,
    enroll_matching,
    enroll_new_where_triggered,
    enroll_where_triggered,
    unenroll,
    with_last_good,
)
from nurture.audience.input import InvalidSubscriberError, SubscriberInput, normalise_email
from nurture.core.loader import LoadedSequence
from nurture.core.subscriber import Subscriber
from nurture.core.vocabulary import SubscriberStatus
from nurture.store import audience as store
from nurture.store import bulk_audience as bulk
from nurture.store.tables import EnrollmentRow, SendRow, SubscriberRow

__all__ = [
    "BulkUpserted",
    "Consent",
    "EnrollmentError",
    "InvalidSubscriberError",
    "SubscriberInput",
    "Upserted",
    "add_subscriber",
    "bulk_upsert_subscribers",
    "enroll",
    "enroll_matching",
    "get_subscriber",
    "list_subscribers",
    "normalise_email",
    "subscriber_enrollments",
    "subscriber_sends",
    "subscriber_view",
    "unenroll",
    "upsert_subscribers",
]

Status = Literal[SubscriberStatus.ACTIVE, SubscriberStatus.UNCONFIRMED]


# --------------------------------------------------------------------------- upsert


def _common_values(consent: Consent, status: Status, now: datetime) -> dict[str, Any]:
    """The columns every new subscriber of one batch shares (status, consent, times)."""
    return {"status": status, **consent.columns(now), "created_at": now, "updated_at": now}


def _new_values(data: SubscriberInput, common: Mapping[str, Any]) -> dict[str, Any]:
    """A new subscriber's column values: ``data`` and the batch's
    :func:`_common_values`."""
    return {
        "email": data.email,
        "name": data.name,
        "first_name": data.first_name,
        "timezone": data.timezone,
        "locale": data.locale,
        "tags": list(data.tags),
        "attributes": dict(data.attributes),
        **common,
    }


def _merge(
    row: SubscriberRow, data: SubscriberInput, consent: Consent, status: Status, now: datetime
) -> bool:
    """Apply what ``data`` gives to ``row``; True if anything changed."""
    changes: dict[str, Any] = {}
    if data.name and data.name != row.name:
        changes["name"] = data.name
    for key in ("first_name", "timezone", "locale"):
        value = getattr(data, key)
        if value is not None and value != getattr(row, key):
            changes[key] = value
    # New list/dict objects: the JSON columns do not track in-place mutation.
    tags = list(row.tags) + [t for t in data.tags if t not in row.tags]
    if tags != row.tags:
        changes["tags"] = tags
    attributes = {**row.attributes, **data.attributes}
    if attributes != row.attributes:
        changes["attributes"] = attributes
    # Adding an unconfirmed address as active confirms it (an admin vouches for
    # the consent); nothing else changes a status here: an unsubscribe stands.
    if row.status == SubscriberStatus.UNCONFIRMED and status == SubscriberStatus.ACTIVE:
        changes["status"] = SubscriberStatus.ACTIVE
    if row.consent_at is None:
        changes.update(consent.columns(now))
    if not changes:
        return False
    for key, value in changes.items():
        setattr(row, key, value)
    row.updated_at = now
    return True


@dataclass
class Upserted:
    """What :func:`upsert_subscribers` did: the rows (one per input, in order) and counts."""

    rows: list[SubscriberRow] = field(default_factory=list)
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    enrollments: list[EnrollmentRow] = field(default_factory=list)


def upsert_subscribers(
    session: Session,
    inputs: Sequence[SubscriberInput],
    *,
    consent: Consent,
    status: Status = SubscriberStatus.ACTIVE,
    now: datetime,
    sequences: Mapping[str, LoadedSequence],
) -> Upserted:
    """Create or update ``inputs``, then enroll them: a few statements per batch.

    An address repeated within the batch is inserted once and its later
    inputs merged into it like any update. Flushes, does not commit.
    """
    result = Upserted()
    by_email = store.subscribers_by_email(session, {data.email for data in inputs})
    new: dict[str, dict[str, Any]] = {}
    common = _common_values(consent, status, now)
    repeats: list[SubscriberInput] = []

    def merge(row: SubscriberRow, data: SubscriberInput) -> None:
        if _merge(row, data, consent, status, now):
            result.updated += 1
        else:
            result.unchanged += 1

    for data in inputs:
        row = by_email.get(data.email)
        if row is not None:
            merge(row, data)
        elif data.email in new:
            repeats.append(data)
        else:
            new[data.email] = _new_values(data, common)
            result.created += 1
    by_email.update(
        (row.email, row) for row in store.insert_subscribers(session, list(new.values()))
    )
    for data in repeats:
        merge(by_email[data.email], data)
    session.flush()
    result.rows = [by_email[data.email] for data in inputs]
    unique = list({data.email: by_email[data.email] for data in inputs}.values())
    result.enrollments = enroll_where_triggered(session, unique, sequences, now)
    return result


def _merge_new(
    values: dict[str, Any], data: SubscriberInput, consent: Consent, status: Status, now: datetime
) -> bool:
    """:func:`_merge` for a subscriber not yet inserted (its column values)."""
    changed = False
    if data.name and data.name != values["name"]:
        values["name"] = data.name
        changed = True
    for key in ("first_name", "timezone", "locale"):
        value = getattr(data, key)
        if value is not None and value != values[key]:
            values[key] = value
            changed = True
    extra = [t for t in data.tags if t not in values["tags"]]
    if extra:
        values["tags"] = values["tags"] + extra
        changed = True
    attributes = {**values["attributes"], **data.attributes}
    if attributes != values["attributes"]:
        values["attributes"] = attributes
        changed = True
    if values["status"] == SubscriberStatus.UNCONFIRMED and status == SubscriberStatus.ACTIVE:
        values["status"] = SubscriberStatus.ACTIVE
        changed = True
    return changed


@dataclass
class BulkUpserted:
    """What :func:`bulk_upsert_subscribers` did: counts, and each address's tags."""

    tags: dict[str, list[str]] = field(default_factory=dict)
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    enrollments: Counter[str] = field(default_factory=Counter)


def bulk_upsert_subscribers(
    session: Session,
    inputs: Sequence[SubscriberInput],
    *,
    consent: Consent,
    status: Status = SubscriberStatus.ACTIVE,
    now: datetime,
    sequences: Mapping[str, LoadedSequence],
) -> BulkUpserted:
    """:func:`upsert_subscribers` for a large batch (a CSV import): the same
    rows, merges and enrollments, but the *new* subscribers are inserted and
    enrolled as plain values, never loaded as ORM rows. Flushes, does not commit.
    """
    result = BulkUpserted()
    existing = store.subscribers_by_email(session, {data.email for data in inputs})
    new: dict[str, dict[str, Any]] = {}
    common = _common_values(consent, status, now)
    for data in inputs:
        row = existing.get(data.email)
        if row is not None:
            changed = _merge(row, data, consent, status, now)
        elif data.email in new:
            changed = _merge_new(new[data.email], data, consent, status, now)
        else:
            new[data.email] = _new_values(data, common)
            result.created += 1
            continue
        if changed:
            result.updated += 1
        else:
            result.unchanged += 1
    ids = bulk.insert_subscriber_values(session, list(new.values()))
    session.flush()
    result.tags = {email: list(row.tags) for email, row in existing.items()}
    result.tags.update((email, values["tags"]) for email, values in new.items())
    # Once for both calls below: a broken file's warning is logged once per batch.
    sequences = with_last_good(session, sequences)
    if existing:
        enrolled = enroll_where_triggered(session, list(existing.values()), sequences, now)
        result.enrollments.update(e.sequence_id for e in enrolled)
    if status == SubscriberStatus.ACTIVE:
        fresh = [(ids[email], email, values["tags"]) for email, values in new.items()]
        result.enrollments.update(enroll_new_where_triggered(session, fresh, sequences, now))
    return result


def add_subscriber(
    session: Session,
    *,
    email: str,
    name: str = "",
    first_name: str | None = None,
    tz: str | None = None,
    locale: str | None = None,
    tags: Iterable[str] = (),
    attributes: Mapping[str, Any] | None = None,
    consent_source: str,
    consent_text: str | None = None,
    consent_ip: str | None = None,
    status: Status = SubscriberStatus.ACTIVE,
    now: datetime,
    sequences: Mapping[str, LoadedSequence],
) -> tuple[SubscriberRow, list[EnrollmentRow]]:
    """Add or update one subscriber and enroll them where their tags match.

    ``status="unconfirmed"`` creates a row awaiting double opt-in (not enrolled
    until confirmed, see :func:`enroll_matching`); it never demotes an existing
    active subscriber. Raises :class:`InvalidSubscriberError` naming the bad
    field. Flushes, does not commit.
    """
    data = SubscriberInput.parse(
        email=email,
        name=name,
        first_name=first_name,
        timezone=tz,
        locale=locale,
        tags=tags,
        attributes=attributes,
    )
    consent = Consent.parse(consent_source, consent_text, consent_ip)
    result = upsert_subscribers(
        session, [data], consent=consent, status=status, now=now, sequences=sequences
    )
    return result.rows[0], result.enrollments


# --------------------------------------------------------------------------- reading


def get_subscriber(session: Session, email: str) -> SubscriberRow | None:
    """The subscriber with this address (any case or spacing), or None."""
    return store.subscriber_by_email(session, normalise_email(email))


def list_subscribers(
    session: Session, limit: int = 50, offset: int = 0, status: str | None = None
) -> list[SubscriberRow]:
    """Subscribers in the order they were added (by id), optionally of one status."""
    return store.subscribers_page(session, limit=limit, offset=offset, status=status)


def subscriber_enrollments(session: Session, subscriber: SubscriberRow) -> list[EnrollmentRow]:
    """Every enrollment of ``subscriber``, oldest first."""
    return store.enrollments_of(session, subscriber.id)


def subscriber_sends(session: Session, subscriber: SubscriberRow) -> list[SendRow]:
    """The send log of ``subscriber``: every step decision, in the order made."""
    return store.sends_of(session, subscriber.id)


def subscriber_view(row: SubscriberRow) -> Subscriber:
    """The core's plain-value view of a row (what templates and conditions see)."""
    return Subscriber.of(row)
