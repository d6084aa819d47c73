"""Turning a decided step into the email to send: links, rendering, headers.

Shell code (it knows the site's base URL and secret); the rendering itself is
the pure core's :class:`TemplateLibrary`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from urllib.parse import quote

from nurture.core.loader import LoadedSequence
from nurture.core.model import Step
from nurture.core.rendering import ComposedEmail, Links, TemplateLibrary
from nurture.core.subscriber import Subscriber
from nurture.core.tokens import sign

MANAGE = "manage"
"""The purpose signed into unsubscribe and preferences tokens."""


def build_links(base_url: str, secret_key: str, email: str, sequence_id: str) -> Links:
    """The subscriber's own signed links for one sequence.

    One token serves both pages: each only lets the holder manage this one
    subscription, and signing once per email is measurably cheaper.
    """
    token = quote(sign(secret_key, MANAGE, {"e": email, "s": sequence_id}))
    base = base_url.rstrip("/")
    return Links(
        unsubscribe_url=f"{base}/unsubscribe/{token}",
        preferences_url=f"{base}/preferences/{token}",
    )


class Composer:
    """Builds the complete RFC 5322 message for (sequence, step, subscriber)."""

    def __init__(
        self,
        library: Callable[[], TemplateLibrary],
        *,
        base_url: str,
        secret_key: str,
        postal_address: str,
    ) -> None:
        self.library = library
        self.base_url = base_url
        self.secret_key = secret_key
        self.postal_address = postal_address

    def __call__(
        self, loaded: LoadedSequence, step: Step, subscriber: Subscriber, key: str, now: datetime
    ) -> ComposedEmail:
        sequence = loaded.sequence
        links = build_links(self.base_url, self.secret_key, subscriber.email, sequence.id)
        rendered = self.library().render(sequence, step, subscriber, links, self.postal_address)
        domain = sequence.sender.email.rpartition("@")[2]
        return ComposedEmail(
            rendered=rendered,
            sender_name=sequence.sender.name,
            sender_email=sequence.sender.email,
            reply_to=sequence.sender.reply_to,
            to_email=subscriber.email,
            to_name=subscriber.name,
            # The ledger key in the Message-ID: a message found in an inbox or
            # a bounce can be traced back to its send row.
            message_id=f"<{key}.{step.id}@{domain}>",
            date=now,
        )
