"""The footer texts every email carries, in the languages a small business writes in."""

from __future__ import annotations

import pytest

from nurture.core.rendering import footer_language
from nurture.core.rendering.context import FOOTER_LANGUAGE_NAMES, FOOTER_STRINGS, footer_strings

SHIPPED = ("en", "sv", "de", "fr", "es", "it", "nl", "pt", "pt-BR", "da", "nb", "nn", "fi", "pl")


def test_every_common_language_has_footer_texts() -> None:
    assert set(SHIPPED) <= set(FOOTER_STRINGS)


@pytest.mark.parametrize("language", sorted(FOOTER_STRINGS))
def test_every_language_has_every_footer_text(language: str) -> None:
    strings = FOOTER_STRINGS[language]
    assert set(strings) == set(FOOTER_STRINGS["en"])
    assert all(text.strip() == text and text for text in strings.values())
    assert strings["reason"].endswith(".")
    assert language.split("-")[0] in FOOTER_LANGUAGE_NAMES  # what validate calls it
    if language != "en":  # translated, not copied
        assert not set(strings.values()) & set(FOOTER_STRINGS["en"].values())


@pytest.mark.parametrize(
    ("locale", "language"),
    [
        ("de", "de"), ("de-AT", "de"), ("de_CH", "de"), ("DE-de", "de"), ("en-GB", "en"),
        ("fr-CA", "fr"), ("es-MX", "es"), ("nl-BE", "nl"), ("pt-PT", "pt"), ("pt_br", "pt-BR"),
        ("pt-BR", "pt-BR"), ("no", "nb"), ("nb-NO", "nb"), ("no_NO", "nb"), ("fi-FI", "fi"),
        ("nn-NO", "nn"), ("sv-FI", "sv"), ("da-DK", "da"), ("it-CH", "it"), ("pl-PL", "pl"),
    ],
)  # fmt: skip
def test_a_regional_locale_gets_its_language(locale: str, language: str) -> None:
    assert footer_language(locale) == language
    assert footer_strings(locale, "sv") is FOOTER_STRINGS[language]


def test_a_language_without_texts_falls_back_to_the_sequence_then_english() -> None:
    assert footer_language("cs") is None and footer_language("") is None
    assert footer_strings("cs-CZ", "de") is FOOTER_STRINGS["de"]
    assert footer_strings("cs", "is") is FOOTER_STRINGS["en"]


def test_the_german_footer_keeps_the_legal_meaning() -> None:
    assert FOOTER_STRINGS["de"] == {
        "unsubscribe": "Abmelden",
        "preferences": "E-Mail-Einstellungen",
        "reason": "Sie erhalten diese E-Mail, weil Sie sich dafür angemeldet haben.",
    }
