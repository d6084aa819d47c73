"""The subscriber service: add, enroll, unenroll and look up subscribers.

A shell module: every function takes a SQLModel ``Session``, the loaded
sequences and ``now`` (aware UTC) as arguments, and never reads the clock or the
settings itself. :func:`add_subscriber`, :func:`enroll`, :func:`unenroll` and
:func:`enroll_matching` flush but do not commit: the caller (a CLI command, a
web request) owns the transaction. Importing a CSV file is
:mod:`nurture.audience.csv_import`; its rows go through the same validation and upsert.

Choices worth knowing:

* **Addresses are case-insensitive.** :func:`normalise_email` lower-cases the
  whole address, local part included. RFC 5321 allows a server to treat
  ``Anna@`` and ``anna@`` as different mailboxes, but no mainstream provider
  does, and treating them as two subscribers would mail one person twice and
  split their consent and unsubscribe state across two rows.
* **Re-adding an address updates it, never duplicates it.** Only what is given
  overwrites (an empty name, or ``None`` for first name / time zone / locale,
  keeps the stored value); tags are merged (union, order kept); attributes are
  merged (given keys win). When nothing changes, nothing is written, not even
  ``updated_at``: re-importing a file is a no-op.
* **Consent is recorded once**, when the address is first added: that opt-in is
  the evidence (when, source, wording, IP). Re-adding keeps it, and only fills it
  in for a row that has none.
* **EnrollmentRow on subscribe**: a subscriber is enrolled in every sequence whose
  trigger is ``subscribed`` and whose tags they all carry, unless they were
  *ever* enrolled in it. Someone who completed, exited or converted is not put
  through the same sequence again because they were re-imported or re-tagged;
  an admin can still do that on purpose with :func:`enroll`. Subscribers who
  are not ``active`` (unconfirmed, unsubscribed, bounced ...) or whose address
  is in the suppression list are never enrolled. The suppression list is
  matched on the normalised address: store ``normalise_email(...)`` in
  ``suppression.email``.
* Tags are case-sensitive, as in sequence triggers.
* Two requests adding the same *new* address at the same moment: the second
  fails on the unique address (``IntegrityError``) and may simply be retried.

Errors (all :class:`~nurture.errors.NurtureError`): :class:`InvalidSubscriberError`
(a refused field; the message names it), :class:`EnrollmentError` (already
enrolled, not enrolled, may not be mailed).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any, Literal
from zoneinfo import available_timezones

from babel import Locale, UnknownLocaleError
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import insert
from sqlmodel import Session, col, select

from nurture.core.loader import LoadedSequence
from nurture.core.subscriber import Subscriber
from nurture.errors import NurtureError
from nurture.store import queries
from nurture.store.tables import EnrollmentRow, SendRow, SubscriberRow, SuppressionRow

__all__ = [
    "EnrollmentError",
    "InvalidSubscriberError",
    "add_subscriber",
    "enroll",
    "enroll_matching",
    "get_subscriber",
    "list_subscribers",
    "normalise_email",
    "subscriber_enrollments",
    "subscriber_sends",
    "subscriber_view",
    "unenroll",
]


class InvalidSubscriberError(NurtureError):
    """An address, time zone, locale, tag or attribute was refused; says which and why."""


class EnrollmentError(NurtureError):
    """An enrollment cannot be made or ended (already active, not enrolled, no consent)."""


# --------------------------------------------------------------------------- validation


def normalise_email(text: str) -> str:
    """The address as stored: syntax-checked, Unicode-normalised, lower-cased.

    No DNS lookup (``check_deliverability=False``): imports must not depend on
    the network, and a typo'd domain shows up as a bounce anyway.
    """
    candidate = text.strip()
    if not candidate:
        raise InvalidSubscriberError("email address is empty")
    try:
        normalized = validate_email(candidate, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise InvalidSubscriberError(f"invalid email address {candidate!r}: {exc}") from exc
    return normalized.lower()


@cache
def _zones() -> frozenset[str]:
    # available_timezones() walks tzdata (tens of milliseconds): once per process.
    # It also lists files of the system's zoneinfo folder that are not zones:
    # "localtime" is whatever the machine is set to, "Factory" is no place.
    return frozenset(available_timezones()) - {"localtime", "posixrules", "Factory"}


def _timezone(value: str) -> str:
    """An IANA zone name. ``ZoneInfo()`` alone would also accept any file under
    the zoneinfo folder, e.g. ``localtime``, which differs from machine to machine."""
    if value in _zones():
        return value
    near = [zone for zone in _zones() if zone.lower() == value.lower()]
    hint = f"did you mean {near[0]!r}?" if near else "use an IANA name such as Europe/Stockholm"
    raise InvalidSubscriberError(f"unknown time zone {value!r} ({hint})")


def _locale(value: str) -> str:
    """A locale Babel knows, written as a BCP 47 tag (``sv-SE``) as templates expect."""
    try:
        parsed = Locale.parse(value.replace("-", "_"))
    except (UnknownLocaleError, ValueError) as exc:
        raise InvalidSubscriberError(f"unknown locale {value!r} (e.g. sv, en-GB)") from exc
    return str(parsed).replace("_", "-")


def _limited(what: str, value: str, limit: int) -> str:
    # SQLite does not enforce VARCHAR lengths and PostgreSQL would fail with a
    # DataError naming no field: check here, with a message a person can act on.
    if len(value) > limit:
        raise InvalidSubscriberError(f"{what} is longer than {limit} characters")
    return value


def _optional(value: str | None) -> str | None:
    if value is None:
        return None
    stripped = value.strip()
    return stripped or None


def _tags(values: Iterable[str]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for value in values:
        tag = value.strip()
        if tag:
            seen.setdefault(_limited(f"tag {tag!r}", tag, 100), None)
    return tuple(seen)


def _attributes(values: Mapping[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in values.items():
        name = key.strip() if isinstance(key, str) else ""
        if not name:
            raise InvalidSubscriberError(f"attribute name {key!r} must be a non-empty string")
        try:
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise InvalidSubscriberError(
                f"attribute {name!r}: value {value!r} cannot be stored as JSON"
            ) from exc
        result[name] = value
    return result


@dataclass(frozen=True)
class _Input:
    """One subscriber's validated fields, as given (None / empty = not given)."""

    email: str
    name: str
    first_name: str | None
    timezone: str | None
    locale: str | None
    tags: tuple[str, ...]
    attributes: dict[str, Any]


