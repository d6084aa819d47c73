"""Sign-up with double opt-in: :func:`parse_signup`, :func:`sign_up`, :func:`ask_to_confirm`.

Confirming the link the email carries is :mod:`nurture.audience.confirming`.

* **Checking.** :func:`parse_signup` checks every field of a sign-up on its
  own with :class:`~nurture.audience.input.SubscriberInput` (so a form can show
  every message next to its field at once) and raises :class:`SignupInvalid`
  holding one message per refused field.
* **Signing up.** A new address is stored ``unconfirmed`` with its consent
  record (when, the form, the client's IP and user agent, the exact wording
  shown), committed, and only then sent its confirmation email: a transport
  failure never loses the sign-up (it is logged and recorded). An address
  already stored is never changed by an anonymous post; an unconfirmed one is
  sent its confirmation again, at most once per :data:`RESEND_INTERVAL`
  (:func:`ask_to_confirm`'s rule, which the API's unconfirmed subscribers are
  asked through too). An active address on a form with tags it lacks, or an
  unsubscribed one on any form, is sent a confirmation to **join**
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
import re
import secrets
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from nurture.audience.consent import Consent
from nurture.audience.enrollment import triggered_on_subscribe
from nurture.audience.input import InvalidSubscriberError, SubscriberInput, check_text
from nurture.audience.leaving import resubscribable
from nurture.audience.subscribers import upsert_subscribers
from nurture.audience.suppression import is_suppressed
from nurture.core import tokens
from nurture.core.loader import LoadedSequence
from nurture.core.model import Sender
from nurture.core.rendering import ComposedEmail, RenderedEmail, ascii_address
from nurture.core.vocabulary import SubscriberStatus
from nurture.errors import NurtureError, SendError
from nurture.store import audience as audience_store
from nurture.store import signup as store
from nurture.store.tables import SubscriberRow
from nurture.transports.base import OutgoingEmail

log = logging.getLogger("nurture.audience.signup")

__all__ = [
    "FORM_ID",
    "RESEND_INTERVAL",
    "ConfirmationMail",
    "SignedUp",
    "SignupForm",
    "SignupInvalid",
    "ask_to_confirm",
    "ask_to_join",
    "confirm_url",
    "parse_signup",
    "sign_up",
]

FORM_ID = re.compile(r"[A-Za-z0-9_-]{1,50}")
"""What a form id may be (it is in a URL and in the consent record)."""

RESEND_INTERVAL = timedelta(minutes=5)
"""The least time between two confirmation emails to one address."""

CONSENT_TEXT_LIMIT = 2000
USER_AGENT_LIMIT = 500
# A valid address, used to check each of the other fields on its own.
_PROBE = "probe@example.com"


class SignupInvalid(NurtureError):
    """Refused fields of a sign-up: ``errors`` maps each field to its message."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        super().__init__("; ".join(f"{key}: {value}" for key, value in errors.items()))
        self.errors = dict(errors)


@dataclass(frozen=True)
class SignupForm:
    """A checked sign-up: the subscriber's fields, the form and the consent wording sent."""

    data: SubscriberInput
    form: str
    consent_text: str | None


# --------------------------------------------------------------------------- checking


def _string(values: Mapping[str, Any], key: str, errors: dict[str, str]) -> str | None:
    value = values.get(key)
    if value is None or isinstance(value, str):
        return value
    errors[key] = "must be a string"
    return None


def _tags(values: Mapping[str, Any], errors: dict[str, str]) -> list[str]:
    value = values.get("tags")
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    errors["tags"] = "must be a string or a list of strings"
    return []


def _attributes(values: Mapping[str, Any], errors: dict[str, str]) -> dict[str, Any]:
    value = values.get("attributes")
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    errors["attributes"] = "must be an object of names and values"
    return {}


def _refusal(errors: dict[str, str], key: str, check: Callable[[], object]) -> None:
    try:
        check()
    except InvalidSubscriberError as exc:
        errors[key] = str(exc)


def parse_signup(
    values: Mapping[str, Any], *, default_form: str, lenient_places: bool = False
) -> SignupForm:
    """Check a sign-up's raw values (JSON types, or strings from a form).

    Keys: ``email`` (required), ``name``, ``tags`` (a string or a list),
    ``attributes`` (an object), ``timezone``, ``locale``, ``form`` (else
    ``default_form``) and ``consent_text``. ``lenient_places`` drops a refused
    time zone or locale instead of refusing the sign-up (an HTML form's hidden
    fields, which the visitor cannot correct). Raises :class:`SignupInvalid`
    with a message for every refused field.
    """
    errors: dict[str, str] = {}
    address = _string(values, "email", errors)
    name = _string(values, "name", errors) or ""
    zone = _string(values, "timezone", errors)
    locale = _string(values, "locale", errors)
    form = _string(values, "form", errors)
    wording = _string(values, "consent_text", errors)
    tags = _tags(values, errors)
    attributes = _attributes(values, errors)

    if "email" not in errors:
        if not address or not address.strip():
            errors["email"] = "email address is required"
        else:
            _refusal(errors, "email", lambda: SubscriberInput.parse(email=address))
    _refusal(errors, "name", lambda: SubscriberInput.parse(email=_PROBE, name=name))
    _refusal(errors, "tags", lambda: SubscriberInput.parse(email=_PROBE, tags=tags))
    _refusal(
        errors, "attributes", lambda: SubscriberInput.parse(email=_PROBE, attributes=attributes)
    )
    places: dict[str, str] = {}
    _refusal(places, "timezone", lambda: SubscriberInput.parse(email=_PROBE, timezone=zone))
    _refusal(places, "locale", lambda: SubscriberInput.parse(email=_PROBE, locale=locale))
    if lenient_places:
        zone = None if "timezone" in places else zone
        locale = None if "locale" in places else locale
    else:
        errors.update(places)
    form = (form or "").strip() or default_form
    if "form" not in errors and not FORM_ID.fullmatch(form):
        errors["form"] = "form id must be 1 to 50 letters, digits, '-' or '_'"
    if wording is not None and "consent_text" not in errors:
        wording = wording.strip() or None
        if wording is not None:
            _refusal(
                errors,
                "consent_text",
                lambda: check_text("consent text", wording, CONSENT_TEXT_LIMIT, one_line=False),
            )
    if errors:
        raise SignupInvalid(errors)
    assert address is not None
    data = SubscriberInput.parse(
        email=address,
        name=name,
        timezone=zone,
        locale=locale,
        tags=tags,
        attributes=attributes,
    )
    return SignupForm(data=data, form=form, consent_text=wording)


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


