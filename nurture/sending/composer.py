"""Turning a decided step into the email to send: links, rendering, headers.

Shell code (it knows the site's base URL and secret); the rendering itself is
the pure core's :class:`TemplateLibrary`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from functools import lru_cache
from urllib.parse import quote

from nurture.core.loader import LoadedSequence
from nurture.core.model import Step
from nurture.core.rendering import ComposedEmail, Links, TemplateLibrary, ascii_address, track
from nurture.core.subscriber import Subscriber
from nurture.core.tokens import CLICK, MANAGE, REF, sign, verify
from nurture.errors import RenderError


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


def click_url(base_url: str, secret_key: str, key: str, url: str, *, now: datetime) -> str:
    """The tracked form of ``url`` in the email of send ``key``: ``/c/{token}``,
    whose signed token names the send and the target (no open redirect)."""
    token = sign(secret_key, CLICK, {"k": key, "u": url}, now=now)
    return f"{base_url.rstrip('/')}/c/{token}"


def pixel_url(base_url: str, secret_key: str, key: str, *, now: datetime) -> str:
    """The open-tracking pixel of send ``key``: ``/o/{token}``."""
    token = sign(secret_key, CLICK, {"k": key, "o": 1}, now=now)
    return f"{base_url.rstrip('/')}/o/{token}"


def offer_ref(secret_key: str, key: str, *, now: datetime) -> str:
    """The ``nurture_ref`` of send ``key``'s offer link (read by
    :func:`nurture.core.tokens.read_ref`)."""
    return sign(secret_key, REF, {"k": key}, now=now)


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
        track_clicks: bool = False,
        track_opens: bool = False,
    ) -> None:
        """``track_clicks`` sends the email's links through ``/c/{token}`` and
        ``track_opens`` adds the pixel (the runtime passes the settings; a
        preview leaves both off, so it shows the links as written). The offer
        link carries its ``nurture_ref`` either way."""
        self.library = library
        self.track_clicks = track_clicks
        self.track_opens = track_opens
        self.base_url = base_url
        self.secret_key = secret_key
        self.postal_address = postal_address
        self.unsubscribe_mailbox = unsubscribe_mailbox

    def without_tracking(self) -> Composer:
        """The same composer with click tracking and the open pixel off: what
        an admin's re-rendering of a sent email uses, so viewing it records
        no click or open."""
        return Composer(
            self.library,
            base_url=self.base_url,
            secret_key=self.secret_key,
            postal_address=self.postal_address,
            unsubscribe_mailbox=self.unsubscribe_mailbox,
        )

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
        links = replace(links, offer_ref=offer_ref(self.secret_key, key, now=now))
        rendered = self.library().render(sequence, step, subscriber, links, self.postal_address)
        if self.track_clicks or self.track_opens:
            rendered = track(
                rendered,
                tracked=self._tracked(key, now) if self.track_clicks else None,
                untracked=(links.unsubscribe_url, links.preferences_url),
                pixel_url=(
                    pixel_url(self.base_url, self.secret_key, key, now=now)
                    if self.track_opens
                    else None
                ),
            )
        # The Message-ID is written as it is, 7-bit: a Unicode domain in A-labels.
        domain = ascii_address(sequence.sender.email, utf8=True).rpartition("@")[2]
        composed = ComposedEmail(
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
        # Refused here, the email fails as unrenderable; a transport writing
        # the bytes would raise inside the provider call instead, which reads
        # as "outcome unknown" though nothing left the machine.
        problem = composed.unicode_problem()
        if problem is not None:
            raise RenderError(problem)
        return composed

    def _tracked(self, key: str, now: datetime) -> Callable[[str], str]:
        base_url, secret_key = self.base_url, self.secret_key
        return lambda url: click_url(base_url, secret_key, key, url, now=now)
