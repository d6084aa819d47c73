"""The body of a v3 Mail Send request: building it from an email, and checking it.

What SendGrid is sent, apart from how it is sent (``nurture.transports.sendgrid``
posts it and reads the answer). Two steps, pure functions of the email:

1. **Build** the request body with the official ``sendgrid`` library's helpers
   (:func:`build_mail_body`) from the email's fields (a ``ComposedEmail``'s as
   they are, an ``EmailMessage``'s parts otherwise), adding our ids as
   ``custom_args`` (they come back in every Event Webhook post) and the sequence
   as a category.
2. **Check** it against the API's documented limits before spending a request
   (:func:`validate_mail_body`).

**Internationalised addresses.** SendGrid takes a Unicode domain once it is
IDNA-encoded (``anna@xn--exmple-cua.se``), which is what is sent. It has no
SMTPUTF8 support, so an address with a non-ASCII local part
(``jörg@example.com``) cannot be sent through it: that email fails alone with
a :class:`PermanentSendError` that says so, before any request is made.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Collection, Iterable, Iterator, Mapping
from email import policy
from email.message import EmailMessage, Message
from typing import Any, TypeVar

from sendgrid.helpers.mail import (
    Category,
    CustomArg,
    From,
    Header,
    HtmlContent,
    Mail,
    PlainTextContent,
    ReplyTo,
    Subject,
    To,
)
from sendgrid.helpers.mail.exceptions import SendGridException

from nurture.core.rendering import AddressEncodingError, ascii_address
from nurture.errors import PermanentSendError
from nurture.transports.base import OutgoingEmail

# Limits of v3 Mail Send (https://www.twilio.com/docs/sendgrid/api-reference/mail-send,
# ".../mail-send/limitations").
MAX_CATEGORIES = 10
MAX_CATEGORY_LENGTH = 255
MAX_CUSTOM_ARGS_BYTES = 10_000  # "must be less than 10000 bytes", all custom args together
MAX_RECIPIENTS = 1000

# Every nurture email carries one-click unsubscribe (RFC 8058; Gmail and Yahoo
# require it of bulk senders): a message without these is a bug upstream, and
# one that should not reach subscribers.
REQUIRED_HEADERS: tuple[str, ...] = ("List-Unsubscribe", "List-Unsubscribe-Post")

# Headers SendGrid refuses in ``headers`` ("You may not overwrite the following
# reserved headers", the Mail Send reference and the library's Header helper).
RESERVED_HEADERS = frozenset(
    {
        "x-sg-id",
        "x-sg-eid",
        "received",
        "dkim-signature",
        "content-type",
        "content-transfer-encoding",
        "to",
        "from",
        "subject",
        "reply-to",
        "cc",
        "bcc",
    }
)
# ...and headers we leave to SendGrid: it writes the MIME structure, stamps the
# Date when it really sends (our Date may come from an accelerated clock), and
# issues its own Message-ID (the X-Message-Id we record). Return-Path and Sender
# would break its bounce handling.
_NOT_FORWARDED = RESERVED_HEADERS | {"date", "message-id", "mime-version", "return-path", "sender"}

_E = TypeVar("_E", From, To, ReplyTo)


# -- building the request body ----------------------------------------------


def build_mail_body(email: OutgoingEmail) -> dict[str, Any]:
    """The v3 Mail Send JSON body for ``email``, built with ``sendgrid.helpers.mail``.

    Raises :class:`PermanentSendError` if the message cannot be expressed (no
    From, no text or html part, attachments, a header repeated).
    """
    try:
        senders = email.addresses("From")
        if not senders:
            raise PermanentSendError("the message has no From address")
        sender = senders[0]
        mail = Mail(
            from_email=_named(From, _sendable(sender.addr_spec), sender.display_name),
            to_emails=_named(To, _sendable(email.to_email), _recipient_name(email, email.to_email)),
            subject=Subject(email.header("Subject") or ""),
        )
        replies = email.addresses("Reply-To")
        if replies:
            mail.reply_to = _named(
                ReplyTo, _sendable(replies[0].addr_spec), replies[0].display_name
            )
        bodies = email.bodies()
        text, html = bodies if bodies is not None else _bodies(email.as_message())
        # The API wants text/plain before text/html; the library keeps that order.
        if text is not None:
            mail.add_content(PlainTextContent(text))
        if html is not None:
            mail.add_content(HtmlContent(html))
        for name, value in _forwarded_headers(email):
            mail.add_header(Header(name, value))
        # custom_args values must be strings; they come back in every webhook event.
        mail.add_custom_arg(CustomArg("nurture_send_id", str(email.send_id)))
        mail.add_custom_arg(CustomArg("nurture_sequence", str(email.sequence_id)))
        mail.add_custom_arg(CustomArg("nurture_step", str(email.step_id)))
        if email.sequence_id:
            mail.add_category(Category(str(email.sequence_id)))
        body: dict[str, Any] = mail.get()
    except (SendGridException, ValueError, TypeError, LookupError) as exc:
        # The library refuses a value (or a part has an unknown charset): the same
        # message would fail again, so this is permanent.
        raise PermanentSendError(f"cannot build the SendGrid request: {exc!r}") from exc
    return body


def _sendable(address: str) -> str:
    """``address`` as SendGrid takes it: the domain IDNA-encoded, the local part ASCII."""
    if address.isascii():
        return address  # as it is: validate_mail_body judges the rest
    try:
        return ascii_address(address)
    except AddressEncodingError as exc:
        raise PermanentSendError(
            f"not sent: SendGrid does not support this address: {exc}"
        ) from exc


def _named(kind: type[_E], address: str, name: str | None) -> _E:
    """``kind(address, name)``, without the library re-parsing a bare address.

    Given no name, the helpers run ``email.utils.parseaddr`` on the address
    (slow, per email, and pointless for an address already parsed).
    """
    value = kind()
    value.email = address
    value.name = name or None
    return value


def _recipient_name(email: OutgoingEmail, to_email: str) -> str | None:
    """The display name the To header gives ``to_email``, fit for SendGrid."""
    for address in email.addresses("To"):
        if address.addr_spec.lower() == to_email.lower() and address.display_name:
            # "The to.name ... personalizations cannot include either the ; or ,
            # characters" (Mail Send limitations).
            cleaned = " ".join(re.sub(r"[;,]", " ", address.display_name).split())
            return cleaned or None
    return None


def _bodies(message: EmailMessage) -> tuple[str | None, str | None]:
    """The text/plain and text/html bodies; anything else in the message is refused.

    One walk over the parts (``get_body`` and ``iter_attachments`` each walk it
    again, and this runs for every email).
    """
    text = html = None
    for part in message.walk():
        if part.is_multipart():
            continue
        content_type = part.get_content_type()
        if part.get_content_disposition() == "attachment":
            raise PermanentSendError("attachments are not supported by the SendGrid transport")
        if content_type == "text/plain" and text is None:
            text = _text_of(part)
        elif content_type == "text/html" and html is None:
            html = _text_of(part)
        else:
            raise PermanentSendError(
                f"a {content_type} part is not supported by the SendGrid transport"
            )
    if not text and not html:
        raise PermanentSendError("the message has neither a text/plain nor a text/html part")
    return text or None, html or None


def _text_of(part: Message) -> str:
    """A text part's content, as ``get_content()`` gives it but for less (it runs per email)."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):  # only a multipart part decodes to something else
        raise PermanentSendError(f"cannot read the {part.get_content_type()} part")
    return payload.decode(part.get_content_charset("ascii"), "replace")


