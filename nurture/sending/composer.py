"""Turning a decided step into the email to send: links, rendering, headers.

Shell code (it knows the site's base URL and secret); the rendering itself is
the pure core's :class:`TemplateLibrary`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from functools import lru_cache
from urllib.parse import quote

from nurture.core.loader import LoadedSequence
from nurture.core.model import Step
from nurture.core.rendering import ComposedEmail, Links, TemplateLibrary
from nurture.core.subscriber import Subscriber
from nurture.core.tokens import MANAGE, sign, verify


def build_links(
    base_url: str,
    secret_key: str,
    email: str,
    sequence_id: str,
    *,
    now: datetime,
    unsubscribe_mailbox: str | None = None,
) -> Links:
    """The subscriber's own signed links for one sequence.

    One token serves both pages: each only lets the holder manage this one
    subscription, and signing once per email is measurably cheaper. Only the
    current key signs, so the old keys are not needed here (see
    :func:`read_link_token`). With ``unsubscribe_mailbox``, the links carry a
    ``mailto:`` for ``List-Unsubscribe`` too: the request arrives from the
    subscriber's own address, so it needs no token.
    """
    token = quote(sign(secret_key, MANAGE, {"e": email, "s": sequence_id}, now=now))
    base = base_url.rstrip("/")
    return Links(
        unsubscribe_url=f"{base}/unsubscribe/{token}",
        preferences_url=f"{base}/preferences/{token}",
        unsubscribe_mailto=mailto_unsubscribe(unsubscribe_mailbox) if unsubscribe_mailbox else None,
    )


@lru_cache(maxsize=16)
def mailto_unsubscribe(mailbox: str) -> str:
    """The ``mailto:`` URI of an unsubscribe request (RFC 6068), subject preset."""
    return f"mailto:{quote(mailbox, safe='@')}?subject=unsubscribe"


def read_link_token(
    secret_keys: Sequence[str], token: str, *, now: datetime
) -> tuple[str, str] | None:
    """The (email, sequence id) a token of :func:`build_links` was made for, or None.

    ``secret_keys`` is ``Settings.secret_keys``: the current key and the old
    ones, so links already in inboxes keep working after the key is rotated.
    """
    payload = verify(secret_keys, MANAGE, token, now=now)
    if payload is None:
        return None
    email, sequence_id = payload.get("e"), payload.get("s")
    if not isinstance(email, str) or not isinstance(sequence_id, str):
        return None
    return email, sequence_id


class Composer:
    """Builds the complete RFC 5322 message for (sequence, step, subscriber)."""

    def __init__(
        self,
        library: Callable[[], TemplateLibrary],
        *,
        base_url: str,
        secret_key: str,
        postal_address: str,
        unsubscribe_mailbox: str | None = None,
    ) -> None:
        self.library = library
        self.base_url = base_url
        self.secret_key = secret_key
        self.postal_address = postal_address
        self.unsubscribe_mailbox = unsubscribe_mailbox

    def __call__(
        self, loaded: LoadedSequence, step: Step, subscriber: Subscriber, key: str, now: datetime
    ) -> ComposedEmail:
        sequence = loaded.sequence
        links = build_links(
            self.base_url,
            self.secret_key,
            subscriber.email,
            sequence.id,
            now=now,
            unsubscribe_mailbox=self.unsubscribe_mailbox,
        )
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
