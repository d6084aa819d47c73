"""What every transport is: one ``send`` method, a ``close``, and the values they exchange.

A transport turns an :class:`OutgoingEmail` (a complete RFC 5322 message plus our
ledger ids) into a :class:`SendResult`, or raises one of the send errors of
:mod:`nurture.errors`::

    SendError
    ├── TransientSendError    not sent; retry later (429 with ``retry_after``,
    │                         5xx, connection refused, DNS failure)
    ├── AmbiguousSendError    the request went out but no answer came back
    │                         (timeout, dropped connection): never resend blindly
    └── PermanentSendError    never retry (400, 413; ``invalid_address`` when the
        │                     provider says the recipient address is invalid)
        └── AuthenticationError   401/403: the credentials are wrong; stop

Nothing else may escape ``send``: each transport translates its library's
errors in one place, with ``raise ... from exc``. Transports are thread-safe: the
dispatcher calls ``send`` on one instance from many threads at once.

The built-in transports share one send flow, :class:`BaseTransport` (the shape
of django-anymail's backends): ``send`` checks the transport is open, has the
subclass *build* its request, *call* the provider with it, and *parse* the
answer, and passes any exception of the call to the subclass's
``translate_error``, the one place where its library's errors become send errors.
A plugin may use it or implement :class:`Transport` directly.

Each transport class also has ``from_settings(settings)``; they are found by
name through the ``nurture.transports`` entry point group (see
:func:`nurture.transports.create_transport`).
"""

from __future__ import annotations

import email.message
import email.policy
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email.headerregistry import Address
from email.utils import getaddresses, parsedate_to_datetime
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Generic,
    Protocol,
    Self,
    TypeVar,
    runtime_checkable,
)

from nurture.core.rendering import AddressEncodingError, ComposedEmail, needs_smtputf8
from nurture.errors import PermanentSendError, SendError, TransientSendError

if TYPE_CHECKING:  # the core never imports the settings at run time
    from nurture.app.settings import Settings


@dataclass(frozen=True)
class OutgoingEmail:
    """One email to send, and the ids that tie the provider's events back to it."""

    message: email.message.EmailMessage | ComposedEmail
    """The complete message: From, To, Subject, Date, Message-ID, List-Unsubscribe,
    List-Unsubscribe-Post, List-Id, X-Nurture-* and a text + html alternative.

    The dispatcher passes a :class:`ComposedEmail` (structured and cheap: an
    ``EmailMessage`` costs milliseconds to build); tools and tests may pass an
    ``EmailMessage``. Transports read it through the accessors below, which
    take the fast path for a ``ComposedEmail``."""
    send_id: str
    """Our ledger id; reaches the provider so webhooks can be matched later."""
    sequence_id: str
    step_id: str
    to_email: str
    """The recipient's address (the envelope recipient)."""
    transactional: bool = False
    """An email the recipient asked for just now (the sign-up confirmation):
    not list mail, so it carries no List-Unsubscribe, and a transport that
    insists on one-click unsubscribe for list mail sends it without."""

    @property
    def composed(self) -> ComposedEmail | None:
        return self.message if isinstance(self.message, ComposedEmail) else None

    def as_message(self) -> email.message.EmailMessage:
        """The message as an ``EmailMessage`` (built on demand for a ComposedEmail)."""
        if isinstance(self.message, ComposedEmail):
            return self.message.message
        return self.message

    def raw_bytes(self, *, utf8: bool = False) -> bytes:
        """The RFC 5322 message; non-ASCII headers as RFC 2047 encoded words.

        ``utf8``: addresses with a non-ASCII local part written as UTF-8 (RFC
        6532), for a destination that takes them (SMTPUTF8, a file). Without
        it such an address raises
        :class:`~nurture.core.rendering.AddressEncodingError` (a ``ValueError``).
        """
        if isinstance(self.message, ComposedEmail):
            return self.message.raw_utf8 if utf8 else self.message.raw
        return self.message.as_bytes(policy=email.policy.SMTPUTF8 if utf8 else email.policy.default)

    def needs_smtputf8(self) -> bool:
        """Whether the message can only be written as UTF-8 (RFC 6532): an address
        with a non-ASCII local part. For an ``EmailMessage``, any non-ASCII address:
        the email package writes a Unicode domain as it is, not in IDNA A-labels."""
        if isinstance(self.message, ComposedEmail):
            return needs_smtputf8(self.to_email) or self.message.needs_smtputf8
        addresses = [self.to_email] + [
            address.addr_spec
            for name in ("From", "To", "Reply-To")
            for address in self.addresses(name)
        ]
        return not all(address.isascii() for address in addresses)

    def header(self, name: str) -> str | None:
        """One header's value as text (the first one), or None."""
        if isinstance(self.message, ComposedEmail):
            composed = self.message
            lowered = name.lower()
            if lowered == "subject":
                return composed.subject
            if lowered == "message-id":
                return message_id_of(composed)
            if lowered == "date":
                return email.utils.format_datetime(composed.date)
            for key, value in composed.headers.items():
                if key.lower() == lowered:
                    return value
            found = self.as_message().get(name)
            return None if found is None else str(found)
        raw_value = self.message.get(name)
        return None if raw_value is None else str(raw_value)

    def date(self) -> datetime | None:
        if isinstance(self.message, ComposedEmail):
            return self.message.date
        header = self.message.get("Date")
        if header is None:
            return None
        try:
            return parsedate_to_datetime(str(header))
        except (TypeError, ValueError):
            return None

    def bodies(self) -> tuple[str | None, str | None] | None:
        """(text, html) of a ComposedEmail; None for an EmailMessage (walk its parts)."""
        if isinstance(self.message, ComposedEmail):
            return self.message.rendered.text, self.message.rendered.html
        return None

    def addresses(self, name: str) -> list[Address]:
        """The addresses of From, To or Reply-To."""
        if isinstance(self.message, ComposedEmail):
            composed = self.message
            lowered = name.lower()
            if lowered == "from":
                return [_address(composed.sender_name, composed.sender_email)]
            if lowered == "to":
                return [_address(composed.to_name, composed.to_email)]
            if lowered == "reply-to":
                return [_address("", composed.reply_to)] if composed.reply_to else []
            return []
        header = self.message.get(name)
        if header is None:
            return []
        parsed = getattr(header, "addresses", None)  # a header object from policy.default
        if parsed is not None:
            return list(parsed)
        return [
            Address(display_name, addr_spec=addr_spec)
            for display_name, addr_spec in getaddresses([str(header)])
            if "@" in addr_spec
        ]


