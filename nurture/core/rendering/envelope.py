"""A rendered email with its envelope: everything a transport needs, cheaply.

Building an :class:`email.message.EmailMessage` costs milliseconds per email
(the standard library creates a header class per header set), which alone
would cap dispatch near 300 emails/s. So the dispatcher hands transports this
value instead: HTTP providers read the structured fields, the outbox and SMTP
write :attr:`raw` (RFC 5322 bytes, built in about 0.1 ms), and
:attr:`message` builds the ``EmailMessage`` only for code that asks for it.

The display names and the subject are made header-safe here, once
(:func:`~nurture.core.rendering.message.header_text`): an HTTP provider reads
these fields, not the encoded headers, and must not get a CR/LF from a name.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from functools import cached_property
from typing import TypeVar

from nurture.core.rendering.message import (
    RenderedEmail,
    header_text,
    needs_smtputf8,
    unicode_problem,
)

_T = TypeVar("_T")


@dataclass(frozen=True)
class ComposedEmail:
    rendered: RenderedEmail
    sender_name: str
    sender_email: str
    reply_to: str | None
    to_email: str
    to_name: str
    message_id: str
    date: datetime

    def __post_init__(self) -> None:
        # Frozen: set through object.__setattr__, once, before anyone reads them.
        object.__setattr__(self, "sender_name", header_text(self.sender_name))
        object.__setattr__(self, "to_name", header_text(self.to_name))

    @cached_property
    def subject(self) -> str:
        """The rendered subject as it goes into the header (no control characters)."""
        return header_text(self.rendered.subject)

    @property
    def needs_smtputf8(self) -> bool:
        """Whether an address has a non-ASCII local part (see :attr:`raw_utf8`)."""
        addresses = (self.to_email, self.sender_email, self.reply_to or "")
        return any(needs_smtputf8(address) for address in addresses if address)

    @property
    def headers(self) -> dict[str, str]:
        """The pipeline's own headers (List-*, X-Nurture-*)."""
        return self.rendered.headers

    def unicode_problem(self) -> str | None:
        """Why :attr:`raw` could not be written, or None: a lone surrogate in a
        header's text (a name, an address, the base URL in ``List-Unsubscribe``).

        The rendered parts were checked when rendered; click tracking and the
        pixel add only URLs under the base URL, which ``List-Unsubscribe``
        holds too. Cheap (short texts), so a sender can ask before sending.
        """
        texts = (self.subject, self.sender_name, self.sender_email, self.to_name,
                 self.to_email, self.reply_to or "", self.message_id)  # fmt: skip
        for text in (*texts, *self.headers.keys(), *self.headers.values()):
            if not text.isascii():  # most are: nothing more to look at
                problem = unicode_problem(text)
                if problem is not None:
                    return f"{problem} in a header"
        return None

    @cached_property
    def raw(self) -> bytes:
        """The complete RFC 5322 message, CRLF line ends, 7-bit.

        Raises :class:`~nurture.core.rendering.message.AddressEncodingError`
        when :attr:`needs_smtputf8`.
        """
        return self._build(self.rendered.to_bytes)

    @cached_property
    def raw_utf8(self) -> bytes:
        """As :attr:`raw`, but addresses with a non-ASCII local part written as UTF-8."""
        return self._build(functools.partial(self.rendered.to_bytes, utf8=True))

    @cached_property
    def message(self) -> EmailMessage:
        """The same message as an EmailMessage (slow: for tests and tools)."""
        return self._build(self.rendered.to_message)

    def _build(self, build: Callable[..., _T]) -> _T:
        return build(
            sender_name=self.sender_name,
            sender_email=self.sender_email,
            reply_to=self.reply_to,
            to_email=self.to_email,
            to_name=self.to_name,
            message_id=self.message_id,
            date=self.date,
        )
