"""Signed tokens for links in emails (unsubscribe, preferences, confirmations).

A link must let a subscriber act without logging in, yet nobody may forge one
for another address. Tokens are itsdangerous' URL-safe timed serializer: a JSON
payload, the time it was signed, and an HMAC-SHA256 over both.

- A *purpose* is the itsdangerous salt, so a token made for one kind of link
  never opens another (a preferences token is no confirmation token).
- *Keys*: the first one signs; every one verifies. Rotating the secret means
  putting the new key first and keeping the old one listed until the links
  signed with it have aged out of inboxes.
- The time is an argument (pure core: no clock here), used when signing and,
  with ``max_age``, when verifying.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from itsdangerous import BadData, TimestampSigner, URLSafeTimedSerializer
from itsdangerous.encoding import base64_encode, int_to_bytes

MANAGE = "nurture.manage"
"""Unsubscribe and preferences links: one token serves both pages (each only
lets the holder manage that one subscription), so an email is signed once."""

CONFIRM = "nurture.confirm"
"""Confirmation links (double opt-in): verify these with a ``max_age``."""

CLICK = "nurture.click"
"""Tracked links (``/c/{token}``) and the open pixel (``/o/{token}``): the
payload names the send (``k``: the ledger's ``send.key``) and, for a link, the
target URL (``u``), so only URLs that were in that email can be targets."""

REF = "nurture.ref"
"""``nurture_ref`` on the offer link: ``{"k": send.key}``, so a checkout can
report a purchase back and it is credited to the send that earned it."""

API_CSRF = "nurture.csrf"
"""CSRF tokens of the subscriber-facing HTML forms."""

ADMIN_SESSION = "nurture.admin.session"
"""The ``/admin`` session cookie: ``{"u": admin id, "s": when it logged in}``."""

ADMIN_CSRF = "nurture.admin.csrf"
"""CSRF tokens of the admin pages' forms, bound to one session (the login
form's to nothing: it has no session yet)."""

# What dumps() produces: URL-safe base64 pieces joined by dots. Checked first
# because the base64 decoder skips characters outside its alphabet, so a
# genuine token with "é" or "!" added would otherwise still verify.
_TOKEN = re.compile(r"[A-Za-z0-9_\-.]+")


class _SignerAt(TimestampSigner):
    """A TimestampSigner whose "now" is given, not read from the system clock."""

    def __init__(self, *args: Any, now: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._now = now

    def get_timestamp(self) -> int:
        return self._now


def _serializer(keys: Sequence[str] | str, purpose: str, now: datetime) -> URLSafeTimedSerializer:
    ordered = [keys] if isinstance(keys, str) else list(keys)
    if not ordered:
        raise ValueError("at least one secret key is needed to sign or verify a token")
    # itsdangerous signs with the *last* key and tries the newest first; ours
    # are listed newest first (secret_key, then old_secret_keys), hence reversed.
    return URLSafeTimedSerializer(
        list(reversed(ordered)),
        salt=purpose,
        signer=_SignerAt,
        signer_kwargs={"now": int(now.timestamp()), "digest_method": hashlib.sha256},
    )


class _CachedKeySigner(TimestampSigner):
    """A TimestampSigner that derives its key once (itsdangerous derives it on
    every signature: an HMAC per email on the dispatcher's hot path)."""

    _derived: bytes | None = None

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        if secret_key is not None:
            return super().derive_key(secret_key)
        if self._derived is None:
            self._derived = super().derive_key()
        return self._derived


@lru_cache(maxsize=64)
def _signer(key: str, purpose: str) -> _CachedKeySigner:
    return _CachedKeySigner(key, salt=purpose, digest_method=hashlib.sha256)


def sign(keys: Sequence[str] | str, purpose: str, payload: dict[str, Any], *, now: datetime) -> str:
    """A URL-safe token carrying ``payload``, valid only for ``purpose``.

    Signed with the first of ``keys`` at ``now`` (an aware datetime). The
    token is exactly what ``URLSafeTimedSerializer.dumps`` makes (without its
    optional compression, which these short payloads never gain from), built
    here with a signer cached per key and purpose: every email is signed, and
    building the serializer and deriving the key each time cost ten times the
    signature itself.
    """
    key = keys if isinstance(keys, str) else next(iter(keys), None)
    if key is None:
        raise ValueError("at least one secret key is needed to sign or verify a token")
    body = base64_encode(json.dumps(payload, separators=(",", ":")).encode("utf-8"))
    value = body + b"." + base64_encode(int_to_bytes(int(now.timestamp())))
    return (value + b"." + _signer(key, purpose).get_signature(value)).decode("ascii")


def verify(
    keys: Sequence[str] | str,
    purpose: str,
    token: str,
    *,
    now: datetime,
    max_age: timedelta | None = None,
) -> dict[str, Any] | None:
    """The payload of a genuine token for ``purpose`` signed with any of ``keys``.

    None for anything else: a forged, altered or malformed token, another
    purpose, an unknown key, or (with ``max_age``) a token signed longer ago than
    ``max_age`` before ``now`` or after ``now``. Never raises for a bad token: it
    comes from a URL anyone can type.
    """
    seconds = None if max_age is None else int(max_age.total_seconds())
    if not _TOKEN.fullmatch(token):
        return None
    try:
        payload = _serializer(keys, purpose, now).loads(token, max_age=seconds)
    except BadData:  # every itsdangerous failure: signature, timestamp, payload
        return None
    return payload if isinstance(payload, dict) else None


def read_ref(keys: Sequence[str], ref: str, *, now: datetime) -> str | None:
    """The send key a ``nurture_ref`` (purpose :data:`REF`) was made for, or
    None for anything else."""
    payload = verify(keys, REF, ref, now=now)
    key = None if payload is None else payload.get("k")
    return key if isinstance(key, str) else None
