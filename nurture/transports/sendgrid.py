"""The SendGrid transport: v3 Mail Send (https://www.twilio.com/docs/sendgrid/api-reference/mail-send).

Three steps, as in django-anymail's backends:

1. **Build** the request body with the official ``sendgrid`` library's helpers
   (:func:`build_mail_body`) from the email's fields (a ``ComposedEmail``'s as
   they are, an ``EmailMessage``'s parts otherwise), adding our ids as
   ``custom_args`` (they come back in every Event Webhook post) and the sequence
   as a category.
2. **Check** it against the API's documented limits before spending a request
   (:func:`validate_mail_body`).
3. **Post** it, either through the official client (``pooled=False``: one new
   connection per email) or, by default, the same JSON bytes and headers over a
   pool of keep-alive connections (``http.client``, what the official client
   uses underneath), which is what reaching 1,000 emails/s takes. Both paths
   classify answers and errors in the same two places, :func:`error_for_status`
   and :meth:`SendGridTransport.translate_error`.

The flow around the steps (closed check, error translation) is
:class:`~nurture.transports.base.BaseTransport`'s.

The API key never appears in an exception message or a log record: it is
redacted by value (whatever its format) from every send error, and by pattern
(``SG.…``, ``Bearer …``) from the library's log records.

**Internationalised addresses.** SendGrid takes a Unicode domain once it is
IDNA-encoded (``anna@xn--exmple-cua.se``), which is what is sent. It has no
SMTPUTF8 support, so an address with a non-ASCII local part
(``jörg@example.com``) cannot be sent through it: that email fails alone with
a :class:`PermanentSendError` that says so, before any request is made.
"""

from __future__ import annotations

import functools
import http.client
import json
import logging
import re
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from email import policy
from email.message import EmailMessage, Message
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Self, TypeVar

import python_http_client.exceptions
import sendgrid
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
from nurture.errors import (
    AmbiguousSendError,
    AuthenticationError,
    ConfigurationError,
    PermanentSendError,
    SendError,
    TransientSendError,
)
from nurture.transports.base import BaseTransport, OutgoingEmail, SendResult, redact
from nurture.transports.http_pool import KeepAlivePool, Reply, lower_keys

if TYPE_CHECKING:
    from nurture.app.settings import Settings

DEFAULT_HOST = "https://api.sendgrid.com"
MAIL_SEND_PATH = "/v3/mail/send"

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
_ONE_YEAR = 365 * 24 * 3600.0
_RECIPIENT_FIELD = re.compile(r"personalizations\.\d+\.(to|cc|bcc)\.\d+\.email")
# What python_http_client logs at DEBUG includes the Authorization header.
_SECRET_PATTERNS = re.compile(r"(?i)(bearer\s+)[^\s'\",}]+|SG\.[\w-]+\.[\w-]+")


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
            if not _is_address(recipient.get("email")):
                problems.append(f"{where}.email: not an email address")
            if re.search(r"[;,]", recipient.get("name") or ""):
                problems.append(f"{where}.name: must not contain ';' or ','")
        if not personalization.get("to"):
            problems.append(f"personalizations.{p_index}.to: a recipient is required")
    if recipients > MAX_RECIPIENTS:
        problems.append(f"personalizations: more than {MAX_RECIPIENTS} recipients")
    sender = body.get("from") or {}
    if not _is_address(sender.get("email")):
        problems.append("from.email: not an email address")
    elif not sender["email"].isascii():
        problems.append("from.email: must be ASCII (Unicode is not supported in from)")
    if "reply_to" in body and not _is_address(body["reply_to"].get("email")):
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


def _is_address(value: Any) -> bool:
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


# -- reading the answer --------------------------------------------------------


def error_for_status(reply: Reply, now: float, secrets: Iterable[str] = ()) -> SendError:
    """The one mapping from a non-2xx answer to a send error (both clients use it).

    ``secrets`` are redacted from the provider's text before it is cut short,
    so not even a prefix of one survives.
    """
    status, detail = reply.status, _error_detail(reply.body, tuple(secrets))
    if status in (401, 403):
        refused = "the API key" if status == 401 else "the request"
        return AuthenticationError(
            f"SendGrid refused {refused} (HTTP {status}: {detail}). Check "
            "sendgrid_api_key (NURTURE_SENDGRID_API_KEY): the key is wrong, revoked, or "
            "lacks the mail.send permission (a 403 can also mean the From address is "
            "not a verified sender). Dispatching stops until this is fixed.",
            status=status,
        )
    if status == 429 or status == 408 or status >= 500:
        return TransientSendError(
            f"SendGrid answered HTTP {status} ({detail}); not sent, retry later",
            status=status,
            retry_after=retry_after_seconds(reply.headers, now),
        )
    return PermanentSendError(
        f"SendGrid rejected the email (HTTP {status}): {detail}",
        status=status,
        invalid_address=status == 400 and _recipient_rejected(reply.body),
    )


