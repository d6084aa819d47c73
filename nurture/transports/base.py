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

Each transport class also has ``from_settings(settings)``; they are found by
name through the ``nurture.transports`` entry point group (see
:func:`nurture.transports.create_transport`).
"""

from __future__ import annotations

import email.message
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, Self, runtime_checkable

if TYPE_CHECKING:  # the core never imports the settings at run time
    from nurture.config import Settings


@dataclass(frozen=True)
class OutgoingEmail:
    """One email to send, and the ids that tie the provider's events back to it."""

    message: email.message.EmailMessage
    """The complete message: From, To, Subject, Date, Message-ID, List-Unsubscribe,
    List-Unsubscribe-Post, List-Id, X-Nurture-* and a text + html alternative."""
    send_id: str
    """Our ledger id; reaches the provider so webhooks can be matched later."""
    sequence_id: str
    step_id: str
    to_email: str
    """The recipient's address (the envelope recipient)."""


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


def message_id_of(message: email.message.EmailMessage) -> str | None:
    """The message's own ``Message-ID`` (angle brackets kept), or ``None``."""
    value = message.get("Message-ID")
    if value is None:
        return None
    return str(value).strip() or None


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with every non-empty secret replaced, for messages and logs."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return text