def _validated(
    *,
    email: str,
    name: str = "",
    first_name: str | None = None,
    tz: str | None = None,
    locale: str | None = None,
    tags: Iterable[str] = (),
    attributes: Mapping[str, Any] | None = None,
) -> _Input:
    first = _optional(first_name)
    zone = _optional(tz)
    lang = _optional(locale)
    return _Input(
        email=_limited("email address", normalise_email(email), 320),
        name=_limited("name", name.strip(), 200),
        first_name=_limited("first name", first, 100) if first else None,
        timezone=_timezone(zone) if zone else None,
        locale=_locale(lang) if lang else None,
        tags=_tags(tags),
        attributes=_attributes(attributes or {}),
    )


@dataclass(frozen=True)
class _Consent:
    source: str
    text: str | None
    ip: str | None


def _consent(source: str, text: str | None, ip: str | None) -> _Consent:
    source = source.strip()
    if not source:
        raise InvalidSubscriberError("consent source is empty (say where the address came from)")
    address = _optional(ip)
    if address is not None:
        try:
            address = str(ipaddress.ip_address(address))
        except ValueError as exc:
            raise InvalidSubscriberError(f"consent IP {address!r} is not an IP address") from exc
    wording = _optional(text)
    return _Consent(
        source=_limited("consent source", source, 100),
        text=_limited("consent text", wording, 2000) if wording else None,
        ip=address,
    )


# --------------------------------------------------------------------------- upsert


def _new_values(data: _Input, consent: _Consent, status: str, now: datetime) -> dict[str, Any]:
    return {
        "email": data.email,
        "name": data.name,
        "first_name": data.first_name,
        "timezone": data.timezone,
        "locale": data.locale,
        "tags": list(data.tags),
        "attributes": dict(data.attributes),
        "status": status,
        "consent_at": now,
        "consent_source": consent.source,
        "consent_text": consent.text,
        "consent_ip": consent.ip,
        "created_at": now,
        "updated_at": now,
    }


def _merge(row: SubscriberRow, data: _Input, consent: _Consent, status: str, now: datetime) -> bool:
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
    if row.status == "unconfirmed" and status == "active":
        changes["status"] = "active"
    if row.consent_at is None:
        changes.update(
            consent_at=now,
            consent_source=consent.source,
            consent_text=consent.text,
            consent_ip=consent.ip,
        )
    if not changes:
        return False
    for key, value in changes.items():
        setattr(row, key, value)
    row.updated_at = now
    return True


@dataclass
class _Upserted:
    rows: list[SubscriberRow] = field(default_factory=list)
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    enrollments: list[EnrollmentRow] = field(default_factory=list)


