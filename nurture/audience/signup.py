"""Sign-up with double opt-in: :func:`sign_up`, :func:`ask_to_confirm`, :func:`ask_to_join`.

Checking a posted form is :mod:`nurture.audience.signup_form`; confirming the
link the email carries is :mod:`nurture.audience.confirming`.

* **Signing up.** A new address is stored ``unconfirmed`` with its consent
  record (when, the form, the client's IP and user agent, the exact wording
  shown), committed, and only then sent its confirmation email: a transport
  failure never loses the sign-up (it is logged and recorded). An address
  already stored is never changed by an anonymous post; an unconfirmed one is
  sent its confirmation again, at most once per :data:`RESEND_INTERVAL`
  (:func:`ask_to_confirm`'s rule, which the API's unconfirmed subscribers are
  asked through too). An active or unconfirmed address on a form with tags
  it lacks, or an unsubscribed one on any form, is sent a confirmation to **join**
  (:func:`ask_to_join`): its link carries the key of the recorded email, whose
  event keeps the form's tags and consent, and confirming adds the tags (and
  resubscribes an unsubscribed address) with that consent. A bounced,
  reported or suppressed address is sent nothing. The caller answers every
  case alike, so the answer never tells whether an address was known.
* **The send log.** A confirmation email is no step of a sequence and has no
  ledger row; it is recorded as an ``event`` (kind ``sent`` or ``failed``,
  payload ``{"purpose": "confirmation"}``), which ``nurture log`` lists with
  the ledger (:mod:`nurture.store.signup`).
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from nurture.audience.consent import Consent
from nurture.audience.leaving import resubscribable
from nurture.audience.senders import sender_for
from nurture.audience.signup_form import SignupForm
from nurture.audience.subscribers import upsert_subscribers
from nurture.audience.suppression import is_suppressed
from nurture.core import tokens
from nurture.core.loader import LoadedSequence
from nurture.core.model import Sender
from nurture.core.rendering import ComposedEmail, RenderedEmail, ascii_address
from nurture.core.vocabulary import SubscriberStatus
from nurture.errors import SendError
from nurture.store import audience as audience_store
from nurture.store import signup as store
from nurture.store.tables import SubscriberRow
from nurture.transports.base import OutgoingEmail

log = logging.getLogger("nurture.audience.signup")

__all__ = [
    "RESEND_INTERVAL",
    "ConfirmationMail",
    "SignedUp",
    "ask_to_confirm",
    "ask_to_join",
    "confirm_url",
    "sign_up",
]

RESEND_INTERVAL = timedelta(minutes=5)
"""The least time between two confirmation emails to one address."""

USER_AGENT_LIMIT = 500


# --------------------------------------------------------------------------- signing up


@dataclass(frozen=True)
class ConfirmationEmail:
    """The localized words of one confirmation email."""

    subject: str
    html: str
    text: str


Render = Callable[[SubscriberRow, str, str], ConfirmationEmail]
"""Builds the confirmation email of a subscriber given the confirm URL and the
sender's name (the web edge renders its templates, in the subscriber's language)."""


@dataclass(frozen=True)
class ConfirmationMail:
    """What sending a confirmation email takes: the sequences (whose sender it
    comes from), the transport's ``send``, how it is written (:data:`Render`),
    and the base URL and keys its signed link is made with."""

    sequences: Mapping[str, LoadedSequence]
    send: Callable[[OutgoingEmail], object]
    render: Render
    base_url: str
    keys: Sequence[str]


CONFIRMATION = "confirmation"
SENT_RECENTLY = "sent recently"


@dataclass(frozen=True)
class SignedUp:
    """What :func:`sign_up` did (for the log and tests; never shown to the visitor)."""

    subscriber_id: int | None
    created: bool
    emailed: bool
    reason: str

    @property
    def confirmation(self) -> str | None:
        """What became of the confirmation email: ``sent``, ``failed`` (the
        transport refused it; asking again retries), ``sent_recently`` (one went
        out less than :data:`RESEND_INTERVAL` ago), or None when none was due."""
        if self.emailed:
            return "sent"
        if self.reason == CONFIRMATION:
            return "failed"
        if self.reason == SENT_RECENTLY:
            return "sent_recently"
        return None


def confirm_url(
    base_url: str, keys: Sequence[str], row: SubscriberRow, now: datetime, key: str | None = None
) -> str:
    """The subscriber's signed confirmation link; with ``key``, the link to
    join that the recorded confirmation email ``key`` describes."""
    payload: dict[str, Any] = {"s": row.id, "e": row.email}
    if key is not None:
        payload["k"] = key
    token = tokens.sign(keys, tokens.CONFIRM, payload, now=now)
    return f"{base_url.rstrip('/')}/confirm/{token}"


def _ip(value: str | None) -> str | None:
    """The client's IP address as consent records it; None for anything else
    (also an IPv6 zone id, which names the server's interface, not the person)."""
    if value is None or "%" in value:
        return None
    try:
        return str(ipaddress.ip_address(value or ""))
    except ValueError:
        return None


def _user_agent(value: str | None) -> str | None:
    if not value:
        return None
    cleaned = "".join(c for c in value if unicodedata.category(c) != "Cc").strip()
    return cleaned[:USER_AGENT_LIMIT] or None


def _message(
    sender: Sender, row: SubscriberRow, words: ConfirmationEmail, key: str, now: datetime
) -> ComposedEmail:
    """The confirmation email, encoded as sequence emails are (RFC 2047 words,
    IDNA domains). It is addressed to the bare address: the name a visitor
    typed is not in it (see the web edge's ``render_confirmation``)."""
    rendered = RenderedEmail(
        subject=words.subject,
        preheader="",
        html=words.html,
        text=words.text,
        headers={"Auto-Submitted": "auto-generated"},
    )
    return ComposedEmail(
        rendered,
        sender_name=sender.name,
        sender_email=sender.email,
        reply_to=sender.reply_to,
        to_email=row.email,
        to_name="",  # as the body: nothing the visitor typed but the address
        # 7-bit, as sequence emails write it: a Unicode domain in A-labels.
        message_id=f"<{key}@{ascii_address(sender.email, utf8=True).rpartition('@')[2]}>",
        date=now,
    )


def _send_confirmation(
    session: Session,
    row: SubscriberRow,
    *,
    now: datetime,
    mail: ConfirmationMail,
    join: dict[str, Any] | None = None,
) -> bool:
    """Send (and record) one confirmation email; True when the transport took it.

    ``join`` (an address already stored, on a form again): what confirming
    does, kept in the email's event, whose key the link carries."""
    assert row.id is not None
    key = f"confirm.{row.id}.{secrets.token_hex(8)}"
    sender = sender_for(mail.sequences, row.tags if join is None else join["tags"])
    if sender is None:
        log.error("no sequence names a sender: the confirmation email to #%s was not sent", row.id)
        store.add_confirmation_event(
            session, key=key, subscriber_id=row.id, sent=False, at=now,
            payload={"error": "no sequence names a sender"},
        )  # fmt: skip
        return False
    try:
        url = confirm_url(mail.base_url, mail.keys, row, now, None if join is None else key)
        words = mail.render(row, url, sender.name)
        message = _message(sender, row, words, key, now)
        mail.send(
            OutgoingEmail(message, key, "signup", "confirmation", row.email, transactional=True)
        )
    except (SendError, ValueError) as exc:
        # The subscriber row stays; the address can ask again after RESEND_INTERVAL.
        log.warning("confirmation email to subscriber #%s not sent: %s", row.id, type(exc).__name__)
        store.add_confirmation_event(
            session, key=key, subscriber_id=row.id, sent=False, at=now,
            payload={"error": type(exc).__name__},
        )  # fmt: skip
        return False
    store.add_confirmation_event(
        session, key=key, subscriber_id=row.id, sent=True, at=now,
        payload={"message_id": message.message_id, **({} if join is None else {"join": join})},
    )  # fmt: skip
    return True


def sign_up(
    session: Session,
    signup: SignupForm,
    *,
    ip: str | None,
    user_agent: str | None,
    consent_text: str,
    now: datetime,
    mail: ConfirmationMail,
) -> SignedUp:
    """Store a new address ``unconfirmed`` and send its confirmation (see the module doc).

    ``consent_text`` is the wording shown when the form did not send its own.
    **Commits** (unlike the other services): the sign-up is stored before the
    email is tried, and the email is recorded after.
    """
    data = signup.data
    row = audience_store.subscriber_by_email(session, data.email)
    created = False
    if row is None:
        if is_suppressed(session, data.email):
            return SignedUp(None, created=False, emailed=False, reason="suppressed")
        consent = Consent.parse(f"form:{signup.form}", signup.consent_text or consent_text, _ip(ip))
        try:
            result = upsert_subscribers(
                session, [data], consent=consent, status=SubscriberStatus.UNCONFIRMED,
                now=now, sequences=mail.sequences,
            )  # fmt: skip
            row = result.rows[0]
            row.consent_form = signup.form
            row.consent_user_agent = _user_agent(user_agent)
            session.commit()
            created = True
        except IntegrityError:
            # The same address signed up in another request a moment ago.
            session.rollback()
            row = audience_store.subscriber_by_email(session, data.email)
            if row is None:
                raise
    if not created and (
        row.status in JOINABLE
        or (row.status == SubscriberStatus.UNCONFIRMED and new_tags(row, signup))
    ):
        return ask_to_join(
            session, row, signup, ip=ip, user_agent=user_agent, consent_text=consent_text,
            now=now, mail=mail,
        )  # fmt: skip
    return ask_to_confirm(session, row, created=created, now=now, mail=mail)


JOINABLE = (SubscriberStatus.ACTIVE, SubscriberStatus.UNSUBSCRIBED)
"""The statuses of a stored address that a form can ask to join (see :func:`ask_to_join`);
an unconfirmed one is asked when the form has tags it lacks."""


def new_tags(row: SubscriberRow, signup: SignupForm) -> list[str]:
    """The form's tags the stored address does not have yet, in the form's order."""
    held = set(row.tags or [])
    return [tag for tag in signup.data.tags if tag not in held]


def ask_to_join(
    session: Session,
    row: SubscriberRow,
    signup: SignupForm,
    *,
    ip: str | None,
    user_agent: str | None,
    consent_text: str,
    now: datetime,
    mail: ConfirmationMail,
) -> SignedUp:
    """A stored address on a form again: send it a confirmation to join.

    An active subscriber is asked only when the form has tags they lack (the
    same form twice changes nothing); an unconfirmed one likewise (the same
    form again only resends the first confirmation, :func:`ask_to_confirm`),
    and either link then confirms the address; an unsubscribed one on any
    form, since signing up again is how someone who left comes back. Nothing goes to a
    suppressed address (an unsubscribed one only by its own unsubscribe), nor
    a second ask to the same tags within :data:`RESEND_INTERVAL`, nor more
    than :data:`JOIN_LIMIT` asks in an hour. Nothing about the
    subscriber changes until the link is confirmed
    (:func:`nurture.audience.confirming.confirm`). **Commits**, as
    :func:`ask_to_confirm` does.
    """
    assert row.id is not None
    tags = new_tags(row, signup)
    if row.status in (SubscriberStatus.ACTIVE, SubscriberStatus.UNCONFIRMED):
        if not tags:
            return SignedUp(row.id, created=False, emailed=False, reason=str(row.status))
        if is_suppressed(session, row.email):
            return SignedUp(row.id, created=False, emailed=False, reason="suppressed")
    elif not resubscribable(session, row):
        return SignedUp(row.id, created=False, emailed=False, reason="suppressed")
    if _asked_lately(session, row.id, tags, now):
        return SignedUp(row.id, created=False, emailed=False, reason=SENT_RECENTLY)
    consent = Consent.parse(f"form:{signup.form}", signup.consent_text or consent_text, _ip(ip))
    join = {
        "tags": tags,
        "form": signup.form,
        "consent_text": consent.text,
        "consent_ip": consent.ip,
        "user_agent": _user_agent(user_agent),
    }
    emailed = _send_confirmation(session, row, now=now, mail=mail, join=join)
    session.commit()
    return SignedUp(row.id, created=False, emailed=emailed, reason=CONFIRMATION)


JOIN_LIMIT = 3
"""Confirmations to join one address may get in an hour, whatever their tags."""


def _asked_lately(session: Session, subscriber_id: int, tags: Sequence[str], now: datetime) -> bool:
    """Whether an address was asked to join these ``tags`` less than
    :data:`RESEND_INTERVAL` ago, or asked :data:`JOIN_LIMIT` times this hour.

    Only a join to the same tags waits the interval: the webinar form a
    minute after the newsletter's confirmation is a new question. The hourly
    limit keeps a form posted with ever new tags from filling a stranger's inbox
    (each client address may also post only so often)."""
    recent = store.recent_confirmations(session, subscriber_id, now - timedelta(hours=1))
    joins = [
        (at, payload["join"]) for at, payload in recent if isinstance(payload.get("join"), dict)
    ]
    if len(joins) >= JOIN_LIMIT:
        return True
    return any(
        now - at < RESEND_INTERVAL and sorted(join.get("tags") or []) == sorted(tags)
        for at, join in joins
    )


def ask_to_confirm(
    session: Session,
    row: SubscriberRow,
    *,
    created: bool,
    now: datetime,
    mail: ConfirmationMail,
) -> SignedUp:
    """Send a stored, unconfirmed subscriber their confirmation email: a new
    one (``created``) at once, a known one at most once per
    :data:`RESEND_INTERVAL`; nothing to an address that is not unconfirmed or
    is suppressed. Every sign-up path (the form, the API) asks through here.

    **Commits**, as :func:`sign_up` does: the attempt is recorded after the send.
    """
    if row.status != SubscriberStatus.UNCONFIRMED:
        return SignedUp(row.id, created=created, emailed=False, reason=str(row.status))
    if is_suppressed(session, row.email):
        return SignedUp(row.id, created=created, emailed=False, reason="suppressed")
    assert row.id is not None
    last = store.last_confirmation_at(session, row.id)
    if not created and last is not None and now - last < RESEND_INTERVAL:
        return SignedUp(row.id, created=False, emailed=False, reason=SENT_RECENTLY)
    emailed = _send_confirmation(session, row, now=now, mail=mail)
    session.commit()
    return SignedUp(row.id, created=created, emailed=emailed, reason=CONFIRMATION)
