"""Checking that an Event Webhook post comes from SendGrid: the signature over
the timestamp header followed by the raw body (ECDSA P-256, SHA-256), made with
the key pair whose public half SendGrid shows under Mail Settings.

The official library's :class:`~sendgrid.helpers.eventwebhook.EventWebhook`
does the cryptography; this wrapper makes every way a post can be malformed (no
header, a signature that is not base64 or not DER, a timestamp that is not a
number, a body that is not UTF-8, a stale timestamp) the same answer: not
verified. Nothing here raises for what a client sends.
"""

from __future__ import annotations

import binascii
import logging
from datetime import datetime
from typing import Any

from sendgrid.helpers.eventwebhook import EventWebhook

__all__ = ["SIGNATURE_HEADER", "TIMESTAMP_HEADER", "SignatureVerifier"]

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

_MAX_HEADER = 512
"""A P-256 DER signature is at most 72 bytes (96 in base64); a timestamp ten digits."""

log = logging.getLogger("nurture.transports.sendgrid_signature")


class SignatureVerifier:
    """Verifies posts against one public key (base64 DER, as SendGrid shows it)."""

    def __init__(self, public_key: str) -> None:
        """Raises :class:`ValueError` when ``public_key`` is not a P-256 public key."""
        self._webhook = EventWebhook()
        text = "".join(public_key.split())
        try:
            binascii.a2b_base64(text.encode("ascii"))
            self._key: Any = self._webhook.convert_public_key_to_ecdsa(text)
        except Exception as exc:  # the library raises whatever its parser raises
            raise ValueError("sendgrid_webhook_public_key is not a base64 DER public key") from exc

    def verify(
        self,
        body: bytes,
        signature: str | None,
        timestamp: str | None,
        *,
        now: datetime,
        max_age: float = 0.0,
    ) -> bool:
        """Whether ``signature`` signs ``timestamp`` + ``body`` (the raw bytes),
        and, with ``max_age`` > 0, ``timestamp`` is within ``max_age`` seconds of
        ``now`` (either way: a clock ahead of ours is as suspect as a replay)."""
        if not signature or not timestamp:
            return False
        if len(signature) > _MAX_HEADER or len(timestamp) > _MAX_HEADER:
            return False
        if not (timestamp.isascii() and timestamp.isdigit()):
            return False
        # In integers: a timestamp of 309 or more digits does not fit a float.
        if max_age > 0 and abs(int(now.timestamp()) - int(timestamp)) > max_age:
            return False
        try:
            # Strictly base64: the library's decoder would skip stray characters.
            binascii.a2b_base64(signature.encode("ascii"), strict_mode=True)
            payload = body.decode("utf-8")
        except (ValueError, UnicodeError):
            return False
        try:
            return bool(self._webhook.verify_signature(payload, signature, timestamp, self._key))
        except Exception:  # a signature that is not DER, a curve mismatch ...
            log.debug("SendGrid signature could not be checked", exc_info=True)
            return False
