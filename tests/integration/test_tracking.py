"""Click and open tracking end to end: a dispatched email's tracked links and
pixel, the events they record, and ``clicked()`` counting people only."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.engine import Engine

from nurture.app.runtime import Runtime, build_runtime
from nurture.app.settings import Settings
from nurture.audience.engagement import record_click
from nurture.audience.subscribers import add_subscriber
from nurture.core.rendering import ComposedEmail
from nurture.core.rendering.links import hrefs
from nurture.core.tokens import CLICK, MANAGE, read_ref, sign
from nurture.sending.composer import click_url
from nurture.store.db import session_factory
from nurture.store.tables import EventRow, SendRow
from nurture.testing import MemoryTransport
from nurture.web.app import create_app
from nurture.web.tracking import PIXEL

T0 = datetime(2026, 11, 27, 14, 30, tzinfo=UTC)
SECRET = "test-secret-not-a-placeholder"
BASE = "https://app.example.com"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
SCANNER = "Mozilla/5.0 (compatible; Barracuda Sentinel)"
EVENT = EventRow.__table__  # type: ignore[attr-defined]
SEND = SendRow.__table__  # type: ignore[attr-defined]
GUIDE = "https://example.com/guide"
PRICING = "https://example.com/pricing?plan=a&seats=2"
CHECKOUT = "https://shop.example.com/checkout?item=7"

SEQUENCE = f"""\
version: 1
id: track
name: Tracking
sender: {{name: Anna, email: anna@example.com}}
locale: en
timezone: Europe/Stockholm
trigger: {{event: subscribed}}
steps:
  - id: hello
    wait: 0
    subject: Hello
    template: hello.html
  - id: followup
    wait: 1 day
    when: "clicked('hello')"
    subject: More
    template: hello.html
  - id: offer
    wait: 1 day
    subject: Offer
    template: offer.html
    offer: {{name: Review, price: 100 kr, checkout_url: '{CHECKOUT}'}}
