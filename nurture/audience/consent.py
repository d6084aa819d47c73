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

from nurture.audience.input import InvalidSubscriberError, check_text, given

__all__ = ["Consent"]


@dataclass(frozen=True)
class Consent:
    """Where an address came from (``source``), what was agreed to and from which IP."""

    source: str
    text: str | None
    ip: str | None

    @classmethod
    def parse(
        cls,
        source: str,
        text: str | None = None,
        ip: str | None = None,
        *,
        names: tuple[str, str] = ("consent source", "consent text"),
    ) -> Consent:
        """Check the consent fields; raises :class:`InvalidSubscriberError`
        naming the field as ``names`` say (the source's, the text's): the web
        form's words by default, the options' on the command line."""
        source_name, text_name = names
        source = source.strip()
        if not source:
            raise InvalidSubscriberError(
                f"{source_name} is empty (say where the address came from)"
            )
        wording = given(text)
        return cls(
            source=check_text(source_name, source, 100),
            text=check_text(text_name, wording, 2000, one_line=False) if wording else None,
            ip=_ip(ip),
        )

    def columns(self, at: datetime) -> dict[str, Any]:
        """The subscriber columns that record this consent, given ``at``."""
        return {
            "consent_at": at,
            "consent_source": self.source,
            "consent_text": self.text,
            "consent_ip": self.ip,
        }


IP_LIMIT = 45
"""The longest IP address written plainly (an IPv6 address with an IPv4 tail);
the column holds 64."""


def _ip(value: str | None) -> str | None:
    """An IP address as stored, or None; refused when it is not one.

    An IPv6 zone id (``fe80::1%eth0``) is refused: it names an interface of the
    machine that saw the address, says nothing about the person, and the
    standard library accepts any text after the ``%`` (controls, kilobytes).
    The refusal shows at most the start of the value, with controls escaped.
    """
    address = given(value)
    if address is None:
        return None
    shown = repr(address[:IP_LIMIT]) + ("…" if len(address) > IP_LIMIT else "")
    if "%" in address or len(address) > IP_LIMIT:
        raise InvalidSubscriberError(f"consent IP {shown} is not an IP address")
    try:
        return str(ipaddress.ip_address(address))
    except ValueError as exc:
        raise InvalidSubscriberError(f"consent IP {shown} is not an IP address") from exc
