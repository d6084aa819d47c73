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
    "da": {
        "unsubscribe": "Afmeld",
        "preferences": "E-mailindstillinger",
        "reason": "Du modtager denne e-mail, fordi du har tilmeldt dig.",
    },
    "de": {
        "unsubscribe": "Abmelden",
        "preferences": "E-Mail-Einstellungen",
        "reason": "Sie erhalten diese E-Mail, weil Sie sich dafür angemeldet haben.",
    },
    "es": {
        "unsubscribe": "Cancelar suscripción",
        "preferences": "Preferencias de correo electrónico",
        "reason": "Recibes este correo electrónico porque te suscribiste para recibirlo.",
    },
    "fi": {
        "unsubscribe": "Peru tilaus",
        "preferences": "Sähköpostiasetukset",
        "reason": "Saat tämän sähköpostin, koska olet tilannut sen.",
    },
    "fr": {
        "unsubscribe": "Se désabonner",
        "preferences": "Préférences d’e-mail",
        "reason": "Vous recevez cet e-mail suite à votre inscription.",
    },
    "it": {
        "unsubscribe": "Annulla l’iscrizione",
        "preferences": "Preferenze email",
        "reason": "Ricevi questa email in seguito alla tua iscrizione.",
    },
    "nb": {
        "unsubscribe": "Meld deg av",
        "preferences": "E-postinnstillinger",
        "reason": "Du mottar denne e-posten fordi du har meldt deg på.",
    },
    "nn": {
        "unsubscribe": "Meld deg av",
        "preferences": "E-postinnstillingar",
        "reason": "Du får denne e-posten fordi du har meldt deg på.",
    },
    "nl": {
        "unsubscribe": "Afmelden",
        "preferences": "E-mailvoorkeuren",
        "reason": "Je ontvangt deze e-mail omdat je je hiervoor hebt aangemeld.",
    },
    "pl": {
        "unsubscribe": "Wypisz się",
        "preferences": "Ustawienia e-mail",
        "reason": "Otrzymujesz tę wiadomość, ponieważ zapisałeś(-aś) się na jej otrzymywanie.",
    },
    "pt": {
        "unsubscribe": "Cancelar subscrição",
        "preferences": "Preferências de e-mail",
        "reason": "Recebe este e-mail porque se inscreveu para o receber.",
    },
    "pt-BR": {
        "unsubscribe": "Cancelar inscrição",
        "preferences": "Preferências de e-mail",
        "reason": "Você está recebendo este e-mail porque se inscreveu para recebê-lo.",
    },
}
"""Footer texts by language, given to templates as ``t`` (``{{ t.unsubscribe }}``).

A key is a language (``de``), or a language in one region where its written
form differs (``pt-BR``); every other regional locale uses its language's.
"""

FOOTER_ALIASES: dict[str, str] = {"no": "nb"}
"""Languages written with another's texts: ``no`` (Norwegian) is Bokmål, ``nb``."""

FOOTER_LANGUAGE_NAMES: dict[str, str] = {
    "da": "Danish",
    "de": "German",
    "en": "English",
    "es": "Spanish",
    "fi": "Finnish",
    "fr": "French",
    "it": "Italian",
    "nb": "Norwegian",
    "nn": "Norwegian Nynorsk",
    "nl": "Dutch",
    "pl": "Polish",
    "pt": "Portuguese",
    "sv": "Swedish",
}
"""What ``nurture validate`` calls the language of a footer (the English name)."""

_BY_TAG = {tag.lower(): tag for tag in FOOTER_STRINGS}


def footer_language(locale: str) -> str | None:
    """The key of :data:`FOOTER_STRINGS` for ``locale`` (``de-AT`` → ``de``,
    ``pt_BR`` → ``pt-BR``, ``no`` → ``nb``), or None when its language has none."""
    tag = locale.strip().replace("_", "-").lower()
    language = tag.split("-")[0]
    for candidate in (tag, language, FOOTER_ALIASES.get(language, "")):
        if candidate in _BY_TAG:
            return _BY_TAG[candidate]
    return None


def footer_strings(locale: str, default_locale: str) -> dict[str, str]:
    """The footer texts in ``locale``'s language, else the sequence's, else English."""
    for tag in (locale, default_locale):
        language = footer_language(tag)
        if language is not None:
            return FOOTER_STRINGS[language]
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