"""
LAYOUT = """<!doctype html><html><body>{% block content %}{% endblock %}
<p><a href="{{ unsubscribe_url }}">{{ t.unsubscribe }}</a>
<a href="{{ preferences_url }}">{{ t.preferences }}</a></p><p>{{ postal_address }}</p>
</body></html>"""
HELLO = """{% extends "layout.html" %}{% block content %}
<p>Read the <a href="https://example.com/guide">guide</a>, see
<a href="https://example.com/pricing?plan=a&amp;seats=2">prices</a>,
or <a href="mailto:anna@example.com">write</a>.</p>{% endblock %}"""
OFFER = """{% extends "layout.html" %}{% block content %}
<p><a href="{{ offer.url }}">Book</a></p>{% endblock %}"""


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Loop:
    runtime: Runtime
    transport: MemoryTransport
    clock: Clock
    client: TestClient

    def emails(self) -> list[ComposedEmail]:
        return [email.message for email in self.transport.sent]  # type: ignore[misc]

    def tracked(self, email: ComposedEmail) -> list[str]:
        return [href for href in hrefs(email.rendered.html) if href.startswith(f"{BASE}/c/")]

    def get(self, link: str, agent: str = FIREFOX, method: str = "GET") -> Any:
        return self.client.request(
            method, urlsplit(link).path, headers={"User-Agent": agent}, follow_redirects=False
        )

    def events(self) -> list[Any]:
        with self.runtime.engine.connect() as conn:
            return list(conn.execute(select(EVENT).order_by(EVENT.c.id)))

    def ledger(self) -> list[tuple[str, str, str]]:
        with self.runtime.engine.connect() as conn:
            rows = conn.execute(select(SEND.c.step_id, SEND.c.status, SEND.c.key))
            return [(row.step_id, row.status, row.key) for row in rows]


def make_loop(engine: Engine, tmp_path: Path, **overrides: object) -> Loop:
    (tmp_path / "sequences").mkdir(parents=True)
    (tmp_path / "sequences" / "track.yaml").write_text(SEQUENCE, encoding="utf-8")
    templates = tmp_path / "templates"
    (templates / "en").mkdir(parents=True)
    (templates / "layout.html").write_text(LAYOUT, encoding="utf-8")
    (templates / "en" / "hello.html").write_text(HELLO, encoding="utf-8")
    (templates / "en" / "offer.html").write_text(OFFER, encoding="utf-8")
    values: dict[str, Any] = {
        "sequences_dir": tmp_path / "sequences",
        "templates_dir": templates,
        "outbox_dir": tmp_path / "outbox",
        "secret_key": SECRET,
        "base_url": BASE,
        "rate_limit": 10_000.0,
        **overrides,
    }
    clock = Clock(T0)
    transport = MemoryTransport()
    runtime = build_runtime(
        Settings(**values), clock, transport=transport, engine=engine, migrate=False
    )
    with session_factory(engine)() as session:
        add_subscriber(
            session, email="karin@example.com", name="Karin", consent_source="test", now=T0,
            sequences=runtime.registry.sequences(),
        )  # fmt: skip
        session.commit()
    runtime.dispatcher.dispatch(T0)
    return Loop(runtime, transport, clock, TestClient(create_app(runtime)))


@pytest.fixture
def loop(engine: Engine, tmp_path: Path) -> Iterator[Loop]:
    made = make_loop(engine, tmp_path)
    yield made
    made.runtime.dispatcher.close()


def test_a_browser_click_redirects_to_the_original_url_and_counts(loop: Loop) -> None:
    [email] = loop.emails()
    html = email.rendered.html
    links = loop.tracked(email)
    assert len(links) == 2
    # Unsubscribe, preferences and mailto: are left as written (tel: and
    # #anchors too: see tests/unit/test_link_tracking.py; validation refuses them).
    untracked = [href for href in hrefs(html) if href not in links]
    assert untracked[0] == "mailto:anna@example.com"
    assert untracked[1].startswith(f"{BASE}/unsubscribe/")
    assert untracked[2].startswith(f"{BASE}/preferences/")
    assert len(untracked) == 3
    assert GUIDE not in html and "example.com/pricing" not in html
    # The text part (derived from the HTML) has the same tracked links.
    assert all(link in email.rendered.text for link in links)
    assert GUIDE not in email.rendered.text

    loop.clock.now = T0 + timedelta(hours=1)
    answer = loop.get(links[1])
    assert answer.status_code == 302
    assert answer.headers["location"] == PRICING
    [event] = loop.events()
    [(_, _, key)] = loop.ledger()
    with loop.runtime.engine.connect() as conn:
        send_id = conn.execute(select(SEND.c.id).where(SEND.c.key == key)).scalar_one()
    assert (event.kind, event.send_id, event.step_id, event.sequence_id) == (
        "clicked", send_id, "hello", "track",
    )  # fmt: skip
    assert event.machine is False
    assert event.user_agent == FIREFOX
    assert event.payload == {"url": PRICING, "method": "GET"}
    assert event.occurred_at == T0 + timedelta(hours=1)


def test_scanner_agents_head_requests_and_instant_clicks_are_machine(loop: Loop) -> None:
    guide, pricing = loop.tracked(loop.emails()[0])
    loop.clock.now = T0 + timedelta(seconds=3)  # delivery-time scanning
    assert loop.get(guide).status_code == 302
    loop.clock.now = T0 + timedelta(hours=1)
    assert loop.get(guide, agent=SCANNER).headers["location"] == GUIDE
    loop.clock.now = T0 + timedelta(hours=2)
    head = loop.get(pricing, method="HEAD")
    assert head.status_code == 302 and head.headers["location"] == PRICING
    loop.clock.now = T0 + timedelta(hours=3)
    assert loop.get(pricing, agent="").status_code == 302
    events = loop.events()
    assert [(e.machine, e.payload["method"]) for e in events] == [
        (True, "GET"), (True, "GET"), (True, "HEAD"), (True, "GET"),
    ]  # fmt: skip
    assert events[1].user_agent == SCANNER


def test_every_link_within_seconds_marks_the_whole_burst_machine(loop: Loop) -> None:
    guide, pricing = loop.tracked(loop.emails()[0])
    loop.clock.now = T0 + timedelta(hours=1)
    loop.get(guide)
    loop.clock.now += timedelta(seconds=1)
    loop.get(pricing)
    assert [e.machine for e in loop.events()] == [True, True]


def test_forged_and_garbled_tokens_get_404_and_record_nothing(loop: Loop) -> None:
    guide, _ = loop.tracked(loop.emails()[0])
    [(_, _, key)] = loop.ledger()
    loop.clock.now = T0 + timedelta(hours=1)
    token = guide.rsplit("/", 1)[1]
    # Not the last character: its low bits are padding, so changing them can
    # leave the decoded signature as it was.
    at = len(token) - 10
    flipped = token[:at] + ("A" if token[at] != "A" else "B") + token[at + 1 :]
    forged = [
        f"{BASE}/c/{flipped}",  # signature altered
        click_url(BASE, "someone-elses-secret", key, "https://evil.example/", now=T0),
        f"{BASE}/c/" + sign(SECRET, MANAGE, {"k": key, "u": "https://evil.example/"}, now=T0),
        f"{BASE}/c/" + sign(SECRET, CLICK, {"k": key, "u": "javascript:alert(1)"}, now=T0),
        f"{BASE}/c/not-a-token",
        f"{BASE}/c/" + "a" * 9000,
    ]
    for link in forged:
        answer = loop.get(link)
        assert answer.status_code == 404, link
        assert "location" not in answer.headers
    assert loop.events() == []


def test_clicked_in_a_when_counts_people_not_scanners(engine: Engine, tmp_path: Path) -> None:
    human = make_loop(engine, tmp_path / "human")
    guide, _ = human.tracked(human.emails()[0])
    human.clock.now = T0 + timedelta(hours=1)
    human.get(guide)
    human.runtime.dispatcher.dispatch(T0 + timedelta(days=1))
    assert [(step, status) for step, status, _ in human.ledger()] == [
        ("hello", "sent"), ("followup", "sent"),
    ]  # fmt: skip
    human.runtime.dispatcher.close()


def test_a_scanner_click_does_not_make_clicked_true(engine: Engine, tmp_path: Path) -> None:
    scanned = make_loop(engine, tmp_path / "scanned")
    guide, _ = scanned.tracked(scanned.emails()[0])
    scanned.clock.now = T0 + timedelta(hours=1)
    scanned.get(guide, agent=SCANNER)
    scanned.runtime.dispatcher.dispatch(T0 + timedelta(days=1))
    assert [(step, status) for step, status, _ in scanned.ledger()] == [
        ("hello", "sent"), ("followup", "skipped"),
    ]  # fmt: skip
    scanned.runtime.dispatcher.close()


def test_the_offer_link_is_tracked_and_keeps_utm_and_nurture_ref(loop: Loop) -> None:
    loop.runtime.dispatcher.dispatch(T0 + timedelta(days=1))
    loop.runtime.dispatcher.dispatch(T0 + timedelta(days=2))
    offer = loop.emails()[-1]
    [link] = loop.tracked(offer)
    loop.clock.now = T0 + timedelta(days=2, hours=1)
    target = loop.get(link).headers["location"]
    assert target.startswith(CHECKOUT + "&utm_source=nurture&utm_medium=email")
    query = parse_qs(urlsplit(target).query)
    assert query["utm_campaign"] == ["track"] and query["utm_content"] == ["offer"]
    offer_key = next(key for step, _, key in loop.ledger() if step == "offer")
    assert read_ref([SECRET], query["nurture_ref"][0], now=loop.clock.now) == offer_key


def test_without_click_tracking_links_are_sent_as_written(engine: Engine, tmp_path: Path) -> None:
    plain = make_loop(engine, tmp_path, track_clicks=False)
    [email] = plain.emails()
    assert plain.tracked(email) == []
    assert hrefs(email.rendered.html)[:2] == [GUIDE, PRICING]
    plain.runtime.dispatcher.close()


def test_the_open_pixel_records_opens_and_always_answers_the_gif(
    engine: Engine, tmp_path: Path
) -> None:
    loop = make_loop(engine, tmp_path, track_opens=True)
    html = loop.emails()[0].rendered.html
    start = html.index(f'<img src="{BASE}/o/') + len('<img src="')
    pixel = html[start : html.index('"', start)]
    loop.clock.now = T0 + timedelta(hours=1)
    for path, agent in (
        (urlsplit(pixel).path, FIREFOX),
        (urlsplit(pixel).path, "Mozilla/5.0 (via ggpht.com GoogleImageProxy)"),
        ("/o/garbage", FIREFOX),
        (urlsplit(pixel).path + "x", FIREFOX),
    ):
        answer = loop.client.get(path, headers={"User-Agent": agent})
        assert answer.status_code == 200
        assert answer.content == PIXEL and answer.headers["content-type"] == "image/gif"
        assert "no-store" in answer.headers["cache-control"]
    events = loop.events()
    assert [(e.kind, e.machine, e.step_id) for e in events] == [
        ("opened", False, "hello"), ("opened", True, "hello"),
    ]  # fmt: skip
    # A pixel token is no link, and a link's token is no pixel.
    assert loop.get(f"{BASE}/c/" + pixel.rsplit("/", 1)[1]).status_code == 404
    [link, _] = loop.tracked(loop.emails()[0])
    assert loop.client.get("/o/" + link.rsplit("/", 1)[1]).content == PIXEL
    assert len(loop.events()) == 2
    loop.runtime.dispatcher.close()


def test_a_scanner_following_every_link_at_once_is_caught(loop: Loop) -> None:
    """Concurrent clicks on one email are judged one after another, so the
    burst is seen however the requests interleave."""
    [(_, _, key)] = loop.ledger()
    urls = [f"https://example.com/page-{number}" for number in range(2)]
    start = threading.Barrier(len(urls))
    at = T0 + timedelta(hours=1)

    def click(url: str) -> None:
        start.wait()
        record_click(loop.runtime.engine, key, url, method="GET", user_agent=FIREFOX, now=at)

    threads = [threading.Thread(target=click, args=(url,)) for url in urls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    events = loop.events()
    assert sorted(e.payload["url"] for e in events) == urls
    assert all(e.machine for e in events)