def _upsert(
    session: Session,
    inputs: Sequence[_Input],
    *,
    consent: _Consent,
    status: str,
    now: datetime,
    sequences: Mapping[str, LoadedSequence],
) -> _Upserted:
    """Create or update ``inputs``, then enroll them: a few statements per batch.

    New rows go in with one multi-row INSERT ... RETURNING rather than one ORM
    object each: building SQLModel objects one by one was most of the time of
    an import. An address repeated within the batch is inserted once and its
    later rows merged into it like any update.
    """
    result = _Upserted()
    emails = {data.email for data in inputs}
    by_email = {
        row.email: row
        for row in session.exec(select(SubscriberRow).where(col(SubscriberRow.email).in_(emails)))
    }
    new: dict[str, dict[str, Any]] = {}
    repeats: list[_Input] = []
    for data in inputs:
        row = by_email.get(data.email)
        if row is not None:
            if _merge(row, data, consent, status, now):
                result.updated += 1
            else:
                result.unchanged += 1
        elif data.email in new:
            repeats.append(data)
        else:
            new[data.email] = _new_values(data, consent, status, now)
            result.created += 1
    if new:
        inserted = session.scalars(
            insert(SubscriberRow).returning(SubscriberRow, sort_by_parameter_order=True),
            list(new.values()),
        )
        by_email.update((row.email, row) for row in inserted)
    for data in repeats:
        if _merge(by_email[data.email], data, consent, status, now):
            result.updated += 1
        else:
            result.unchanged += 1
    session.flush()
    result.rows = [by_email[data.email] for data in inputs]
    unique = list({data.email: by_email[data.email] for data in inputs}.values())
    result.enrollments = _enroll_matching_many(session, unique, sequences, now)
    return result


# --------------------------------------------------------------------------- enrollment


def _triggered(loaded: LoadedSequence, tags: Iterable[str]) -> bool:
    trigger = loaded.sequence.trigger
    return (
        trigger is not None and trigger.event == "subscribed" and set(trigger.tags).issubset(tags)
    )


def _suppressed(session: Session, emails: Iterable[str]) -> set[str]:
    query = select(SuppressionRow.email).where(col(SuppressionRow.email).in_(list(emails)))
    return set(session.exec(query))


def _remember_versions(
    session: Session, sequences: Iterable[LoadedSequence], now: datetime
) -> None:
    """Record the definition of each version enrolled into (for ``nurture plan``)."""
    queries.remember_versions(
        session.connection(),
        {(s.sequence.id, s.version): s.sequence.model_dump(mode="json") for s in sequences},
        now,
    )


def _enrollment_values(
    subscriber: SubscriberRow, loaded: LoadedSequence, now: datetime
) -> dict[str, Any]:
    assert subscriber.id is not None, "flush the subscriber before enrolling it"
    # next_due_at = now means "look at me now": the dispatcher's first pass
    # computes the real due time of the first step with the timing rules.
    return {
        "subscriber_id": subscriber.id,
        "sequence_id": loaded.sequence.id,
        "sequence_version": loaded.version,
        "position": None,
        "status": "active",
        "enrolled_at": now,
        "next_due_at": now,
        "updated_at": now,
    }


def _enroll_matching_many(
    session: Session,
    subscribers: Sequence[SubscriberRow],
    sequences: Mapping[str, LoadedSequence],
    now: datetime,
) -> list[EnrollmentRow]:
    # Sorted by id: enrollments are created (and get their ids) in a stable order.
    auto = [sequences[key] for key in sorted(sequences) if sequences[key].sequence.trigger]
    eligible = [row for row in subscribers if row.status == "active"]
    if not eligible or not auto:
        return []
    blocked = _suppressed(session, (row.email for row in eligible))
    eligible = [row for row in eligible if row.email not in blocked]
    ids = [row.id for row in eligible]
    ever = set(
        session.exec(
            select(EnrollmentRow.subscriber_id, EnrollmentRow.sequence_id).where(
                col(EnrollmentRow.subscriber_id).in_(ids)
            )
        )
    )
    values = [
        _enrollment_values(row, loaded, now)
        for row in eligible
        for loaded in auto
        if (row.id, loaded.sequence.id) not in ever and _triggered(loaded, row.tags)
    ]
    if not values:
        return []
    _remember_versions(session, auto, now)
    inserted = session.scalars(
        insert(EnrollmentRow).returning(EnrollmentRow, sort_by_parameter_order=True), values
    )
    return list(inserted)


def enroll_matching(
    session: Session,
    subscriber: SubscriberRow,
    sequences: Mapping[str, LoadedSequence],
    now: datetime,
) -> list[EnrollmentRow]:
    """Enroll ``subscriber`` in every sequence its tags trigger (see the module doc).

    :func:`add_subscriber` does this itself; call it after confirming a double
    opt-in (status ``unconfirmed`` -> ``active``) or after adding tags.
    """
    return _enroll_matching_many(session, [subscriber], sequences, now)


def _consents_to_mail(session: Session, subscriber: SubscriberRow) -> None:
    if subscriber.status != "active":
        raise EnrollmentError(
            f"{subscriber.email} is {subscriber.status}: only active subscribers are enrolled"
        )
    if _suppressed(session, [subscriber.email]):
        raise EnrollmentError(f"{subscriber.email} is on the suppression list")


