"""Confirming a sign-up: the signed link of the double opt-in email.

:func:`confirm` takes the signed link's token: an unconfirmed subscriber
becomes ``active`` and is enrolled where the sequences' triggers say
(:func:`~nurture.audience.enrollment.enroll_matching`); confirming again
changes nothing. An expired, altered or foreign token, or one for an address
that has since unsubscribed, bounced or been suppressed, changes nothing.

A link to **join** (sent by :func:`~nurture.audience.signup.ask_to_join` to
an address already stored) carries the key of its email, whose recorded
event holds the form's tags and consent: confirming adds those tags, makes an
unsubscribed address active again with that consent (never one suppressed
for a bounce or a complaint) and an unconfirmed one active, records a
``subscribed`` event with the form and wording, and enrolls where the tags
now lead.
:func:`read_confirm_link` answers the same question and changes nothing (what
a link scanner's GET may do), and :func:`signup_form_of` names the form of a
genuine link that has expired, so its page can offer that form again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session

from nurture.audience.enrollment import enroll_matching
from nurture.audience.events import record_event
from nurture.audience.leaving import resubscribable, resubscribe
from nurture.audience.signup_form import FORM_ID
from nurture.audience.suppression import is_suppressed
from nurture.core import tokens
from nurture.core.loader import LoadedSequence
from nurture.core.vocabulary import EventKind, SubscriberStatus
from nurture.store import signup as store
from nurture.store.tables import EnrollmentRow, SubscriberRow

__all__ = ["ConfirmLink", "Confirmed", "Join", "confirm", "read_confirm_link", "signup_form_of"]


@dataclass(frozen=True)
class Join:
    """What a link to join asks: the tags to add, and the consent given on its form."""

    tags: tuple[str, ...]
    form: str | None
    consent_text: str | None
    consent_ip: str | None
    user_agent: str | None

    @classmethod
    def of(cls, stored: Mapping[str, Any]) -> Join | None:
        """The join recorded with a confirmation email, or None when it is not one."""
        tags, form = stored.get("tags"), stored.get("form")
        if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
            return None

        def text(key: str) -> str | None:
            value = stored.get(key)
            return value if isinstance(value, str) else None

        return cls(
            tuple(tags),
            form if isinstance(form, str) else None,
            text("consent_text"),
            text("consent_ip"),
            text("user_agent"),
        )


@dataclass(frozen=True)
class ConfirmLink:
    """The subscriber a confirmation link names, whether following it is done
    already (``active``, with every tag a join asks), and the join it asks."""

    subscriber: SubscriberRow
    confirmed: bool
    join: Join | None = None


@dataclass(frozen=True)
class Confirmed:
    """A confirmed subscriber, the enrollments confirming made, and whether it was new."""

    subscriber: SubscriberRow
    enrollments: list[EnrollmentRow]
    already: bool


def _named_subscriber(session: Session, payload: Mapping[str, Any] | None) -> SubscriberRow | None:
    """The subscriber a verified token's payload names, if they still have its address."""
    if payload is None:
        return None
    subscriber_id, address = payload.get("s"), payload.get("e")
    # Only a signed token gets here, but its payload is still checked like input:
    # an id the database cannot hold (10**30) or a bool (True is an int) is nobody.
    if type(subscriber_id) is not int or not 0 < subscriber_id < 2**63:
        return None
    if not isinstance(address, str):
        return None
    row = store.subscriber_by_id(session, subscriber_id)
    if row is None or row.email != address:
        return None
    return row


def read_confirm_link(
    session: Session,
    token: str,
    *,
    keys: Sequence[str],
    max_age: timedelta,
    now: datetime,
) -> ConfirmLink | None:
    """What following a confirmation token would confirm; changes nothing.

    None exactly when :func:`confirm` would change nothing and return None: a
    token that is not genuine, has expired or names a subscriber who no longer
    has that address, an address that is neither unconfirmed nor active, or a
    suppressed one.
    """
    payload = tokens.verify(keys, tokens.CONFIRM, token, now=now, max_age=max_age)
    row = _named_subscriber(session, payload)
    if row is None or payload is None:
        return None
    if "k" in payload:
        return _join_link(session, row, payload["k"])
    if row.status == SubscriberStatus.ACTIVE:
        return ConfirmLink(row, confirmed=True)
    if row.status != SubscriberStatus.UNCONFIRMED or is_suppressed(session, row.email):
        return None
    return ConfirmLink(row, confirmed=False)