def _forwarded_headers(email: OutgoingEmail) -> Iterator[tuple[str, str]]:
    composed = email.composed
    items: Iterable[tuple[str, Any]] = (
        composed.headers.items() if composed is not None else email.as_message().items()
    )
    seen: set[str] = set()
    for name, value in items:
        lower = name.lower()
        if lower in _NOT_FORWARDED or lower.startswith("content-"):
            continue
        if lower in seen:
            # The API's headers field is a JSON object: one value per name.
            raise PermanentSendError(f"header {name} appears more than once")
        seen.add(lower)
        text = str(value)
        yield name, text if text.isascii() else _encoded_header_value(name, text)


@functools.lru_cache(maxsize=1024)
def _encoded_header_value(name: str, text: str) -> str:
    """A non-ASCII header value as it would be written (RFC 2047 encoded words), unfolded.

    SendGrid copies ``headers`` values into the message verbatim, so Unicode must
    arrive encoded (the library's Header helper says so); folding with the SMTP
    policy encodes only the words that need it and leaves ``<...>`` intact. The
    values repeat (a sequence's List-Id), and folding is slow: hence the cache.
    """
    # fold() passes a short str through as is; a parsed header object is re-encoded.
    folded = policy.SMTP.header_factory(name, text).fold(policy=policy.SMTP)
    unfolded = re.sub(r"\r\n(?=[ \t])", "", folded).rstrip("\r\n")
    return unfolded.split(":", 1)[1].strip()


