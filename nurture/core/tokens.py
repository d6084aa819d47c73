"""Signed tokens for links in emails (unsubscribe, preferences).

A link must let a subscriber act without logging in, yet nobody may forge one
for another address. The token is ``payload.signature`` where the signature is
HMAC-SHA256 over the payload with the site's secret key, compared in constant
time. Pure: the secret is an argument.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(secret: str, purpose: str, payload: dict[str, Any]) -> str:
    """A URL-safe token carrying ``payload``, valid only for ``purpose``."""
    body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode("utf-8"))
    mac = hmac.new(secret.encode("utf-8"), f"{purpose}.{body}".encode(), hashlib.sha256)
    return f"{body}.{_b64(mac.digest()[:18])}"


def verify(secret: str, purpose: str, token: str) -> dict[str, Any] | None:
    """The payload of a genuine token for ``purpose``, else None."""
    body, _, signature = token.partition(".")
    if not body or not signature:
        return None
    mac = hmac.new(secret.encode("utf-8"), f"{purpose}.{body}".encode(), hashlib.sha256)
    expected = _b64(mac.digest()[:18]).encode("ascii")
    if not hmac.compare_digest(expected, signature.encode("utf-8", "replace")):
        return None  # (bytes: a str with non-ASCII would raise instead)
    try:
        payload = json.loads(_unb64(body))
    except (ValueError, UnicodeDecodeError):
        return None
    return payload if isinstance(payload, dict) else None