@dataclass(frozen=True)
class SendResult:
    """The normalised outcome of an accepted send; never the provider's own object."""

    provider: str
    """The transport's name: ``"outbox"``, ``"sendgrid"``, ``"smtp"``, ``"memory"``."""
    message_id: str | None
    """The provider's id (SendGrid: ``X-Message-Id``; SMTP, outbox: our Message-ID)."""
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)
    """What else the provider said (status code, headers), kept aside for the log."""


@runtime_checkable
class Transport(Protocol):
    """Sends emails. ``send`` is called from many threads at once."""

    name: str

    def send(self, email: OutgoingEmail) -> SendResult: ...

    def close(self) -> None: ...


class TransportFactory(Protocol):
    """A transport class as registered under the ``nurture.transports`` entry points."""

    @classmethod
    def from_settings(cls, settings: Settings) -> Self: ...


RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")


class BaseTransport(ABC, Generic[RequestT, ResponseT]):
    """The send flow of the built-in transports; subclasses fill in the provider's steps.

    ``send`` runs, for each email:

    1. refuse at once (:class:`TransientSendError`) once :meth:`close` has run;
    2. :meth:`build_request`: everything that needs no I/O; a message the
       provider cannot take raises :class:`PermanentSendError` here;
    3. :meth:`call`: the I/O. A :class:`SendError` it raises passes as it is;
       any other exception goes to :meth:`translate_error`, and the send error
       it returns is raised ``from`` the original;
    4. :meth:`parse_result`: the answer as a :class:`SendResult` (or a send
       error, when the answer is a refusal).

    Subclasses are thread-safe: ``send`` runs in many threads at once, so
    state shared between sends lives in the subclass behind its own locks.
    """

    name: str
    """The registered name, also :attr:`SendResult.provider`."""
    display_name: str
    """How messages name the transport (``"SendGrid"``, ``"SMTP"``)."""
    delivers: ClassVar[bool] = True
    """Whether its emails reach real inboxes. The outbox and the memory
    transport say False: only a delivering transport needs a real secret key
    and a public https base URL (see :func:`nurture.transports.delivers`)."""
    closed: bool = False

    multiplexed: bool = False
    """Whether :meth:`submit` returns before the provider answers (one
    thread drives every call in flight). The dispatcher then hands emails
    over from one thread instead of waiting on each in a thread of its own."""

    def send(self, email: OutgoingEmail) -> SendResult:
        try:
            return self._send(email)
        except SendError as exc:
            # Whatever produced the message (our text, the provider's answer
            # echoing a request), the configured secrets never leave here.
            self._scrub_error(exc)
            raise

    def submit(self, email: OutgoingEmail, done: Callable[[SendResult | Exception], None]) -> None:
        """:meth:`send`, its outcome (the result or the exception ``send``
        would raise) handed to ``done``, called exactly once: before this
        returns, or, for a :attr:`multiplexed` transport, later from its own
        thread (see :meth:`call_later`)."""
        try:
            request = self._prepare(email)
        except Exception as exc:
            done(self._scrubbed(exc))
            return

        def settle(answer: ResponseT | Exception) -> None:
            try:
                outcome: SendResult | Exception = self._conclude(email, request, answer)
            except Exception as exc:
                outcome = self._scrubbed(exc)
            done(outcome)

        self.call_later(request, settle)

    def _send(self, email: OutgoingEmail) -> SendResult:
        request = self._prepare(email)
        try:
            response = self.call(request)
        except Exception as exc:
            return self._conclude(email, request, exc)
        return self._conclude(email, request, response)

    def _prepare(self, email: OutgoingEmail) -> RequestT:
        if self.closed:
            raise TransientSendError(f"not sent: the {self.display_name} transport has been closed")
        try:
            return self.build_request(email)
        except AddressEncodingError as exc:
            raise self.address_error(exc) from exc

    def _conclude(
        self, email: OutgoingEmail, request: RequestT, answer: ResponseT | Exception
    ) -> SendResult:
        """The result of the provider's ``answer``, or the send error for what the call raised."""
        if not isinstance(answer, Exception):
            return self.parse_result(email, request, answer)
        if isinstance(answer, SendError):
            raise answer
        if isinstance(answer, AddressEncodingError):
            # One subscriber's address, not the provider: fail this email alone.
            raise self.address_error(answer) from answer
        error = self.translate_error(answer, request)
        if error is None:
            raise answer  # not the provider's failure: a bug, shown as it is
        raise error from answer

    def _scrubbed(self, exc: Exception) -> Exception:
        if isinstance(exc, SendError):
            self._scrub_error(exc)
        return exc

    def address_error(self, exc: AddressEncodingError) -> PermanentSendError:
        """The error for an address this transport cannot write (see the README)."""
        return PermanentSendError(f"not sent: the {self.display_name} transport cannot send: {exc}")

    def secrets(self) -> tuple[str, ...]:
        """The configured secrets (API keys, passwords): redacted by value from every
        send error's message, whatever their format. Subclasses holding one override this."""
        return ()

    def scrub(self, text: str) -> str:
        """``text`` without the configured secrets (see :func:`redact`)."""
        return redact(text, *self.secrets())

    def _scrub_error(self, exc: SendError) -> None:
        secrets = [secret for secret in self.secrets() if secret]
        if not secrets:
            return
        message = str(exc)
        scrubbed = self.scrub(message)
        if scrubbed != message:
            exc.args = (scrubbed, *exc.args[1:])
        # The chained cause (a library's exception) is printed with tracebacks.
        cause = exc.__cause__ or exc.__context__
        while cause is not None:
            if any(secret in str(cause) or secret in repr(cause) for secret in secrets):
                exc.__cause__ = None
                exc.__suppress_context__ = True
                break
            cause = cause.__cause__ or cause.__context__

    @abstractmethod
    def build_request(self, email: OutgoingEmail) -> RequestT:
        """What ``call`` sends for ``email``; no I/O here."""

    def call_later(
        self, request: RequestT, settle: Callable[[ResponseT | Exception], None]
    ) -> None:
        """:meth:`call`, its answer (or what it raised) handed to ``settle``.
        Here, before returning; a :attr:`multiplexed` transport overrides it to
        hand the request to its own thread and return at once."""
        try:
            answer: ResponseT | Exception = self.call(request)
        except Exception as exc:
            answer = exc
        settle(answer)

    @abstractmethod
    def call(self, request: RequestT) -> ResponseT:
        """Hand the request to the provider (the network, the disk) and return its answer."""

    @abstractmethod
    def translate_error(self, exc: Exception, request: RequestT) -> SendError | None:
        """The send error for an exception of :meth:`call`, or ``None`` to let it propagate.

        ``None`` is for exceptions that are not failures of the provider (a bug
        in our code): disguising them as send errors would hide them.
        """

    @abstractmethod
    def parse_result(
        self, email: OutgoingEmail, request: RequestT, response: ResponseT
    ) -> SendResult:
        """The :class:`SendResult` of an answer; raise a send error for a refusal."""

    def close(self) -> None:
        """Refuse further sends and release connections. Safe to call again."""
        self.closed = True
        self.release()

    def release(self) -> None:
        """Release what the transport holds (connections); :meth:`close` calls it."""