# -- checking it -------------------------------------------------------------


def validate_mail_body(
    body: Mapping[str, Any], *, required_headers: Collection[str] = REQUIRED_HEADERS
) -> list[str]:
    """What SendGrid (or nurture's contract) would reject in ``body``; empty if nothing."""
    problems: list[str] = []
    personalizations = body.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        problems.append("personalizations: at least one is required")
        personalizations = []
    recipients = 0
    for p_index, personalization in enumerate(personalizations):
        for r_index, recipient in enumerate(personalization.get("to") or []):
            recipients += 1
            where = f"personalizations.{p_index}.to.{r_index}"
            if not is_address(recipient.get("email")):
                problems.append(f"{where}.email: not an email address")
            if re.search(r"[;,]", recipient.get("name") or ""):
                problems.append(f"{where}.name: must not contain ';' or ','")
        if not personalization.get("to"):
            problems.append(f"personalizations.{p_index}.to: a recipient is required")
    if recipients > MAX_RECIPIENTS:
        problems.append(f"personalizations: more than {MAX_RECIPIENTS} recipients")
    sender = body.get("from") or {}
    if not is_address(sender.get("email")):
        problems.append("from.email: not an email address")
    elif not sender["email"].isascii():
        problems.append("from.email: must be ASCII (Unicode is not supported in from)")
    if "reply_to" in body and not is_address(body["reply_to"].get("email")):
        problems.append("reply_to.email: not an email address")
    if not isinstance(body.get("subject"), str) or not body["subject"]:
        problems.append("subject: must be a non-empty string")
    problems += _content_problems(body.get("content"))
    problems += _header_problems(body.get("headers") or {}, required_headers)
    problems += _custom_arg_problems(body.get("custom_args") or {})
    categories = body.get("categories") or []
    if len(categories) > MAX_CATEGORIES:
        problems.append(f"categories: at most {MAX_CATEGORIES}, got {len(categories)}")
    for category in categories:
        if not isinstance(category, str) or not 0 < len(category) <= MAX_CATEGORY_LENGTH:
            problems.append(f"categories: {category!r} must be 1-{MAX_CATEGORY_LENGTH} characters")
    return problems


def is_address(value: Any) -> bool:
    """Plausible for an API that checks the rest itself: ``x@y``, no white space."""
    return isinstance(value, str) and "@" in value.strip("@") and value.split() == [value]


def _content_problems(content: Any) -> list[str]:
    if not isinstance(content, list) or not content:
        return ["content: at least one text/plain or text/html part is required"]
    problems = []
    for index, part in enumerate(content):
        if not isinstance(part.get("value"), str) or not part["value"]:
            problems.append(f"content.{index}.value: must be a non-empty string")
    types = [part.get("type") for part in content]
    if "text/plain" in types and types[0] != "text/plain":
        problems.append("content: text/plain must come first")
    return problems


def _header_problems(headers: Mapping[str, Any], required: Collection[str]) -> list[str]:
    problems = []
    for name, value in headers.items():
        if name.lower() in RESERVED_HEADERS:
            problems.append(f"headers.{name}: reserved by SendGrid")
        if not isinstance(value, str) or not value or not value.isascii():
            problems.append(f"headers.{name}: must be a non-empty ASCII string")
    present = {name.lower() for name in headers}
    for name in required:
        if name.lower() not in present:
            problems.append(f"headers.{name}: required")
    return problems


def _custom_arg_problems(custom_args: Mapping[str, Any]) -> list[str]:
    problems = [
        f"custom_args.{key}: must be a string, got {type(value).__name__}"
        for key, value in custom_args.items()
        if not isinstance(value, str)
    ]
    if not custom_args.get("nurture_send_id"):
        problems.append("custom_args.nurture_send_id: required (webhooks are matched by it)")
    size = len(json.dumps(custom_args, ensure_ascii=False).encode())
    if size >= MAX_CUSTOM_ARGS_BYTES:
        problems.append(f"custom_args: {size} bytes; must be under {MAX_CUSTOM_ARGS_BYTES}")
    return problems