def _error_list(body: bytes) -> list[dict[str, Any]]:
    try:
        errors = json.loads(body).get("errors")
    except (ValueError, AttributeError):
        return []
    return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []


def _error_detail(body: bytes, secrets: tuple[str, ...] = ()) -> str:
    errors = _error_list(body)
    if errors:
        detail = "; ".join(
            f"{e.get('message')} ({e['field']})" if e.get("field") else str(e.get("message"))
            for e in errors
        )
        return _redact_keys(redact(detail, *secrets))
    detail = redact(body.decode("utf-8", "replace"), *secrets)
    return _redact_keys(detail[:200]) or "no details"


def _recipient_rejected(body: bytes) -> bool:
    return any(_RECIPIENT_FIELD.fullmatch(str(e.get("field") or "")) for e in _error_list(body))


def retry_after_seconds(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds to wait, from ``Retry-After`` (RFC 9110 §10.2.3) or ``X-RateLimit-Reset``.

    SendGrid sends ``X-RateLimit-Reset`` as an epoch timestamp (rate-limits doc);
    a value under a year is read as a delay in seconds, as some proxies send.
    """
    retry_after = headers.get("retry-after")
    if retry_after:
        try:
            return max(0.0, float(retry_after))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(retry_after).timestamp() - now)
            except (TypeError, ValueError):
                pass
    reset = headers.get("x-ratelimit-reset")
    if reset:
        try:
            value = float(reset)
        except ValueError:
            return None
        return max(0.0, value - now if value > _ONE_YEAR else value)
    return None


# -- logging -------------------------------------------------------------------


def _redact_keys(text: str) -> str:
    return _SECRET_PATTERNS.sub(lambda m: f"{m.group(1) or ''}[redacted]", text)


class _RedactSecrets(logging.Filter):
    """Rewrites records that carry ``Bearer <key>`` or an ``SG.`` key."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _redact_keys(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def _quiet_library_logs() -> None:
    # python_http_client logs every request's headers (Authorization included)
    # and payload (subscribers' addresses) at DEBUG. Unless the application set
    # its level on purpose, keep it at WARNING; and redact keys regardless.
    library = logging.getLogger("python_http_client")
    if library.level == logging.NOTSET:
        library.setLevel(logging.WARNING)
    client_logger = logging.getLogger("python_http_client.client")
    if not any(isinstance(f, _RedactSecrets) for f in client_logger.filters):
        client_logger.addFilter(_RedactSecrets())


# -- keep-alive connections -----------------------------------------------------


class SendGridTransport(BaseTransport[dict[str, Any], Reply]):
    """Sends through SendGrid's v3 Mail Send API. Thread-safe.

    ``pooled=True`` (default) posts the official client's request (same JSON
    bytes, same headers) over up to ``max_connections`` keep-alive connections;
    ``pooled=False`` calls the official client, which opens a connection per
    email. ``timeout`` bounds connecting and each read, in seconds.
    ``wall_clock`` (for tests) is what the epoch in ``X-RateLimit-Reset`` is
    compared with.
    """

    name = "sendgrid"
    display_name = "SendGrid"

    def __init__(
        self,
        api_key: str,
        *,
        host: str = DEFAULT_HOST,
        timeout: float = 10.0,
        pooled: bool = True,
        max_connections: int = 128,
        required_headers: Collection[str] = REQUIRED_HEADERS,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if not api_key or not api_key.strip():
            raise ConfigurationError(
                "setting 'sendgrid_api_key' (in nurture.toml as sendgrid_api_key, or "
                "NURTURE_SENDGRID_API_KEY) is required for transport 'sendgrid'"
            )
        try:
            parts = urllib.parse.urlsplit(host)
            # .port raises ValueError for a port that is not a number.
            valid_host = parts.scheme in ("http", "https") and bool(parts.hostname)
            valid_host = valid_host and (parts.port or 0) >= 0
        except ValueError:
            valid_host = False
        if not valid_host:
            raise ConfigurationError(
                "setting 'sendgrid_api_host' (NURTURE_SENDGRID_API_HOST) must be an "
                f"http:// or https:// URL, got {host!r}"
            )
        _quiet_library_logs()
        self._api_key = api_key
        self.host = host.rstrip("/")
        self.timeout = timeout
        self.pooled = pooled
        self.required_headers = tuple(required_headers)
        self._wall_clock = wall_clock
        self._client = sendgrid.SendGridAPIClient(api_key=api_key, host=self.host)
        # python_http_client adds Content-Type to this shared dict on the first
        # post; another thread copying the dict at that moment would fail. Add it now.
        self._client.client.request_headers["Content-Type"] = "application/json"
        self._headers: dict[str, str] = dict(self._client.client.request_headers)
        self._path = urllib.parse.urlsplit(self.host).path + MAIL_SEND_PATH
        self._pool = (
            KeepAlivePool(self.host, timeout=timeout, size=max_connections) if pooled else None
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(
            settings.sendgrid_api_key or "",
            host=settings.sendgrid_api_host,
            timeout=settings.sendgrid_timeout,
        )

    def __repr__(self) -> str:
        return f"SendGridTransport(host={self.host!r}, pooled={self.pooled})"

    def secrets(self) -> tuple[str, ...]:
        return (self._api_key,)

    def scrub(self, text: str) -> str:
        return _redact_keys(super().scrub(text))

    def build_request(self, email: OutgoingEmail) -> dict[str, Any]:
        body = build_mail_body(email)
        problems = validate_mail_body(body, required_headers=self.required_headers)
        if problems:
            raise PermanentSendError(
                "the SendGrid request would be rejected: " + "; ".join(problems),
                invalid_address=not _is_address(email.to_email),
            )
        return body

    def call(self, request: dict[str, Any]) -> Reply:
        if self._pool is not None:
            # Exactly the bytes python_http_client sends for this body.
            data = json.dumps(request).encode("utf-8")
            return self._pool.post(self._path, data, self._headers)
        return self._post(request)

    def parse_result(
        self, email: OutgoingEmail, request: dict[str, Any], response: Reply
    ) -> SendResult:
        if not 200 <= response.status < 300:
            raise error_for_status(response, self._wall_clock(), self.secrets())
        return SendResult(
            provider=self.name,
            message_id=response.headers.get("x-message-id"),
            raw={"status": response.status, "headers": dict(response.headers)},
        )

    def _post(self, body: dict[str, Any]) -> Reply:
        """Through the official client. Its send() has no timeout, so call post()."""
        try:
            response = self._client.client.mail.send.post(request_body=body, timeout=self.timeout)
        except python_http_client.exceptions.HTTPError as exc:
            # It raises for every status >= 400; turn that back into an answer so
            # both paths classify statuses in _error_for_status.
            return Reply(exc.status_code, lower_keys(exc.headers.items()), exc.body or b"")
        return Reply(response.status_code, lower_keys(response.headers.items()), response.body)

    def translate_error(self, exc: Exception, request: dict[str, Any]) -> SendError | None:
        """The one place where network errors become send errors (both paths)."""
        if isinstance(exc, urllib.error.URLError):
            # urllib (and our pool, in its image) wraps what fails while connecting
            # and sending: refused, DNS, TLS, connect timeout. Nothing was accepted.
            if isinstance(exc.reason, ssl.SSLCertVerificationError):
                # Not SendGrid, or a TLS-intercepting proxy: retrying will not
                # help. Stop dispatching, as for a refused key.
                return AuthenticationError(
                    f"not sent: the TLS certificate of {self.host} cannot be verified "
                    f"({exc.reason.verify_message}); check sendgrid_api_host "
                    "(NURTURE_SENDGRID_API_HOST) and the system's trusted certificates"
                )
            message = f"not sent: cannot reach SendGrid at {self.host}: {exc.reason!r}"
            return TransientSendError(redact(message, self._api_key))
        if isinstance(exc, TimeoutError):
            return AmbiguousSendError(
                f"no answer from SendGrid within {self.timeout} s after the request was "
                "sent; it may have accepted the email"
            )
        if isinstance(exc, http.client.HTTPException | OSError):
            # The connection dropped or was reset, or the answer was garbled,
            # after the whole request had gone out.
            message = (
                f"the connection to SendGrid failed after the request was sent ({exc!r}); "
                "it may have accepted the email"
            )
            return AmbiguousSendError(redact(message, self._api_key))
        return None

    def release(self) -> None:
        if self._pool is not None:
            self._pool.close()