def _speaking_for(
    sequences: Mapping[str, LoadedSequence], tags: Sequence[str]
) -> LoadedSequence | None:
    """The sequence a sign-up with ``tags`` hears from first: the first enabled
    sequence (by id) the tags start, else the first enabled sequence with a
    trigger, else the first sequence; None when there is none."""
    ordered = [sequences[key] for key in sorted(sequences)]
    enabled = [loaded for loaded in ordered if loaded.sequence.enabled]
    for group in (
        [loaded for loaded in enabled if triggered_on_subscribe(loaded, tags)],
        [loaded for loaded in enabled if loaded.sequence.trigger is not None],
        ordered,
    ):
        if group:
            return group[0]
    return None


def sender_for(sequences: Mapping[str, LoadedSequence], tags: Sequence[str]) -> Sender | None:
    """Who confirmation emails come from: the sender of the sequence a sign-up
    with ``tags`` hears from first (see :func:`_speaking_for`)."""
    first = _speaking_for(sequences, tags)
    return None if first is None else first.sequence.sender


def page_brand(
    sequences: Mapping[str, LoadedSequence], tags: Sequence[str], project: str | None
) -> str:
    """The name the sign-up pages go by (their titles): the project's
    ``[brand]`` name, else the brand name of the sequence a sign-up with
    ``tags`` hears from first, else its sender's name; empty without any
    sequence. Never the tool's own name: subscribers never chose nurture."""
    return project or _name_of(_speaking_for(sequences, tags))


def sequence_brand(
    sequences: Mapping[str, LoadedSequence], sequence_id: str, project: str | None
) -> str:
    """The name the unsubscribe and preferences pages of an email of
    ``sequence_id`` go by: the one at the top of the email, that sequence's
    brand name, else the project's ``[brand]`` name (a sequence's own brand
    keys win, as in the email), else the sequence's sender's name; the
    project's name, or empty, for a sequence no longer loaded."""
    loaded = sequences.get(sequence_id)
    return _brand_name(loaded) or project or _name_of(loaded)


def sequence_contact(sequences: Mapping[str, LoadedSequence], sequence_id: str) -> str | None:
    """Where a subscriber whose emails of ``sequence_id`` the pages show can
    write: that sequence's sender's reply-to address (else its From), or,
    for a sequence no longer loaded, that of the first loaded one by id;
    None without any sequence."""
    loaded = sequences.get(sequence_id)
    if loaded is None and sequences:
        loaded = sequences[min(sequences)]
    if loaded is None:
        return None
    sender = loaded.sequence.sender
    return sender.reply_to or sender.email


def _brand_name(loaded: LoadedSequence | None) -> str | None:
    """The sequence's own ``brand.name``, if it sets one."""
    brand = None if loaded is None else loaded.sequence.brand
    return None if brand is None else brand.name


def _name_of(loaded: LoadedSequence | None) -> str:
    if loaded is None:
        return ""
    return _brand_name(loaded) or loaded.sequence.sender.name


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
    if not created and row.status in JOINABLE:
        return ask_to_join(
            session, row, signup, ip=ip, user_agent=user_agent, consent_text=consent_text,
            now=now, mail=mail,
        )  # fmt: skip
    return ask_to_confirm(session, row, created=created, now=now, mail=mail)


JOINABLE = (SubscriberStatus.ACTIVE, SubscriberStatus.UNSUBSCRIBED)
"""The statuses of a stored address that a form can ask to join (see :func:`ask_to_join`)."""


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
    same form twice changes nothing); an unsubscribed one on any form, since
    signing up again is how someone who left comes back. Nothing goes to a
    suppressed address (an unsubscribed one only by its own unsubscribe), nor
    a second ask to the same tags within :data:`RESEND_INTERVAL`, nor more
    than :data:`JOIN_LIMIT` asks in an hour. Nothing about the
    subscriber changes until the link is confirmed
    (:func:`nurture.audience.confirming.confirm`). **Commits**, as
    :func:`ask_to_confirm` does.
    """
    assert row.id is not None
    held = list(row.tags or [])
    if row.status == SubscriberStatus.ACTIVE:
        tags = [tag for tag in signup.data.tags if tag not in held]
        if not tags:
            return SignedUp(row.id, created=False, emailed=False, reason=str(row.status))
        if is_suppressed(session, row.email):
            return SignedUp(row.id, created=False, emailed=False, reason="suppressed")
    else:
        if not resubscribable(session, row):
            return SignedUp(row.id, created=False, emailed=False, reason="suppressed")
        tags = [tag for tag in signup.data.tags if tag not in held]
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
