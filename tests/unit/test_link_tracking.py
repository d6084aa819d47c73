"""Rewriting an email's links through click tracking, and the offer's nurture_ref."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest

from nurture.core.rendering import Links, RenderedEmail, track, track_links
from nurture.core.rendering.links import hrefs, with_query
from nurture.core.rendering.placeholders import html_to_text
from nurture.core.tokens import CLICK, REF, verify
from nurture.sending.composer import click_url, offer_ref, pixel_url

NOW = datetime(2026, 11, 27, 14, 30, tzinfo=UTC)
SECRET = "test-secret-not-a-placeholder"
UNSUBSCRIBE = "https://app.example.com/unsubscribe/tok"
PREFERENCES = "https://app.example.com/preferences/tok"
HTML = (
    '<html><body><p><a href="https://example.com/guide">Guide</a> '
    '<a class="b" title="a > b" href="https://shop.example.com/r?a=1&amp;b=2#top">Buy</a> '
    '<a href="mailto:anna@example.com">Mail</a> <a href="tel:+46701234567">Call</a> '
    '<a href="#top">Top</a> <area href="https://example.com/map"></p>'
    f'<p><a href="{UNSUBSCRIBE}">Unsubscribe</a> <a href="{PREFERENCES}">Prefs</a></p>'
    "</body></html>"
)


def fake(url: str) -> str:
    return f"https://t.example/c/{len(url)}"


def test_http_links_are_tracked_and_the_rest_left_alone() -> None:
    html, text, made = track_links(HTML, html_to_text(HTML), fake, (UNSUBSCRIBE, PREFERENCES))
    assert set(made) == {
        "https://example.com/guide",
        "https://shop.example.com/r?a=1&b=2#top",
        "https://example.com/map",
    }
    assert hrefs(html) == [
        made["https://example.com/guide"],
        made["https://shop.example.com/r?a=1&b=2#top"],
        "mailto:anna@example.com",
        "tel:+46701234567",
        "#top",
        made["https://example.com/map"],
        UNSUBSCRIBE,
        PREFERENCES,
    ]
    # The text part derived from the HTML shows the same tracked URLs.
    assert "Guide (https://t.example/c/25)" in text
    assert "https://example.com/guide" not in text and "shop.example.com" not in text
    assert UNSUBSCRIBE in text


def test_a_url_in_text_is_replaced_only_where_it_stands_whole() -> None:
    html = '<a href="https://example.com/a">A</a>'
    text = "See https://example.com/a, or https://example.com/a/b and https://example.com/a.html"
    _, out, _ = track_links(html, text, lambda url: "T", ())
    assert out == "See T, or https://example.com/a/b and https://example.com/a.html"


def test_track_adds_the_pixel_at_the_end_of_the_body() -> None:
    email = RenderedEmail("s", "", HTML, "text", {})
    tracked = track(email, tracked=None, untracked=(), pixel_url="https://t.example/o/x")
    pixel = (
        '<img src="https://t.example/o/x" width="1" height="1" alt="" '
        'style="display:block;width:1px;height:1px;border:0">'
    )
    assert tracked.html.endswith(pixel + "</body></html>")
    assert hrefs(tracked.html) == hrefs(HTML)  # links untouched without click tracking
    assert track(email, tracked=None, untracked=()) is email


def test_click_and_pixel_tokens_name_the_send_and_target() -> None:
    url = "https://shop.example.com/r?a=1&b=2"
    link = click_url("https://app.example.com/", SECRET, "k1", url, now=NOW)
    assert link.startswith("https://app.example.com/c/")
    payload = verify([SECRET], CLICK, link.rsplit("/", 1)[1], now=NOW)
    assert payload == {"k": "k1", "u": url}
    pixel = pixel_url("https://app.example.com", SECRET, "k1", now=NOW)
    assert verify([SECRET], CLICK, pixel.rsplit("/", 1)[1], now=NOW) == {"k": "k1", "o": 1}


def test_the_offer_link_carries_a_signed_nurture_ref_after_the_utm_parameters() -> None:
    ref = offer_ref(SECRET, "k1", now=NOW)
    links = Links(UNSUBSCRIBE, PREFERENCES, offer_ref=ref)
    url = links.offer("https://shop.example.com/r?utm_source=nurture#pay")
    parts = urlsplit(url)
    assert parts.fragment == "pay"
    query = parse_qs(parts.query)
    assert query["utm_source"] == ["nurture"]
    assert verify([SECRET], REF, query["nurture_ref"][0], now=NOW) == {"k": "k1"}
    assert Links(UNSUBSCRIBE, PREFERENCES).offer("https://x.example/") == "https://x.example/"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://a.se/c", "https://a.se/c?nurture_ref=t.1"),
        ("https://a.se/c?", "https://a.se/c?nurture_ref=t.1"),
        ("https://a.se/c?x=%20y&z", "https://a.se/c?x=%20y&z&nurture_ref=t.1"),
        (
            "https://a.se/c?utm_source=nurture#top",
            "https://a.se/c?utm_source=nurture&nurture_ref=t.1#top",
        ),
        ("https://a.se/c#nurtureslot", "https://a.se/c?nurture_ref=t.1#nurtureslot"),
        (
            "https://a.se/nurtureslot?q=nurtureslot",
            "https://a.se/nurtureslot?q=nurtureslot&nurture_ref=t.1",
        ),
    ],
)
def test_the_ref_is_added_to_the_query_before_the_fragment(url: str, expected: str) -> None:
    assert with_query(url, "nurture_ref", "t.1") == expected
    # the same URL again (from the cache) with another value
    assert with_query(url, "nurture_ref", "a b") == expected.replace("t.1", "a+b")
