"""A known address on a sign-up form again: asked to join, by a signed link.

An active subscriber who signs up on a second form (a webinar series, say)
used to get "check your inbox" and nothing; an unsubscribed one who signs up
again got the same, and an unconfirmed one only its first confirmation again.
All now get a confirmation email whose link, confirmed,
adds the form's tags (and resubscribes the one who left) with that form's
consent, and enrolls where the tags lead. Nothing changes before the click.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import select

from nurture.app.clock import FixedClock
from nurture.app.runtime import build_runtime
from nurture.audience.leaving import block, unsubscribe
from nurture.audience.suppression import is_suppressed
from nurture.core import tokens
from nurture.core.vocabulary import EventKind, SubscriberStatus
from nurture.store.tables import EventRow, SuppressionRow
from nurture.testing import MemoryTransport
from nurture.web.app import create_app
from tests.factories import example_workdir
from tests.integration.test_signup import (
    AGENT,
    CHECK_INBOX,
    CLIENT,
    CONFIRM_BUTTON,
    CONFIRMED,
    NOW,
    PROMISE,
    Site,
    _click,
    _link,
)

KARIN = "karin@example.com"
WEBINAR_CONSENT = "Yes, send me the webinar series."


@pytest.fixture
def site(engine: Engine, tmp_path: Path) -> Iterator[Site]:
    """The example sequences, and a ``webinar`` series started by its own tag."""
    settings = example_workdir(tmp_path)
    settings.base_url = "https://news.example.com"
    example = (settings.sequences_dir / "sales-process.yaml").read_text(encoding="utf-8")
    webinar = example.replace("id: sales-process", "id: webinar", 1).replace(
        "tags: [b2b]", "tags: [webinar]", 1
    )
    assert "tags: [webinar]" in webinar
    (settings.sequences_dir / "webinar.yaml").write_text(webinar, encoding="utf-8")
    clock = FixedClock(NOW)
    transport = MemoryTransport()
    runtime = build_runtime(settings, clock, transport=transport, engine=engine, migrate=False)
    with TestClient(create_app(runtime), client=CLIENT) as client:
        yield Site(runtime, clock, transport, client, engine)


def _subscribed(site: Site, email: str = KARIN) -> None:
    """``email`` signed up on the newsletter form (tag b2b) and confirmed."""
    site.post_form(email=email, tags="b2b", form="newsletter")
    assert CONFIRMED in _click(site, _link(site)).text
    site.clock.instant += timedelta(minutes=6)  # past the resend interval


def _tags(site: Site, email: str = KARIN) -> list[str]:
    row = site.subscriber(email)
    assert row is not None
    return list(row.tags or [])


def test_an_active_subscriber_on_a_second_form_joins_its_series_once_confirmed(
    site: Site,
) -> None:
    _subscribed(site)
    assert site.enrolled_in(KARIN) == ["sales-process"]

    answer = site.post_form(
        email=KARIN, tags="webinar", form="webinar", consent_text=WEBINAR_CONSENT
    )
    assert answer.status_code == 200 and CHECK_INBOX in answer.text
    assert [e.to_email for e in site.transport.sent] == [KARIN, KARIN]
    # Nothing changes before the link is followed (anyone can type an address).
    assert _tags(site) == ["b2b"]
    assert site.enrolled_in(KARIN) == ["sales-process"]
    link = _link(site)
    page = site.client.get(link)
    assert CONFIRM_BUTTON in page.text
    assert _tags(site) == ["b2b"]

    confirmed = _click(site, link)
    assert f"{CONFIRMED} {PROMISE}" in confirmed.text
    assert _tags(site) == ["b2b", "webinar"]
    assert sorted(site.enrolled_in(KARIN)) == ["sales-process", "webinar"]
    row = site.subscriber(KARIN)
    assert row is not None and row.status == SubscriberStatus.ACTIVE
    assert row.consent_form == "newsletter"  # the first sign-up's record stays
    with site.session() as session:
        [joined] = session.exec(
            select(EventRow).where(
                EventRow.subscriber_id == row.id, EventRow.kind == EventKind.SUBSCRIBED
            )
        ).all()
    assert joined.payload["via"] == "form:webinar"
    assert joined.payload["tags"] == ["webinar"]
    assert joined.payload["consent_text"] == WEBINAR_CONSENT
    assert joined.payload["consent_ip"] == CLIENT[0]

    # Twice is harmless: the page has no button, a post enrolls nobody again.
    again = site.client.get(link)
    assert CONFIRMED in again.text and CONFIRM_BUTTON not in again.text
    assert site.client.post(link).status_code == 200
    assert sorted(site.enrolled_in(KARIN)) == ["sales-process", "webinar"]
    # The same form again asks nothing: the address has its tags.
    site.clock.instant += timedelta(minutes=6)
    site.post_form(email=KARIN, tags="webinar", form="webinar")
    site.post_form(email=KARIN, tags="b2b", form="newsletter")
    assert len(site.transport.sent) == 2


def test_a_second_form_right_after_the_first_confirmation_is_asked_at_once(
    site: Site,
) -> None:
    """The webinar form a minute after confirming the newsletter is a new
    question: only an ask to the same tags waits the resend interval."""
    site.post_form(email=KARIN, tags="b2b", form="newsletter")
    assert CONFIRMED in _click(site, _link(site)).text
    site.clock.instant += timedelta(minutes=1)
    site.post_form(email=KARIN, tags="webinar", form="webinar")
    assert len(site.transport.sent) == 2
    assert f"{CONFIRMED} {PROMISE}" in _click(site, _link(site)).text
    assert _tags(site) == ["b2b", "webinar"]


@pytest.mark.parametrize("first", ["webinar", "newsletter"])
def test_an_unconfirmed_address_on_a_second_form_gets_both_forms_series(
    site: Site, first: str
) -> None:
    """Someone signs up for the newsletter, then for the webinar before
    confirming either: each form's email confirms the address, and between
    them the address gets both forms' tags, whichever link is followed first.
    Before, the webinar form only resent the newsletter's confirmation, and
    its tag was lost."""
    site.post_form(email=KARIN, tags="b2b", form="newsletter")
    site.clock.instant += timedelta(minutes=1)
    site.post_form(email=KARIN, tags="webinar", form="webinar", consent_text=WEBINAR_CONSENT)
    assert len(site.transport.sent) == 2
    row = site.subscriber(KARIN)
    assert row is not None and row.status == SubscriberStatus.UNCONFIRMED
    assert _tags(site) == ["b2b"]  # nothing changes before a click
    links = {"newsletter": _link(site, 0), "webinar": _link(site, 1)}

    assert f"{CONFIRMED} {PROMISE}" in _click(site, links[first]).text
    row = site.subscriber(KARIN)
    assert row is not None and row.status == SubscriberStatus.ACTIVE
    expected = {"newsletter": ["sales-process"], "webinar": ["sales-process", "webinar"]}
    assert sorted(site.enrolled_in(KARIN)) == expected[first]
    second = "newsletter" if first == "webinar" else "webinar"
    assert CONFIRMED in _click(site, links[second]).text
    assert _tags(site) == ["b2b", "webinar"]
    assert sorted(site.enrolled_in(KARIN)) == ["sales-process", "webinar"]
    assert row.consent_form == "newsletter"  # the sign-up's own record stays
    with site.session() as session:
        [joined] = session.exec(
            select(EventRow).where(
                EventRow.subscriber_id == row.id, EventRow.kind == EventKind.SUBSCRIBED
            )
        ).all()
    assert (joined.payload["via"], joined.payload["tags"]) == ("form:webinar", ["webinar"])
    assert joined.payload["consent_text"] == WEBINAR_CONSENT


def test_an_unconfirmed_address_on_the_same_form_again_is_only_reminded(site: Site) -> None:
    site.post_form(email=KARIN, tags="b2b", form="newsletter")
    site.clock.instant += timedelta(minutes=6)
    site.post_form(email=KARIN, tags="b2b", form="newsletter")
    assert len(site.transport.sent) == 2
    with site.session() as session:
        payloads = session.exec(
            select(EventRow.payload).where(EventRow.kind == EventKind.SENT)
        ).all()
    assert [("join" in p) for p in payloads] == [False, False]  # two plain confirmations


def test_a_join_link_of_an_unconfirmed_address_suppressed_since_changes_nothing(
    site: Site,
) -> None:
    site.post_form(email=KARIN, tags="b2b", form="newsletter")
    site.post_form(email=KARIN, tags="webinar", form="webinar")
    links = [_link(site, 0), _link(site, 1)]
    with site.session() as session:
        session.add(SuppressionRow(email=KARIN, reason="asked by phone", created_at=NOW))
        session.commit()
    for link in links:
        assert site.client.post(link).status_code == 404
    row = site.subscriber(KARIN)
    assert row is not None and row.status == SubscriberStatus.UNCONFIRMED
    assert _tags(site) == ["b2b"]
    assert site.enrolled_in(KARIN) == []


def test_an_active_subscriber_is_asked_to_join_at_most_once_in_a_few_minutes(
    site: Site,
) -> None:
    _subscribed(site)
    site.post_form(email=KARIN, tags="webinar", form="webinar")
    site.post_form(email=KARIN, tags="webinar", form="webinar")
    assert len(site.transport.sent) == 2
    site.clock.instant += timedelta(minutes=6)
    site.post_form(email=KARIN, tags="webinar", form="webinar")
    assert len(site.transport.sent) == 3
    assert f"{CONFIRMED} {PROMISE}" in _click(site, _link(site, 1)).text  # the first still works


def test_a_form_posted_with_ever_new_tags_asks_an_address_three_times_an_hour(
    site: Site,
) -> None:
    """Tags are a form's hidden field: a stranger could post new ones each
    time. Three asks to join an hour, whatever the tags, then nothing."""
    _subscribed(site)
    for n in range(5):
        site.post_form(email=KARIN, tags=f"guess-{n}", form="webinar")
        site.clock.instant += timedelta(minutes=1)
    assert len(site.transport.sent) == 1 + 3
    site.clock.instant += timedelta(hours=1)
    site.post_form(email=KARIN, tags="webinar", form="webinar")
    assert len(site.transport.sent) == 1 + 4


def test_an_unsubscribed_address_signing_up_again_comes_back_with_fresh_consent(
    site: Site,
) -> None:
    _subscribed(site)
    with site.session() as session:
        row = site.subscriber(KARIN)
        assert row is not None
        unsubscribe(session, session.merge(row), now=site.clock.instant, via="link")
        session.commit()
    with site.session() as session:
        assert is_suppressed(session, KARIN)

    site.post_form(email=KARIN, tags="webinar", form="comeback", consent_text=WEBINAR_CONSENT)
    assert len(site.transport.sent) == 2
    row = site.subscriber(KARIN)
    assert row is not None and row.status == SubscriberStatus.UNSUBSCRIBED
    confirmed = _click(site, _link(site), headers={"User-Agent": AGENT})
    assert f"{CONFIRMED} {PROMISE}" in confirmed.text

    row = site.subscriber(KARIN)
    assert row is not None and row.status == SubscriberStatus.ACTIVE
    assert (row.consent_form, row.consent_source) == ("comeback", "form:comeback")
    assert row.consent_text == WEBINAR_CONSENT and row.consent_at == site.clock.instant
    assert row.consent_ip == CLIENT[0] and row.consent_user_agent == AGENT
    assert row.tags == ["b2b", "webinar"]
    with site.session() as session:
        assert not is_suppressed(session, KARIN)
    assert "webinar" in site.enrolled_in(KARIN)


def test_a_bounced_or_reported_address_on_a_form_is_sent_nothing(site: Site) -> None:
    for address, status in (
        ("bo@example.com", SubscriberStatus.BOUNCED),
        ("cia@example.com", SubscriberStatus.COMPLAINED),
    ):
        _subscribed(site, address)
        with site.session() as session:
            row = site.subscriber(address)
            assert row is not None
            block(
                session, address, session.merge(row), status=status, reason="test",
                source="sendgrid", now=site.clock.instant,
            )  # fmt: skip
            session.commit()
        before = len(site.transport.sent)
        answer = site.post_form(email=address, tags="webinar", form="webinar")
        assert answer.status_code == 200 and CHECK_INBOX in answer.text
        assert len(site.transport.sent) == before
        assert _tags(site, address) == ["b2b"]


def test_a_join_link_of_an_address_that_bounced_since_changes_nothing(site: Site) -> None:
    _subscribed(site)
    site.post_form(email=KARIN, tags="webinar", form="webinar")
    link = _link(site)
    with site.session() as session:
        row = site.subscriber(KARIN)
        assert row is not None
        block(
            session, KARIN, session.merge(row), status=SubscriberStatus.BOUNCED,
            reason="mailbox gone", source="sendgrid", now=site.clock.instant,
        )  # fmt: skip
        session.commit()
    assert site.client.get(link).status_code == 404
    assert site.client.post(link).status_code == 404
    assert _tags(site) == ["b2b"]
    assert site.enrolled_in(KARIN) == ["sales-process"]


def test_a_join_link_names_an_email_that_went_to_that_subscriber(site: Site) -> None:
    """The key in a link must be of a confirmation email recorded for the
    subscriber the link names, and one that asked to join."""
    _subscribed(site)
    _subscribed(site, "ola@example.com")
    site.post_form(email="ola@example.com", tags="webinar", form="webinar")
    karin = site.subscriber(KARIN)
    assert karin is not None
    keys = site.runtime.settings.secret_keys
    with site.session() as session:
        ola_key = session.exec(
            select(EventRow.provider_event_id).where(EventRow.kind == EventKind.SENT)
        ).all()[-1]
    assert ola_key is not None
    for key in (ola_key.removeprefix("confirmation:"), "confirm.1.0000", 42):
        token = tokens.sign(
            keys, tokens.CONFIRM, {"s": karin.id, "e": KARIN, "k": key}, now=site.clock.instant
        )
        assert site.client.post(f"/confirm/{token}").status_code == 404, key
    assert _tags(site) == ["b2b"]
