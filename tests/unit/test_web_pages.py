"""Subscriber pages: the language they speak, a project's overrides, CSRF tokens."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient

from nurture.app.clock import FixedClock
from nurture.app.runtime import build_runtime
from nurture.store.db import make_engine
from nurture.testing import MemoryTransport
from nurture.web import signup
from nurture.web.pages import CSRF_MAX_AGE, Pages
from tests.factories import example_workdir

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
SHIPPED = ("en", "sv", "da", "de", "es", "fi", "fr", "it", "nb", "nl", "pl", "pt")


def test_the_subscribers_locale_wins_then_the_browsers_then_english() -> None:
    pages = Pages(None, ["k"])
    assert pages.language("sv-SE", accept_language="en") == "sv"
    assert pages.language("cs-CZ", accept_language="cs, sv;q=0.8, en;q=0.5") == "sv"
    assert pages.language(None, accept_language="cs, en;q=0.1, sv;q=0.9") == "sv"
    assert pages.language(None, accept_language="cs, ja") == "en"
    assert pages.language(None, accept_language="sv;q=0") == "en"


def test_a_regional_or_norwegian_tag_uses_its_languages_catalog() -> None:
    pages = Pages(None, ["k"])
    assert pages.language("de-AT") == "de"
    assert pages.language("pt_BR") == "pt"
    assert pages.language(None, accept_language="pt-BR,pt;q=0.9,en;q=0.5") == "pt"
    assert pages.language(None, accept_language="fr-CH, en;q=0.5") == "fr"
    # Norwegian (no) is written in Bokmål (nb), as for the email footers.
    assert pages.language("no") == "nb"
    assert pages.language(None, accept_language="no-NO,no;q=0.9,en;q=0.5") == "nb"
    assert pages.language(None, accept_language="nb-NO,nb;q=0.9") == "nb"


def test_pages_escape_and_speak_the_language(tmp_path: Path) -> None:
    pages = Pages(tmp_path, ["k"])
    swedish = pages.render("invalid_link.html", language="sv").body.decode()
    assert 'lang="sv"' in swedish and "Länken fungerar inte" in swedish
    english = pages.render("invalid_link.html", language="en").body.decode()
    assert "This link does not work" in english


def test_a_project_overrides_words_and_pages_and_adds_a_language(tmp_path: Path) -> None:
    web = tmp_path / "web"
    web.mkdir()
    (web / "messages.sv.json").write_text('{"page_not_found": "Hoppsan"}', encoding="utf-8")
    (web / "messages.cs.json").write_text('{"page_not_found": "Neplatný odkaz"}', encoding="utf-8")
    pages = Pages(tmp_path, ["k"])
    assert "Hoppsan" in pages.render("invalid_link.html", language="sv").body.decode()
    czech = pages.render("invalid_link.html", language=pages.language("cs"))
    assert "Neplatný odkaz" in czech.body.decode()
    # a key the override lacks falls back to English
    assert "The link may be incomplete" in czech.body.decode()
    (web / "invalid_link.html").write_text(
        "<p>{{ t.page_not_found }} {{ name }}</p>", encoding="utf-8"
    )
    custom = Pages(tmp_path, ["k"]).render("invalid_link.html", language="en", name="<b>x</b>")
    assert custom.body.decode() == "<p>This link does not work &lt;b&gt;x&lt;/b&gt;</p>"


def test_every_shipped_language_has_every_word() -> None:
    """A key added to one catalog only would show English on a Swedish page."""
    catalogs = Pages(None, ["k"]).catalogs
    assert set(SHIPPED) <= set(catalogs)
    english = set(catalogs["en"])
    for language, words in catalogs.items():
        assert set(words) == english, (language, sorted(set(words) ^ english))


# What a value may carry that must come through translation unchanged: a
# format field ({name}, {0}), a printf one (%s, %(name)s), Jinja ({{ x }},
# {% if %}), an HTML tag or entity.
PLACEHOLDER = re.compile(
    r"\{\{.*?\}\}|\{%.*?%\}|\{[^{}\s]*\}|%(?:\([^)]*\))?[#0+-]*\d*(?:\.\d+)?[sdifr%]"
    r"|</?[A-Za-z][^<>]*>|&[#A-Za-z0-9]+;"
)


def placeholders(text: str) -> list[str]:
    return sorted(PLACEHOLDER.findall(text))


def test_every_language_keeps_the_english_placeholders_and_markup() -> None:
    assert placeholders("Hi {name}, <b>%s</b> {{ x }}") == sorted(
        ["{name}", "<b>", "%s", "</b>", "{{ x }}"]
    )
    catalogs = Pages(None, ["k"]).catalogs
    english = catalogs["en"]
    for language, words in catalogs.items():
        for key, value in words.items():
            assert placeholders(value) == placeholders(english[key]), (language, key, value)


def test_a_german_visitor_gets_the_german_hosted_form(tmp_path: Path) -> None:
    settings = example_workdir(tmp_path)
    runtime = build_runtime(
        settings, FixedClock(NOW), transport=MemoryTransport(),
        engine=make_engine("sqlite://"), migrate=False,
    )  # fmt: skip
    app = FastAPI()
    app.include_router(signup.routes(runtime))
    page = TestClient(app).get(
        "/subscribe/newsletter", headers={"Accept-Language": "de-DE,de;q=0.9"}
    )
    assert page.status_code == 200
    german = Pages(None, ["k"]).words("de")
    assert '<html lang="de">' in page.text
    assert 'name="locale" value="de"' in page.text
    for key in ("signup_title", "signup_email", "signup_consent", "signup_button"):
        assert german[key] in page.text, key
    assert "E-Mail-Adresse" in page.text and "Abonnieren" in page.text
    assert "Email address" not in page.text


def test_a_confirm_link_page_has_one_button_and_a_bad_one_a_way_forward() -> None:
    pages = Pages(None, ["k"])
    for language, button in (("en", "Confirm my subscription"), ("sv", "Bekräfta min")):
        page = pages.render("confirm.html", language=language, email="a@example.com")
        html = page.body.decode()
        assert html.count("<button") == 1 and button in html
        assert '<form method="post">' in html and "a@example.com" in html
        bad = pages.render(
            "invalid_link.html", language=language, signup_url="https://x.example/subscribe/f"
        ).body.decode()
        assert '<a href="https://x.example/subscribe/f">' in bad
    # The other pages' bad links (unsubscribe, preferences) offer no sign-up.
    assert "<a " not in pages.render("invalid_link.html", language="en").body.decode()


def test_a_csrf_token_is_bound_to_its_form_and_expires() -> None:
    pages = Pages(None, ["key-1"])
    token = pages.csrf_token("prefs:7", now=NOW)
    assert pages.csrf_ok("prefs:7", token, now=NOW + timedelta(minutes=5))
    assert not pages.csrf_ok("prefs:8", token, now=NOW)
    assert not pages.csrf_ok("prefs:7", token, now=NOW + CSRF_MAX_AGE + timedelta(seconds=1))
    at = len(token) - 10  # inside the signature, whose last character is partly padding
    altered = token[:at] + ("A" if token[at] != "A" else "B") + token[at + 1 :]
    assert not pages.csrf_ok("prefs:7", altered, now=NOW)
    assert not pages.csrf_ok("prefs:7", None, now=NOW)
    assert not Pages(None, ["other"]).csrf_ok("prefs:7", token, now=NOW)
