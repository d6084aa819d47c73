"""Confirming a sign-up: the signed link of the double opt-in email.

:func:`confirm` takes the signed link's token: an unconfirmed subscriber
becomes ``active`` and is enrolled where the sequences' triggers say
(:func:`~nurture.audience.enrollment.enroll_matching`); confirming again
changes nothing. An expired, altered or foreign token, or one for an address
that has since unsubscribed, bounced or been suppressed, changes nothing.
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
from nurture.audience.signup import FORM_ID
from nurture.audience.suppression import is_suppressed
from nurture.core import tokens
from nurture.core.loader import LoadedSequence
from nurture.core.vocabulary import SubscriberStatus
from nurture.store import signup as store
from nurture.store.tables import EnrollmentRow, SubscriberRow

__all__ = ["ConfirmLink", "Confirmed", "confirm", "read_confirm_link", "signup_form_of"]


@dataclass(frozen=True)
class ConfirmLink:
    """The subscriber a confirmation link names, and whether they are ``active`` already."""

    subscriber: SubscriberRow
    confirmed: bool


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
    if row is None:
        return None
    if row.status == SubscriberStatus.ACTIVE:
        return ConfirmLink(row, confirmed=True)
    if row.status != SubscriberStatus.UNCONFIRMED or is_suppressed(session, row.email):
        return None
    return ConfirmLink(row, confirmed=False)


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
    row.status = SubscriberStatus.ACTIVE
    row.updated_at = now
    session.flush()
    return Confirmed(row, enroll_matching(session, row, sequences, now), already=False)
