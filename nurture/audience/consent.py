"""The record of an opt-in: :class:`Consent`.

**Consent is recorded once**, when an address is first added: that opt-in is
the evidence (when, where from, the wording agreed to, the IP it came from).
Re-adding an address keeps it, and only fills it in for a row that has none.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from nurture.audience.input import InvalidSubscriberError, check_length, given

__all__ = ["Consent"]


@dataclass(frozen=True)
class Consent:
    """Where an address came from (``source``), what was agreed to and from which IP."""

    source: str
    text: str | None
    ip: str | None

    @classmethod
    def parse(cls, source: str, text: str | None = None, ip: str | None = None) -> Consent:
        """Check the consent fields; raises :class:`InvalidSubscriberError` naming the field."""
        source = source.strip()
        if not source:
            raise InvalidSubscriberError(
                "consent source is empty (say where the address came from)"
            )
        address = given(ip)
        if address is not None:
            try:
                address = str(ipaddress.ip_address(address))
            except ValueError as exc:
                raise InvalidSubscriberError(
                    f"consent IP {address!r} is not an IP address"
                ) from exc
        wording = given(text)
        return cls(
            source=check_length("consent source", source, 100),
            text=check_length("consent text", wording, 2000) if wording else None,
            ip=address,
        )

    def columns(self, at: datetime) -> dict[str, Any]:
        """The subscriber columns that record this consent, given ``at``."""
        return {
            "consent_at": at,
            "consent_source": self.source,
            "consent_text": self.text,
            "consent_ip": self.ip,
        }