def _address(display_name: str, addr_spec: str) -> Address:
    """An Address from known-good parts: ``Address(addr_spec=...)`` re-parses the
    address with the RFC 5322 parser (about 50 µs; three per email add up)."""
    username, at, domain = addr_spec.rpartition("@")
    return Address(display_name, username, domain) if at else Address(display_name, addr_spec)


def message_id_of(message: email.message.EmailMessage | ComposedEmail) -> str | None:
    """The message's own ``Message-ID`` (angle brackets kept), or ``None``."""
    if isinstance(message, ComposedEmail):
        value: Any = message.message_id
        if not str(value).startswith("<"):
            value = f"<{value}>"
        return str(value)
    value = message.get("Message-ID")
    if value is None:
        return None
    return str(value).strip() or None


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with every non-empty secret replaced, for messages and logs.

    Longest first, so a secret containing another is not left half shown;
    a dotted secret's long parts are redacted on their own as well.
    """
    pieces: set[str] = set()
    for secret in filter(None, secrets):
        pieces.add(secret)
        # A key such as SendGrid's "SG.<id>.<secret>" may come back in parts
        # (an answer quoting it without its prefix): each long part is secret too.
        pieces.update(part for part in secret.split(".") if len(part) >= _SECRET_PART)
    for piece in sorted(pieces, key=len, reverse=True):
        text = text.replace(piece, "[redacted]")
    return text


_SECRET_PART = 8
"""The shortest part of a dotted secret redacted on its own (shorter ones, such
as SendGrid's ``SG`` prefix, are words of ordinary text)."""
