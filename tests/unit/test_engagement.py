"""The machine-traffic heuristic: scanners, proxies, HEAD, speed and bursts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from nurture.core.engagement import EarlierClick, Hit, judge

SENT = datetime(2026, 11, 27, 14, 30, tzinfo=UTC)
LATER = SENT + timedelta(hours=2)
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1"
)
CUBOT = "Mozilla/5.0 (Linux; Android 9; CUBOT P30) AppleWebKit/537.36 Chrome/120.0 Mobile Safari"


def click(agent: str = FIREFOX, *, method: str = "GET", at: datetime = LATER) -> Hit:
    return Hit("click", method, agent, at, SENT, "https://example.com/a")


@pytest.mark.parametrize("agent", [FIREFOX, IPHONE, CUBOT])
def test_a_browser_click_hours_after_sending_is_a_person(agent: str) -> None:
    verdict = judge(click(agent))
    assert not verdict.machine and verdict.reason is None


@pytest.mark.parametrize(
    "agent",
    [
        "",
        "   ",
        "Barracuda Sentinel (EE)",
        "Mozilla/5.0 (compatible; Proofpoint URL Defense)",
        "Mimecast-URL-Protect/1.0",
        "Mozilla/5.0 (Windows NT 10.0) Microsoft Office/16.0 SafeLinks",
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "python-requests/2.32.3",
        "curl/8.5.0",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 HeadlessChrome/120.0",
    ],
)
def test_scanner_agents_are_machines(agent: str) -> None:
    verdict = judge(click(agent))
    assert verdict.machine and verdict.reason


def test_image_proxies_are_machines_for_opens_only_where_it_matters() -> None:
    gmail = (
        "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
    )
    assert judge(Hit("open", "GET", gmail, LATER, SENT)).machine
    # Apple Mail Privacy Protection's bare agent: a proxy for a pixel...
    assert judge(Hit("open", "GET", "Mozilla/5.0", LATER, SENT)).machine
    # ...and an open from a real mail client is a person's.
    assert not judge(Hit("open", "GET", IPHONE, LATER, SENT)).machine


def test_a_head_request_is_a_machine() -> None:
    assert judge(click(method="HEAD")).reason == "HEAD request"
    assert not judge(click(method="GET")).machine


def test_a_click_within_seconds_of_sending_is_a_machine() -> None:
    assert judge(click(at=SENT + timedelta(seconds=4))).machine
    assert not judge(click(at=SENT + timedelta(minutes=3))).machine
    # A send not yet confirmed (no sent_at): the email is just going out.
    unsent = Hit("click", "GET", FIREFOX, SENT, None, "https://example.com/a")
    assert judge(unsent).reason == "before the send was confirmed"


def test_different_links_of_one_email_within_seconds_are_all_machine() -> None:
    earlier = [EarlierClick(7, LATER - timedelta(seconds=1), "https://example.com/b")]
    verdict = judge(click(), earlier)
    assert verdict.machine
    assert verdict.also_machine == (7,)


def test_the_same_link_twice_or_links_minutes_apart_are_a_person() -> None:
    double = [EarlierClick(7, LATER - timedelta(seconds=1), "https://example.com/a")]
    assert judge(click(), double) == judge(click())
    apart = [EarlierClick(8, LATER - timedelta(minutes=2), "https://example.com/b")]
    verdict = judge(click(), apart)
    assert not verdict.machine and verdict.also_machine == ()
