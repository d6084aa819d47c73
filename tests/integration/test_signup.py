"""Sign-up with double opt-in over HTTP: the hosted form, POST /subscribe, /confirm.

Every test drives the real app (``create_app``) over a runtime on the example
sequences (``sales-process`` starts on the tag ``b2b``), with the memory
transport, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import email
import email.policy
import json
import logging
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from nurture.app.clock import FixedClock
from nurture.app.runtime import Runtime, build_runtime
from nurture.audience.subscribers import get_subscriber, subscriber_enrollments
from nurture.core import tokens
from nurture.core.model import Brand
from nurture.core.vocabulary import SubscriberStatus
from nurture.errors import TransientSendError
from nurture.store.db import session_factory
from nurture.store.sendlog import SendFilter, with_confirmations
from nurture.store.tables import SubscriberRow, SuppressionRow
from nurture.testing import FakeSendGrid, MemoryTransport
from nurture.transports.sendgrid import SendGridTransport
from nurture.web.app import create_app
from nurture.web.signup import RATE, TIMEZONE_SCRIPT
from tests.factories import example_workdir

NOW = datetime(2026, 11, 27, 14, 30, tzinfo=UTC)
CLIENT = ("203.0.113.7", 50000)
AGENT = "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0"
CONSENT_EN = (
    "By subscribing you agree to receive our emails. You can unsubscribe at any time "
    "with the link in every email."
)
CHECK_INBOX = "Check your inbox"
CONFIRM_BUTTON = "Confirm my subscription"
CONFIRMED = "Your subscription is confirmed."
PROMISE = "Our first email is on its way."
SCANNER = "Mozilla/5.0 (compatible; Barracuda Sentinel)"


@dataclass
class Site:
    runtime: Runtime
    clock: FixedClock
    transport: MemoryTransport
    client: TestClient
    engine: Engine

    def session(self) -> Session:
        return session_factory(self.engine)()

    def subscriber(self, email: str) -> SubscriberRow | None:
        with self.session() as session:
            return get_subscriber(session, email)

    def enrolled_in(self, email: str) -> list[str]:
        with self.session() as session:
            row = get_subscriber(session, email)
            assert row is not None
            return [e.sequence_id for e in subscriber_enrollments(session, row)]

    def set_status(self, email: str, status: SubscriberStatus) -> None:
        with self.session() as session:
            row = get_subscriber(session, email)
            assert row is not None
            row.status = status
            session.commit()

    def post_form(self, **fields: Any) -> Any:
        return self.client.post("/subscribe", data=fields, headers={"User-Agent": AGENT})


@pytest.fixture
def site(engine: Engine, tmp_path: Path) -> Iterator[Site]:
    clock = FixedClock(NOW)
    transport = MemoryTransport()
    settings = example_workdir(tmp_path)
    settings.base_url = "https://news.example.com"
    runtime = build_runtime(settings, clock, transport=transport, engine=engine, migrate=False)
    with TestClient(create_app(runtime), client=CLIENT) as client:
        yield Site(runtime, clock, transport, client, engine)


def _link(site: Site, index: int = -1) -> str:
    """The confirm link of a confirmation email (the path), from its text part."""
    message = site.transport.sent[index].as_message()
    text = message.get_body(preferencelist=("plain",))
    assert text is not None
    found = re.search(r"https://news\.example\.com(/confirm/[A-Za-z0-9_.\-]+)", text.get_content())
    assert found is not None, text.get_content()
    return found.group(1)


def _click(site: Site, link: str, **kwargs: Any) -> Any:
    """Follow a confirm link as a person does: open the page, press its one
    button (a form posting to the page's own address). The page's answer when
    it has no button (already confirmed, a bad link)."""
    page = site.client.get(link, **kwargs)
    if page.status_code != 200 or CONFIRM_BUTTON not in page.text:
        return page
    form = re.search(r"<form ([^>]*)>(.*?)</form>", _main(page.text), re.S)
    assert form is not None, page.text
    assert 'method="post"' in form.group(1) and "action=" not in form.group(1)
    assert CONFIRM_BUTTON in form.group(2)
    return site.client.post(link, **kwargs)


def logged_for(site: Site, email: str) -> list[dict[str, Any]]:
    """What ``nurture log --email`` lists for ``email``, newest first."""
    with site.engine.connect() as conn:
        return with_confirmations(conn, SendFilter(email=email), limit=50)


def _main(html: str) -> str:
    """The page's <main> (what differs between answers would be there)."""
    return html.split("<main>", 1)[1].split("</main>", 1)[0]


# --------------------------------------------------------------------------- the happy path


def test_a_form_sign_up_is_unconfirmed_with_its_consent_until_the_emailed_link_confirms_it(
    site: Site,
) -> None:
    page = site.client.get("/subscribe/newsletter?tag=b2b")
    assert page.status_code == 200
    assert CONSENT_EN in page.text
    assert 'name="website"' in page.text  # the honeypot
    assert 'value="b2b"' in page.text and 'value="newsletter"' in page.text
    # The one inline script is allowed by its hash, nothing else is.
    assert TIMEZONE_SCRIPT in page.text
    assert "script-src 'sha256-" in page.headers["content-security-policy"]

    answer = site.post_form(
        email=" Karin@Example.com ", name="Karin", tags="b2b", timezone="Europe/Stockholm",
        locale="en", form="newsletter", website="",
    )  # fmt: skip
    assert answer.status_code == 200
    assert CHECK_INBOX in answer.text

    row = site.subscriber("karin@example.com")
    assert row is not None
    assert row.status == SubscriberStatus.UNCONFIRMED
    assert row.timezone == "Europe/Stockholm"
    assert row.tags == ["b2b"]
    assert row.consent_at == NOW
    assert row.consent_form == "newsletter"
    assert row.consent_source == "form:newsletter"
    assert row.consent_ip == "203.0.113.7"
    assert row.consent_user_agent == AGENT
    assert row.consent_text == CONSENT_EN
    assert site.enrolled_in("karin@example.com") == []

    [sent] = site.transport.sent
    assert sent.to_email == "karin@example.com"
    message = sent.as_message()
    assert message["Subject"] == "Please confirm your subscription"
    assert message["From"].addresses[0].addr_spec == "anna@example.com"
    html = message.get_body(preferencelist=("html",))
    assert html is not None and "/confirm/" in html.get_content()
    # In the send log (`nurture log`), as signup/confirmation.
    [logged] = logged_for(site, "karin@example.com")
    assert (logged["status"], logged["sequence_id"], logged["step_id"]) == (
        "sent", "signup", "confirmation",
    )  # fmt: skip
    assert logged["provider_message_id"] == message["Message-ID"]

    confirmed = _click(site, _link(site))
    assert confirmed.status_code == 200
    assert f"{CONFIRMED} {PROMISE}" in confirmed.text  # sales-process has started
    row = site.subscriber("karin@example.com")
    assert row is not None and row.status == SubscriberStatus.ACTIVE
    assert site.enrolled_in("karin@example.com") == ["sales-process"]

    # Twice is harmless: the link shows the confirmed page, without a button;
    # posting again enrolls nobody twice.
    again = site.client.get(_link(site))
    assert again.status_code == 200
    assert CONFIRMED in again.text and CONFIRM_BUTTON not in again.text
    assert site.client.post(_link(site)).status_code == 200
    assert site.enrolled_in("karin@example.com") == ["sales-process"]


def test_a_link_scanner_following_the_confirm_link_confirms_nothing(site: Site) -> None:
    """Corporate mail scanners follow every link of an email: a GET that
    confirmed let anyone sign a company address up. The link shows one button."""
    site.post_form(email="karin@example.com", tags="b2b", form="newsletter")
    link = _link(site)
    for method in ("GET", "HEAD", "GET"):
        seen = site.client.request(method, link, headers={"User-Agent": SCANNER})
        assert seen.status_code == 200, method
    page = site.client.get(link, headers={"User-Agent": SCANNER})
    assert CONFIRM_BUTTON in page.text and "karin@example.com" in page.text
    assert _main(page.text).count("<button") == 1
    assert _title(page.text) == "Confirm your subscription – Exempel AB"
    row = site.subscriber("karin@example.com")
    assert row is not None and row.status == SubscriberStatus.UNCONFIRMED
    assert site.enrolled_in("karin@example.com") == []

    confirmed = _click(site, link)  # the person presses the button
    assert confirmed.status_code == 200 and PROMISE in confirmed.text
    row = site.subscriber("karin@example.com")
    assert row is not None and row.status == SubscriberStatus.ACTIVE
    assert site.enrolled_in("karin@example.com") == ["sales-process"]


def test_a_confirmation_that_starts_no_sequence_promises_no_email_and_warns(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    """The page said "Our first email is on its way" while the log said, at
    INFO, "enrolled in nothing": a form that feeds no sequence went unnoticed."""
    site.post_form(email="ola@example.com", tags="webinar", form="newsletter")
    with caplog.at_level(logging.INFO, logger="nurture.web.signup"):
        page = _click(site, _link(site))
    assert page.status_code == 200
    assert CONFIRMED in page.text and PROMISE not in page.text
    assert _title(page.text).startswith("Thank you!")
    row = site.subscriber("ola@example.com")
    assert row is not None and row.status == SubscriberStatus.ACTIVE
    assert site.enrolled_in("ola@example.com") == []
    [warning] = [r for r in caplog.records if r.name == "nurture.web.signup" and "confirmed" in
                 r.getMessage()]  # fmt: skip
    assert warning.levelno == logging.WARNING
    assert "form newsletter" in warning.getMessage() and "webinar" in warning.getMessage()

    # A sign-up that starts a sequence is told so, and logged at INFO.
    caplog.clear()
    site.post_form(email="karin@example.com", tags="b2b", form="newsletter")
    with caplog.at_level(logging.INFO, logger="nurture.web.signup"):
        assert PROMISE in _click(site, _link(site)).text
    assert [r.levelno for r in caplog.records if "confirmed" in r.getMessage()] == [logging.INFO]


def test_json_sign_up_keeps_tags_and_attributes_and_says_check_your_inbox(site: Site) -> None:
    answer = site.client.post(
        "/subscribe",
        json={
            "email": "jamie@example.com", "name": "Jamie", "tags": ["B2B", "lead"],
            "attributes": {"company": "Acme"}, "timezone": "America/New_York", "locale": "en-US",
            "form": "pricing-page", "consent_text": "Yes, email me about Acme.",
        },
    )  # fmt: skip
    assert answer.status_code == 202
    assert answer.json()["status"] == "check_inbox"
    row = site.subscriber("jamie@example.com")
    assert row is not None
    assert (row.tags, row.attributes) == (["b2b", "lead"], {"company": "Acme"})
    assert (row.locale, row.consent_form) == ("en-US", "pricing-page")
    assert row.consent_text == "Yes, email me about Acme."
    assert len(site.transport.sent) == 1


# An encoded word in a display name: email's header folding (CPython before
# 3.11.10, CVE-2024-6923) decoded it into a raw CR LF, and so a visitor's name
# added headers and body text to the confirmation email.
HOSTILE_NAMES = [
    "=?utf-8?q?x=0D=0AReply-To:_attacker@evil.example=0D=0A=0D=0AClick_https://evil.example?=",
    "=?utf-8?b?eA0KQmNjOiBhdHRhY2tlckBldmlsLmV4YW1wbGUNCg0KZXZpbA==?=",
    "Anna =?iso-8859-1?q?x=0ABcc:_attacker@evil.example?= Berg",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_name_never_adds_a_header_or_body_text_to_the_confirmation_email(
    site: Site, name: str
) -> None:
    answer = site.client.post("/subscribe", json={"email": "victim@example.org", "name": name})
    assert answer.status_code == 202
    [sent] = site.transport.sent
    raw = sent.raw_bytes()
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert str(message["Reply-To"]) == "anna@example.com"  # the sequence's, not the visitor's
    assert message["Bcc"] is None
    parts = [part.get_content_type() for part in message.iter_parts()]
    assert parts == ["text/plain", "text/html"]  # no body of the name's making
    [to] = message["To"].addresses
    assert to.addr_spec == "victim@example.org"
    assert to.display_name == ""  # the bare address: nothing the visitor typed
    for part in message.iter_parts():
        assert "attacker" not in part.get_content() and "evil" not in part.get_content()
    assert {k.lower() for k in message} == {
        "subject", "from", "to", "reply-to", "date", "message-id", "auto-submitted",
        "mime-version", "content-type",
    }  # fmt: skip


def test_the_confirmation_email_writes_a_unicode_domain_in_idna(site: Site) -> None:
    answer = site.client.post("/subscribe", json={"email": "anna@exämple.se", "name": "Anna"})
    assert answer.status_code == 202
    raw = site.transport.sent[0].raw_bytes()
    assert b"To: anna@xn--exmple-cua.se\r\n" in raw


def test_a_unicode_sender_domain_is_in_idna_in_from_and_message_id(
    engine: Engine, tmp_path: Path
) -> None:
    settings = example_workdir(tmp_path)
    settings.base_url = "https://news.example.com"
    sequence = settings.sequences_dir / "sales-process.yaml"
    text = sequence.read_text("utf-8")
    assert "  email: anna@example.com\n" in text
    sequence.write_text(text.replace("anna@example.com", "anna@bergdesign-ö.se"), "utf-8")
    transport = MemoryTransport()
    runtime = build_runtime(
        settings, FixedClock(NOW), transport=transport, engine=engine, migrate=False
    )
    with TestClient(create_app(runtime), client=CLIENT) as client:
        answer = client.post("/subscribe", json={"email": "karin@example.se"})
    assert answer.status_code == 202
    message = email.message_from_bytes(transport.sent[0].raw_bytes(), policy=email.policy.default)
    assert message["From"].addresses[0].domain == "xn--bergdesign--1fb.se"
    message_id = str(message["Message-ID"])
    assert message_id.isascii()
    assert message_id.endswith("@xn--bergdesign--1fb.se>"), message_id
    assert not message.defects


def test_a_sign_up_waiting_on_its_email_does_not_hold_up_other_requests(
    engine: Engine, tmp_path: Path
) -> None:
    """The sign-up's database work and its confirmation email run off the
    event loop: while one waits (for the provider, or for SQLite's lock),
    every other request is answered."""
    sending, release = threading.Event(), threading.Event()

    def slow(_email: object) -> None:
        sending.set()
        release.wait(30)

    settings = example_workdir(tmp_path)
    settings.base_url = "https://news.example.com"
    transport = MemoryTransport(hook=slow)
    runtime = build_runtime(
        settings, FixedClock(NOW), transport=transport, engine=engine, migrate=False
    )
    answers: list[int] = []
    with TestClient(create_app(runtime), client=CLIENT) as client:
        signing_up = threading.Thread(
            target=lambda: answers.append(
                client.post("/subscribe", json={"email": "karin@example.se"}).status_code
            )
        )
        signing_up.start()
        try:
            assert sending.wait(30)
            assert client.get("/healthz").status_code in (200, 503)
            assert client.get("/subscribe/default").status_code == 200
            # Both answered while the sign-up still waits on its email.
            assert signing_up.is_alive() and answers == []
        finally:
            release.set()
            signing_up.join(30)
    assert answers == [202]
    assert len(transport.sent) == 1


def test_the_confirmation_email_carries_nothing_the_visitor_typed_but_the_address(
    site: Site,
) -> None:
    """The address is not confirmed yet: a name such as "You won! Claim at
    https://..." would make the form send anyone a stranger's text from our
    domain (confirmation spam). The greeting is the plain one."""
    name = "You won 1000 EUR claim at https://prize.example"
    answer = site.client.post("/subscribe", json={"email": "victim@example.org", "name": name})
    assert answer.status_code == 202
    [sent] = site.transport.sent
    raw = sent.raw_bytes()
    assert b"prize" not in raw and b"EUR" not in raw
    message = email.message_from_bytes(raw, policy=email.policy.default)
    text = message.get_body(("plain",))
    assert text is not None and text.get_content().startswith("Hello,")
    # The name is kept for the subscriber's own emails once confirmed.
    row = site.subscriber("victim@example.org")
    assert row is not None and row.name == name


# --------------------------------------------------------------------------- bad links


def test_an_expired_or_tampered_or_foreign_token_changes_nothing(site: Site) -> None:
    site.post_form(email="ola@example.com", tags="b2b", form="newsletter")
    link = _link(site)
    token = link.rsplit("/", 1)[1]
    row = site.subscriber("ola@example.com")
    assert row is not None

    at = len(token) - 10  # inside the signature, whose last character is partly padding
    tampered = token[:at] + ("A" if token[at] != "A" else "B") + token[at + 1 :]
    manage = tokens.sign(
        site.runtime.settings.secret_keys, tokens.MANAGE, {"s": row.id, "e": row.email}, now=NOW
    )
    other_key = tokens.sign("another-key", tokens.CONFIRM, {"s": row.id, "e": row.email}, now=NOW)
    wrong_address = tokens.sign(
        site.runtime.settings.secret_keys, tokens.CONFIRM, {"s": row.id, "e": "x@example.com"},
        now=NOW,
    )  # fmt: skip
    # Signed, yet no id a row can have: 10**30 was a 500, True was subscriber #1.
    odd_ids = [
        tokens.sign(site.runtime.settings.secret_keys, tokens.CONFIRM, {"s": s, "e": row.email},
                    now=NOW)
        for s in (10**30, True, -1, 0, 2**63)
    ]  # fmt: skip
    for bad in (tampered, manage, other_key, wrong_address, "garbage", "a" * 300, *odd_ids):
        for method in ("GET", "POST"):
            answer = site.client.request(method, f"/confirm/{bad}")
            assert answer.status_code == 404, (method, bad)
            assert "This link does not work" in answer.text

    site.clock.instant = NOW + timedelta(seconds=site.runtime.settings.confirm_token_max_age + 60)
    assert site.client.get(link).status_code == 404
    assert site.client.post(link).status_code == 404
    row = site.subscriber("ola@example.com")
    assert row is not None and row.status == SubscriberStatus.UNCONFIRMED
    assert site.enrolled_in("ola@example.com") == []


def test_a_bad_confirm_link_offers_signing_up_again(site: Site) -> None:
    """It was a dead end: "This link does not work", nothing more."""
    site.post_form(email="ola@example.com", tags="b2b", form="newsletter")
    link = _link(site)
    garbage = site.client.get("/confirm/garbage")
    assert garbage.status_code == 404
    assert 'href="https://news.example.com/subscribe/default"' in garbage.text
    assert "sign up again" in garbage.text.lower()
    swedish = site.client.post("/confirm/garbage", headers={"Accept-Language": "sv"})
    assert swedish.status_code == 404 and "Anmäl dig igen" in swedish.text

    # An expired link of ours names its form: the page offers that one.
    site.clock.instant = NOW + timedelta(seconds=site.runtime.settings.confirm_token_max_age + 60)
    for method in ("GET", "POST"):
        expired = site.client.request(method, link)
        assert expired.status_code == 404, method
        assert "This link does not work" in expired.text
        assert 'href="https://news.example.com/subscribe/newsletter"' in expired.text
    row = site.subscriber("ola@example.com")
    assert row is not None and row.status == SubscriberStatus.UNCONFIRMED

    # And the way forward works: the form sends a new link, which confirms.
    assert site.client.get("/subscribe/newsletter").status_code == 200
    site.post_form(email="ola@example.com", form="newsletter")
    assert len(site.transport.sent) == 2
    assert PROMISE in _click(site, _link(site)).text
    assert site.enrolled_in("ola@example.com") == ["sales-process"]


def test_an_old_confirm_link_does_not_reactivate_an_unsubscribed_address(site: Site) -> None:
    site.post_form(email="ola@example.com", tags="b2b", form="newsletter")
    site.set_status("ola@example.com", SubscriberStatus.UNSUBSCRIBED)
    assert site.client.get(_link(site)).status_code == 404
    answer = site.client.post(_link(site))
    assert answer.status_code == 404
    row = site.subscriber("ola@example.com")
    assert row is not None and row.status == SubscriberStatus.UNSUBSCRIBED
    assert site.enrolled_in("ola@example.com") == []


# --------------------------------------------------------------------------- bad input


def test_json_errors_come_back_per_field_and_nothing_is_stored(site: Site) -> None:
    answer = site.client.post(
        "/subscribe",
        json={"email": "not an address", "timezone": "Mars/Olympus", "tags": 5, "form": "a b"},
    )
    assert answer.status_code == 422
    errors = answer.json()["errors"]
    assert set(errors) == {"email", "timezone", "tags", "form"}
    assert "invalid email address" in errors["email"]
    assert "Mars/Olympus" in errors["timezone"]

    for body, content_type in (
        (b"{not json", "application/json"),
        (b"[1, 2]", "application/json"),
        (b'{"email": ["a@example.com"]}', "application/json"),
        (b"[" * 5000, "application/json"),
    ):
        bad = site.client.post("/subscribe", content=body, headers={"Content-Type": content_type})
        assert bad.status_code == 422, body[:20]
    with site.session() as session:
        assert session.exec(select(SubscriberRow)).all() == []
    assert site.transport.sent == []


LONE = "\ud800"  # a lone surrogate: valid JSON (\\ud800), not encodable as UTF-8


@pytest.mark.parametrize(
    "fields",
    [
        {"name": f"Ann{LONE}"},
        {"consent_text": f"Yes{LONE}"},
        {"tags": [f"b2b{LONE}"]},
        {"attributes": {f"company{LONE}": "Acme"}},
        {"attributes": {"company": f"Acme{LONE}"}},
        {"attributes": {"notes": [f"x{LONE}"]}},
        {"form": f"pricing{LONE}"},
        {"timezone": f"Europe/Stockholm{LONE}"},
        {"locale": f"sv{LONE}"},
        {"email": f"ann{LONE}@example.com"},
    ],
    ids=lambda fields: next(iter(fields)),
)
def test_a_lone_surrogate_in_any_field_is_a_422_and_nothing_is_stored(
    site: Site, fields: dict[str, Any]
) -> None:
    body = json.dumps({"email": "ann@example.com", **fields})  # as \\ud800: ASCII
    answer = site.client.post(
        "/subscribe", content=body.encode("ascii"), headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 422, answer.text
    assert site.subscriber("ann@example.com") is None
    assert site.transport.sent == []


def test_an_html_form_with_errors_is_shown_again_with_the_messages(site: Site) -> None:
    answer = site.post_form(email="karin@", name="Karin", form="newsletter", tags="b2b")
    assert answer.status_code == 422
    assert "Enter a valid email address" in answer.text
    assert 'aria-invalid="true"' in answer.text
    assert 'value="Karin"' in answer.text  # what was typed is kept
    assert 'value="newsletter"' in answer.text
    assert site.subscriber("karin@example.com") is None
    assert site.transport.sent == []


def test_a_hidden_zone_the_server_does_not_know_is_dropped_not_shown(site: Site) -> None:
    answer = site.post_form(email="karin@example.com", timezone="Not/AZone", form="newsletter")
    assert answer.status_code == 200
    row = site.subscriber("karin@example.com")
    assert row is not None and row.timezone is None


def test_an_oversized_body_is_refused_with_413_and_nothing_is_stored(site: Site) -> None:
    answer = site.post_form(email="karin@example.com", name="x" * 70_000)
    assert answer.status_code == 413
    assert site.subscriber("karin@example.com") is None


def test_an_unknown_content_type_is_refused(site: Site) -> None:
    answer = site.client.post(
        "/subscribe", content=b"email=a@example.com", headers={"Content-Type": "text/plain"}
    )
    assert answer.status_code == 415
    assert site.subscriber("a@example.com") is None


# --------------------------------------------------------------------------- bots and abuse


def test_a_filled_honeypot_gets_the_usual_answer_and_stores_nothing(site: Site) -> None:
    real = site.post_form(email="karin@example.com", form="newsletter")
    bot = site.post_form(email="bot@example.com", form="newsletter", website="http://spam")
    assert bot.status_code == real.status_code == 200
    assert _main(bot.text) == _main(real.text)
    assert site.subscriber("bot@example.com") is None
    assert [e.to_email for e in site.transport.sent] == ["karin@example.com"]


def test_a_client_address_is_rate_limited_with_retry_after(site: Site) -> None:
    for number in range(RATE):
        assert site.post_form(email=f"p{number}@example.com").status_code == 200
    refused = site.post_form(email="one-more@example.com")
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert site.subscriber("one-more@example.com") is None
    as_json = site.client.post("/subscribe", json={"email": "one-more@example.com"})
    assert as_json.status_code == 429

    # Another client is not held back, and the bucket refills with time.
    other = TestClient(create_app(site.runtime), client=("198.51.100.1", 1))
    assert other.post("/subscribe", data={"email": "else@example.com"}).status_code == 200
    site.clock.instant = NOW + timedelta(minutes=1)
    assert site.post_form(email="one-more@example.com").status_code == 200


def test_the_answer_never_tells_whether_an_address_was_known(site: Site) -> None:
    visitors = iter(range(1, 100))

    def both(email: str) -> tuple[str, Any]:
        # Each from its own address, clear of the rate limit.
        client = TestClient(create_app(site.runtime), client=(f"198.51.100.{next(visitors)}", 1))
        html = client.post("/subscribe", data={"email": email, "form": "newsletter"})
        data = client.post("/subscribe", json={"email": email, "form": "newsletter"})
        assert (html.status_code, data.status_code) == (200, 202)
        return _main(html.text), data.json()

    new = both("new@example.com")
    unconfirmed = both("new@example.com")  # asked again, not confirmed yet
    site.post_form(email="active@example.com")
    assert CONFIRMED in _click(site, _link(site)).text
    active = both("active@example.com")
    site.post_form(email="gone@example.com")
    site.set_status("gone@example.com", SubscriberStatus.UNSUBSCRIBED)
    unsubscribed = both("gone@example.com")
    with site.session() as session:
        session.add(SuppressionRow(email="blocked@example.com", reason="complaint", created_at=NOW))
        session.commit()
    suppressed = both("blocked@example.com")
    assert new == unconfirmed == active == unsubscribed == suppressed
    assert site.subscriber("blocked@example.com") is None
    # The new addresses were emailed once each (no resend within minutes), and
    # the one who left was asked to come back (test_signup_join.py); the active
    # one, on a form with no tags they lack, was asked nothing.
    assert [e.to_email for e in site.transport.sent] == [
        "new@example.com", "active@example.com", "gone@example.com", "gone@example.com",
    ]  # fmt: skip


def test_an_unconfirmed_address_is_sent_its_link_again_only_after_a_few_minutes(
    site: Site,
) -> None:
    site.post_form(email="karin@example.com", name="Karin")
    site.post_form(email="karin@example.com", name="Someone else")
    assert len(site.transport.sent) == 1
    row = site.subscriber("karin@example.com")
    assert row is not None and row.name == "Karin"  # an anonymous post changes nothing
    site.clock.instant = NOW + timedelta(minutes=6)
    site.post_form(email="karin@example.com")
    assert len(site.transport.sent) == 2
    assert CONFIRMED in _click(site, _link(site, 0)).text  # the first link still works


def test_a_transport_failure_keeps_the_sign_up_and_is_logged(site: Site) -> None:
    site.transport.fail_next(TransientSendError("provider down", status=503))
    answer = site.post_form(email="karin@example.com", form="newsletter")
    assert answer.status_code == 200 and CHECK_INBOX in answer.text
    row = site.subscriber("karin@example.com")
    assert row is not None and row.status == SubscriberStatus.UNCONFIRMED
    [logged] = logged_for(site, "karin@example.com")
    assert (logged["status"], logged["reason"]) == ("failed", "TransientSendError")
    # Asking again sends it (a failed attempt does not count against the resend limit).
    site.post_form(email="karin@example.com", form="newsletter")
    assert [e.to_email for e in site.transport.sent] == ["karin@example.com"]


# --------------------------------------------------------------------------- language


def test_a_swedish_visitor_gets_a_swedish_form_answer_and_email(site: Site) -> None:
    headers = {"Accept-Language": "sv-SE,sv;q=0.9,en;q=0.5"}
    page = site.client.get("/subscribe/nyhetsbrev", headers=headers)
    assert page.status_code == 200
    assert '<html lang="sv">' in page.text
    assert "Prenumerera" in page.text and "E-postadress" in page.text
    assert 'name="locale" value="sv"' in page.text

    answer = site.client.post(
        "/subscribe", data={"email": "karin@example.com", "locale": "sv"}, headers=headers
    )
    assert "Titta i din inkorg" in answer.text
    message = site.transport.sent[0].as_message()
    assert message["Subject"] == "Bekräfta din prenumeration"
    row = site.subscriber("karin@example.com")
    assert row is not None and row.consent_text is not None
    assert row.consent_text.startswith("Genom att prenumerera")

    wrong = site.client.post("/subscribe", data={"email": "nope", "locale": "sv"}, headers=headers)
    assert wrong.status_code == 422 and "Ange en giltig e-postadress" in wrong.text


def test_a_bad_form_id_in_the_url_is_not_found(site: Site) -> None:
    assert site.client.get("/subscribe/no%20spaces").status_code == 404
    assert site.client.get(f"/subscribe/{'x' * 51}").status_code == 404


def test_a_confirm_link_of_a_since_suppressed_address_changes_nothing(site: Site) -> None:
    site.post_form(email="ola@example.com", tags="b2b")
    with site.session() as session:
        session.add(SuppressionRow(email="ola@example.com", reason="complaint", created_at=NOW))
        session.commit()
    assert site.client.get(_link(site)).status_code == 404
    assert site.client.post(_link(site)).status_code == 404
    row = site.subscriber("ola@example.com")
    assert row is not None and row.status == SubscriberStatus.UNCONFIRMED
    assert site.enrolled_in("ola@example.com") == []


def test_the_thank_you_page_speaks_the_subscribers_language(site: Site) -> None:
    site.client.post("/subscribe", data={"email": "karin@example.com", "locale": "sv-SE"})
    button = site.client.get(_link(site), headers={"Accept-Language": "en"})
    assert button.status_code == 200 and '<html lang="sv">' in button.text
    assert "Bekräfta min prenumeration" in button.text
    page = site.client.post(_link(site), headers={"Accept-Language": "en"})
    assert page.status_code == 200
    assert "Din prenumeration är bekräftad" in page.text


def _title(html: str) -> str:
    found = re.search(r"<title>(.*?)</title>", html, re.S)
    assert found is not None, html
    return found.group(1).strip()


def test_the_pages_go_by_the_business_name_never_the_tools(site: Site) -> None:
    """Without ``[brand]`` in nurture.toml the sign-up pages were titled
    "Subscribe – nurture": a subscriber saw the tool's name, not the
    business's. They go by the brand of the sequence a sign-up hears from
    (the example's "Exempel AB"), as the confirmation email goes by its
    sender."""
    assert site.runtime.settings.brand is None
    form = site.client.get("/subscribe/newsletter?tag=b2b")
    assert _title(form.text) == "Subscribe – Exempel AB"
    assert '<p class="brand">Exempel AB</p>' in form.text  # above "Subscribe": whose list
    answer = site.post_form(email="karin@example.com", tags="b2b")
    assert _title(answer.text) == "Check your inbox – Exempel AB"
    button = site.client.get(_link(site))
    assert _title(button.text) == "Confirm your subscription – Exempel AB"
    assert '<p class="brand">Exempel AB</p>' in button.text
    confirmed = site.client.post(_link(site))
    assert _title(confirmed.text) == "Thank you! – Exempel AB"
    pages = (form, answer, button, confirmed)
    assert all("nurture" not in _title(page.text) for page in pages)


def test_the_projects_brand_name_wins_and_no_sequence_leaves_the_title_bare(
    engine: Engine, tmp_path: Path
) -> None:
    settings = example_workdir(tmp_path)
    settings.brand = Brand(name="Lindqvist Verkstad")
    runtime = build_runtime(
        settings, FixedClock(NOW), transport=MemoryTransport(), engine=engine, migrate=False
    )
    with TestClient(create_app(runtime), client=CLIENT) as client:
        assert _title(client.get("/subscribe/newsletter").text) == "Subscribe – Lindqvist Verkstad"
    for file in settings.sequences_dir.glob("*.yaml"):
        file.unlink()
    bare = build_runtime(
        settings.model_copy(update={"brand": None}),
        FixedClock(NOW),
        transport=MemoryTransport(),
        engine=engine,
        migrate=False,
    )
    with TestClient(create_app(bare), client=CLIENT) as client:
        assert _title(client.get("/subscribe/newsletter").text) == "Subscribe"


def test_a_project_overrides_the_form_and_its_words(site: Site) -> None:
    web = site.runtime.settings.templates_dir / "web"
    web.mkdir()
    (web / "signup_form.html").write_text(
        '{% extends "base.html" %}{% block content %}<h1>Our own form</h1>'
        "<p>{{ t.signup_consent }}</p>{% endblock %}",
        encoding="utf-8",
    )
    (web / "messages.en.json").write_text('{"signup_consent": "Our own wording."}')
    site = Site(
        site.runtime, site.clock, site.transport,
        TestClient(create_app(site.runtime), client=CLIENT), site.engine,
    )  # fmt: skip
    page = site.client.get("/subscribe/newsletter")
    assert "Our own form" in page.text and "Our own wording." in page.text
    site.post_form(email="karin@example.com")
    row = site.subscriber("karin@example.com")
    assert row is not None and row.consent_text == "Our own wording."


def test_a_form_without_a_locale_takes_the_browsers_language(site: Site) -> None:
    """An embedded snippet has no hidden locale: the answer, the confirmation
    email and the subscriber's locale follow Accept-Language."""
    headers = {"Accept-Language": "sv-SE,sv;q=0.9,en;q=0.5"}
    answer = site.client.post("/subscribe", data={"email": "karin@example.com"}, headers=headers)
    assert "Titta i din inkorg" in answer.text
    assert site.transport.sent[0].as_message()["Subject"] == "Bekräfta din prenumeration"
    row = site.subscriber("karin@example.com")
    assert row is not None and row.locale == "sv"


# --------------------------------------------------------------------------- through SendGrid


def test_the_confirmation_email_goes_out_through_sendgrid_and_its_link_confirms(
    engine: Engine, tmp_path: Path
) -> None:
    """The confirmation is not list mail: it has no List-Unsubscribe, which the
    SendGrid transport insists on for sequence emails. It must still be sent
    (it was refused as permanent before, while the form said "check your inbox")."""
    settings = example_workdir(tmp_path)
    settings.base_url = "https://news.example.com"
    with FakeSendGrid(api_key="SG.fake-key") as fake:
        transport = SendGridTransport("SG.fake-key", host=fake.url, timeout=5.0)
        runtime = build_runtime(
            settings, FixedClock(NOW), transport=transport, engine=engine, migrate=False
        )
        with TestClient(create_app(runtime), client=CLIENT) as client:
            answer = client.post("/subscribe", data={"email": "karin@example.com", "tag": "b2b"})
            assert answer.status_code == 200 and CHECK_INBOX in answer.text
            (body,) = fake.delivered
            assert body["personalizations"][0]["to"][0]["email"] == "karin@example.com"
            assert "List-Unsubscribe" not in (body.get("headers") or {})
            text = next(c["value"] for c in body["content"] if c["type"] == "text/plain")
            found = re.search(r"https://news\.example\.com(/confirm/[A-Za-z0-9_.\-]+)", text)
            assert found is not None, text
            assert CONFIRM_BUTTON in client.get(found.group(1)).text
            assert client.post(found.group(1)).status_code == 200
        transport.close()
    with session_factory(engine)() as session:
        row = get_subscriber(session, "karin@example.com")
        assert row is not None and row.status == SubscriberStatus.ACTIVE
        logged = with_confirmations(
            session.connection(), SendFilter(email="karin@example.com"), limit=10
        )
    assert [entry["status"] for entry in logged if entry["step_id"] == "confirmation"] == ["sent"]