_JOINS_AS_IS = (SubscriberStatus.ACTIVE, SubscriberStatus.UNCONFIRMED)
"""The statuses a link to join adds tags to without a resubscribe."""


def _join_link(session: Session, row: SubscriberRow, key: object) -> ConfirmLink | None:
    """The link to join of ``row`` by the confirmation email ``key``, or None
    when there is no such email or the address can no longer join."""
    assert row.id is not None
    stored = store.confirmation_join(session, row.id, key) if isinstance(key, str) else None
    join = None if stored is None else Join.of(stored)
    if join is None:
        return None
    if row.status in _JOINS_AS_IS and not is_suppressed(session, row.email):
        done = row.status == SubscriberStatus.ACTIVE and set(join.tags) <= set(row.tags or [])
        return ConfirmLink(row, confirmed=done, join=join)
    if resubscribable(session, row):
        return ConfirmLink(row, confirmed=False, join=join)
    return None


def signup_form_of(
    session: Session, token: str, *, keys: Sequence[str], now: datetime
) -> str | None:
    """The form (a :data:`FORM_ID`) the subscriber of a genuine confirmation
    token signed up on, also when the token has expired; None for a token we
    did not sign, a subscriber since gone, or a sign-up from no hosted form id."""
    row = _named_subscriber(session, tokens.verify(keys, tokens.CONFIRM, token, now=now))
    form = None if row is None else row.consent_form
    return form if form is not None and FORM_ID.fullmatch(form) else None


def confirm(
    session: Session,
    token: str,
    *,
    keys: Sequence[str],
    max_age: timedelta,
    now: datetime,
    sequences: Mapping[str, LoadedSequence],
) -> Confirmed | None:
    """Confirm the subscriber a confirmation token names; None changes nothing.

    None for a token that is not genuine, has expired or names a subscriber who
    no longer has that address, and for an address that is neither unconfirmed
    nor active (unsubscribed, bounced ...) or is suppressed (see
    :func:`read_confirm_link`). Flushes, does not commit.
    """
    link = read_confirm_link(session, token, keys=keys, max_age=max_age, now=now)
    if link is None:
        return None
    row = link.subscriber
    if link.confirmed:
        return Confirmed(row, [], already=True)
    if link.join is not None:
        return _joined(session, row, link.join, now, sequences)
    row.status = SubscriberStatus.ACTIVE
    row.updated_at = now
    session.flush()
    return Confirmed(row, enroll_matching(session, row, sequences, now), already=False)


def _joined(
    session: Session,
    row: SubscriberRow,
    join: Join,
    now: datetime,
    sequences: Mapping[str, LoadedSequence],
) -> Confirmed | None:
    """Follow a link to join: the consent recorded, the tags added, enrolled."""
    via = f"form:{join.form}" if join.form else "form"
    if row.status == SubscriberStatus.UNSUBSCRIBED:
        consent = {
            "consent_at": now,
            "consent_source": via,
            "consent_text": join.consent_text,
            "consent_ip": join.consent_ip,
            "consent_form": join.form,
            "consent_user_agent": join.user_agent,
        }
        if not resubscribe(session, row, now=now, consent=consent, via=via):
            return None
    else:
        # An unconfirmed address confirms by this link as by its first one:
        # whoever follows it has the address.
        row.status = SubscriberStatus.ACTIVE
        record_event(
            session.connection(),
            kind=EventKind.SUBSCRIBED,
            subscriber_id=row.id,
            occurred_at=now,
            received_at=now,
            payload={
                "via": via,
                "tags": list(join.tags),
                "consent_text": join.consent_text,
                "consent_ip": join.consent_ip,
            },
            user_agent=join.user_agent,
        )
    held = list(row.tags or [])
    row.tags = [*held, *(tag for tag in join.tags if tag not in held)]
    row.updated_at = now
    session.flush()
    return Confirmed(row, enroll_matching(session, row, sequences, now), already=False)
