"""A rendered email with its envelope: everything a transport needs, cheaply.

Building an :class:`email.message.EmailMessage` costs milliseconds per email
(the standard library creates a header class per header set), which alone
would cap dispatch near 300 emails/s. So the dispatcher hands transports this
value instead: HTTP providers read the structured fields, the outbox and SMTP
write :attr:`raw` (RFC 5322 bytes, built in about 0.1 ms), and
:attr:`message` builds the ``EmailMessage`` only for code that asks for it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from functools import cached_property
from typing import TypeVar

from nurture.core.rendering.message import RenderedEmail

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

    @property
    def subject(self) -> str:
        return self.rendered.subject

    @property
    def headers(self) -> dict[str, str]:
        """The pipeline's own headers (List-*, X-Nurture-*)."""
        return self.rendered.headers

    @cached_property
    def raw(self) -> bytes:
        """The complete RFC 5322 message, CRLF line ends."""
        return self._build(self.rendered.to_bytes)

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
