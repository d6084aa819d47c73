"""The variables every template of one email sees, and the footer texts."""

from __future__ import annotations

from typing import Any

from nurture.core.model import Brand, Sequence, Step, localized
from nurture.core.rendering.brand import brand_context
from nurture.core.rendering.links import Links, offer_url
from nurture.core.subscriber import Subscriber
from nurture.errors import RenderError

FOOTER_STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "unsubscribe": "Unsubscribe",
        "preferences": "Email preferences",
        "reason": "You receive this email because you signed up for it.",
    },
    "sv": {
        "unsubscribe": "Avregistrera dig",
        "preferences": "E-postinställningar",
        "reason": "Du får det här mejlet eftersom du har anmält dig till det.",
    },
}
"""Footer texts by language, given to templates as ``t`` (``{{ t.unsubscribe }}``)."""


def footer_strings(locale: str, default_locale: str) -> dict[str, str]:
    """The footer texts in ``locale``'s language, else the sequence's, else English."""
    for tag in (locale, default_locale):
        strings = FOOTER_STRINGS.get(tag.replace("_", "-").split("-")[0].lower())
        if strings is not None:
            return strings
    return FOOTER_STRINGS["en"]


def template_context(
    sequence: Sequence,
    step: Step,
    subscriber: Subscriber,
    links: Links,
    postal_address: str,
    *,
    locale: str,
    project_brand: Brand | None = None,
) -> dict[str, Any]:
    """The variables of every template of one email (body, text part, subject).

    ``step.subject`` and ``step.preheader`` are added once they are rendered.
    ``brand`` is the sequence's brand over ``project_brand`` (``nurture.toml``).
    """
    offer = sequence.offer_step.offer
    if offer is None:
        raise RenderError(f"sequence {sequence.id!r} has no offer in its last step")
    sender = {
        "name": sequence.sender.name,
        "email": sequence.sender.email,
        "reply_to": sequence.sender.reply_to or sequence.sender.email,
    }
    return {
        "subscriber": subscriber.template_context(sequence.locale, sequence.timezone),
        "trigger": subscriber.trigger_context(),
        "sequence": {
            "id": sequence.id,
            "name": sequence.name,
            "description": sequence.description or "",
            "locale": sequence.locale,
            "sender": sender,
        },
        "step": {"id": step.id, "template": step.template, "is_offer": step.offer is not None},
        "offer": {
            "name": localized(offer.name, locale, sequence.locale),
            "price": offer.price,
            "description": offer.description or "",
            "checkout_url": offer.checkout_url,
            "url": links.offer(
                offer_url(offer.checkout_url, campaign=sequence.id, content=step.id)
            ),
        },
        "unsubscribe_url": links.unsubscribe_url,
        "preferences_url": links.preferences_url,
        "postal_address": postal_address,
        "sender": sender,
        "brand": brand_context(sequence.brand, project_brand, sequence.sender.name),
        "locale": locale,
        "t": footer_strings(locale, sequence.locale),
    }