def _active_enrollment(
    session: Session, subscriber: SubscriberRow, sequence_id: str
) -> EnrollmentRow | None:
    query = select(EnrollmentRow).where(
        EnrollmentRow.subscriber_id == subscriber.id,
        EnrollmentRow.sequence_id == sequence_id,
        EnrollmentRow.status == "active",
    )
    return session.exec(query).first()


def enroll(
    session: Session, subscriber: SubscriberRow, loaded_sequence: LoadedSequence, now: datetime
) -> EnrollmentRow:
    """Enroll ``subscriber`` in ``loaded_sequence`` now, whatever its trigger says.

    An admin's explicit choice: a subscriber who completed or left the sequence
    before may be enrolled again. Refused when already active in it, and for
    subscribers who may not be mailed (not active, or suppressed).
    """
    sequence_id = loaded_sequence.sequence.id
    if _active_enrollment(session, subscriber, sequence_id) is not None:
        raise EnrollmentError(f"{subscriber.email} is already enrolled in {sequence_id!r}")
    _consents_to_mail(session, subscriber)
    enrollment = EnrollmentRow(**_enrollment_values(subscriber, loaded_sequence, now))
    _remember_versions(session, [loaded_sequence], now)
    session.add(enrollment)
    session.flush()  # the partial unique index catches a concurrent enroll here
    return enrollment


def unenroll(
    session: Session,
    subscriber: SubscriberRow,
    sequence_id: str,
    now: datetime,
    reason: str = "unenrolled by admin",
) -> EnrollmentRow:
    """End the active enrollment: status ``exited`` with ``reason``, nothing more due."""
    enrollment = _active_enrollment(session, subscriber, sequence_id)
    if enrollment is None:
        raise EnrollmentError(f"{subscriber.email} is not enrolled in {sequence_id!r}")
    enrollment.status = "exited"
    enrollment.status_reason = reason[:500]
    enrollment.next_due_at = None
    enrollment.updated_at = now
    session.add(enrollment)
    session.flush()
    return enrollment


# --------------------------------------------------------------------------- adding


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
    status: Literal["active", "unconfirmed"] = "active",
    now: datetime,
    sequences: Mapping[str, LoadedSequence],
) -> tuple[SubscriberRow, list[EnrollmentRow]]:
    """Add or update one subscriber and enroll them where their tags match.

    ``status="unconfirmed"`` creates a row awaiting double opt-in (not enrolled
    until confirmed, see :func:`enroll_matching`); it never demotes an existing
    active subscriber. Raises :class:`InvalidSubscriberError` naming the bad
    field. Flushes, does not commit.
    """
    data = _validated(
        email=email,
        name=name,
        first_name=first_name,
        tz=tz,
        locale=locale,
        tags=tags,
        attributes=attributes,
    )
    consent = _consent(consent_source, consent_text, consent_ip)
    result = _upsert(session, [data], consent=consent, status=status, now=now, sequences=sequences)
    return result.rows[0], result.enrollments


# --------------------------------------------------------------------------- reading


def get_subscriber(session: Session, email: str) -> SubscriberRow | None:
    """The subscriber with this address (any case or spacing), or None."""
    query = select(SubscriberRow).where(SubscriberRow.email == normalise_email(email))
    return session.exec(query).first()


def list_subscribers(
    session: Session, limit: int = 50, offset: int = 0, status: str | None = None
) -> list[SubscriberRow]:
    """Subscribers in the order they were added (by id), optionally of one status."""
    query = select(SubscriberRow)
    if status is not None:
        query = query.where(SubscriberRow.status == status)
    query = query.order_by(col(SubscriberRow.id)).offset(offset).limit(limit)
    return list(session.exec(query))


def subscriber_enrollments(session: Session, subscriber: SubscriberRow) -> list[EnrollmentRow]:
    """Every enrollment of ``subscriber``, oldest first."""
    query = (
        select(EnrollmentRow)
        .where(EnrollmentRow.subscriber_id == subscriber.id)
        .order_by(col(EnrollmentRow.enrolled_at), col(EnrollmentRow.id))
    )
    return list(session.exec(query))


def subscriber_sends(session: Session, subscriber: SubscriberRow) -> list[SendRow]:
    """The send log of ``subscriber``: every step decision, in the order made."""
    query = (
        select(SendRow)
        .where(SendRow.subscriber_id == subscriber.id)
        .order_by(col(SendRow.decided_at), col(SendRow.id))
    )
    return list(session.exec(query))


def subscriber_view(row: SubscriberRow) -> Subscriber:
    """The core's plain-value view of a row (what templates and conditions see)."""
    return Subscriber.of(row)
