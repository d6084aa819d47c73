"""Leaving and preferences over HTTP: the links in a real email, followed.

Every test dispatches the example sequence to a subscriber through a
MemoryTransport, takes the links from the email that went out and calls them,
then checks the database (and, where it matters, the next dispatch).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from nurture.app.clock import FixedClock
from nurture.app.runtime import Runtime, build_runtime
from nurture.audience.leaving import block
from nurture.audience.subscribers import add_subscriber, get_subscriber
from nurture.audience.suppression import is_suppressed
from nurture.core import tokens
from nurture.core.model import Brand
from nurture.core.vocabulary import EnrollmentStatus, EventKind, SubscriberStatus
from nurture.store.db import session_factory
from nurture.store.tables import EnrollmentRow, EventRow, SubscriberRow, SuppressionRow
from nurture.testing import MemoryTransport
from nurture.web.app import create_app
from nurture.web.leaving import mask_email, parse_form
from nurture.web.pages import Pages
from tests.factories import example_workdir

STOCKHOLM = ZoneInfo("Europe/Stockholm")
FRIDAY = datetime(2026, 11, 27, 15, 30, tzinfo=STOCKHOLM).astimezone(UTC)
LATER = FRIDAY + timedelta(days=30)
KARIN = "karin@example.com"
CLIENT_IP = "203.0.113.9"
BROWSER = "Mozilla/5.0 (test browser)"
ONE_CLICK = {"List-Unsubscribe": "One-Click"}
OLD_KEY = "an-old-secret-rotated-out"


@dataclass
class Site:
    runtime: Runtime
    transport: MemoryTransport
    client: TestClient

    def add(self, email: str = KARIN, *, locale: str = "sv") -> None:
        with session_factory(self.runtime.engine)() as session:
            add_subscriber(
                session, email=email, name="Karin Lindqvist", tz="Europe/Stockholm",
                locale=locale, tags=("b2b",), consent_source="test", now=FRIDAY,
                sequences=self.runtime.registry.sequences(),
            )  # fmt: skip
            session.commit()

    def dispatch(self, now: datetime = FRIDAY) -> int:
        return self.runtime.dispatcher.dispatch(now).sent

    def unsubscribe_path(self, index: int = -1) -> str:
        """The path of the ``List-Unsubscribe`` URL of a sent email."""
        header = self.transport.sent[index].as_message()["List-Unsubscribe"]
        match = re.search(r"<(https?://[^>]+)>", str(header))
        assert match is not None, header
        return urlsplit(match.group(1)).path

    def preferences_path(self, index: int = -1) -> str:
        return self.unsubscribe_path(index).replace("/unsubscribe/", "/preferences/")

    def subscriber(self, email: str = KARIN) -> SubscriberRow:
        with self.session() as session:
            row = get_subscriber(session, email)
            assert row is not None
            return row

    def enrollments(self, email: str = KARIN) -> dict[str, str]:
        with self.session() as session:
            row = get_subscriber(session, email)
            assert row is not None
            query = select(EnrollmentRow).where(EnrollmentRow.subscriber_id == row.id)
            return {e.sequence_id: e.status for e in session.exec(query)}

    def events(self, kind: EventKind) -> list[EventRow]:
        with self.session() as session:
            return list(session.exec(select(EventRow).where(EventRow.kind == kind)))

    def suppressed(self, email: str = KARIN) -> bool:
        with self.session() as session:
            return is_suppressed(session, email)

    def session(self) -> Session:
        return session_factory(self.runtime.engine)()


def _second_sequence(folder: Path, name: str) -> None:
    """A copy of the example sequence under another id, so a subscriber is in two."""
    text = (folder / "sales-process.yaml").read_text(encoding="utf-8")
    text = text.replace("id: sales-process", "id: follow-up", 1)
    text = re.sub(
        r"^name: .*$",
        lambda _: f"name: {json.dumps(name, ensure_ascii=False)}",
        text,
        count=1,
        flags=re.MULTILINE,
    )
    (folder / "follow-up.yaml").write_text(text, encoding="utf-8")


def make_site(
    engine: Engine, tmp_path: Path, *, follow_up: str = "Uppföljningen", **overrides: object
) -> Site:
    base = example_workdir(tmp_path)
    _second_sequence(base.sequences_dir, follow_up)
    settings = base.model_copy(update=overrides)
    transport = MemoryTransport()
    runtime = build_runtime(
        settings, FixedClock(FRIDAY), transport=transport, engine=engine, migrate=False
    )
    client = TestClient(
        create_app(runtime), client=(CLIENT_IP, 50000), follow_redirects=False,
        headers={"User-Agent": BROWSER},
    )  # fmt: skip
    return Site(runtime, transport, client)


@pytest.fixture
def site(engine: Engine, tmp_path: Path) -> Iterator[Site]:
    made = make_site(engine, tmp_path)
    yield made
    made.runtime.dispatcher.close()


@pytest.fixture
def mailed(site: Site) -> Site:
    """Karin (Swedish) is in two sequences and got the first email of each."""
    site.add()
    assert site.dispatch() == 2
    assert site.enrollments() == {"sales-process": "active", "follow-up": "active"}
    return site


def _csrf(page: Response) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match is not None, page.text
    return match.group(1)


def _path_of(site: Site, sequence_id: str) -> str:
    [index] = [i for i, e in enumerate(site.transport.sent) if e.sequence_id == sequence_id]
    return site.unsubscribe_path(index)


def _assert_left_everything(site: Site) -> None:
    assert site.subscriber().status == SubscriberStatus.UNSUBSCRIBED
    assert set(site.enrollments().values()) == {EnrollmentStatus.EXITED}
    assert site.suppressed()
    sent = len(site.transport.sent)
    assert site.dispatch(LATER) == 0
    assert len(site.transport.sent) == sent


# --------------------------------------------------------------------------- one-click


def test_one_click_urlencoded_unsubscribes_at_once(mailed: Site) -> None:
    answer = mailed.client.post(mailed.unsubscribe_path(), data=ONE_CLICK)

    assert answer.status_code == 200, answer.text
    assert "location" not in answer.headers
    assert "<h1>Din prenumeration är avslutad</h1>" in answer.text
    _assert_left_everything(mailed)
    [event] = mailed.events(EventKind.UNSUBSCRIBED)
    assert event.payload["via"] == "one-click" and event.payload["scope"] == "all"


def test_one_click_multipart_unsubscribes_at_once(mailed: Site) -> None:
    answer = mailed.client.post(
        mailed.unsubscribe_path(), files={"List-Unsubscribe": (None, "One-Click")}
    )

    assert answer.status_code == 200, answer.text
    assert answer.request.headers["content-type"].startswith("multipart/form-data")
    _assert_left_everything(mailed)


def test_repeating_one_click_is_harmless(mailed: Site) -> None:
    path = mailed.unsubscribe_path()
    first = mailed.client.post(path, data=ONE_CLICK)
    second = mailed.client.post(path, data=ONE_CLICK)

    assert (first.status_code, second.status_code) == (200, 200)
    _assert_left_everything(mailed)
    assert len(mailed.events(EventKind.UNSUBSCRIBED)) == 1


def test_one_click_needs_no_csrf_but_a_bare_post_does(mailed: Site) -> None:
    # Neither the one-click body nor a CSRF token: a forged form, refused.
    answer = mailed.client.post(mailed.unsubscribe_path(), data={"scope": "all"})

    assert answer.status_code == 403
    assert mailed.subscriber().status == SubscriberStatus.ACTIVE


# --------------------------------------------------------------------------- the GET page


def test_get_unsubscribe_changes_nothing(mailed: Site) -> None:
    page = mailed.client.get(mailed.unsubscribe_path())

    assert page.status_code == 200
    assert page.text.count("<h1>") == 1
    assert page.text.count("<button") == 1 and '<form method="post">' in page.text
    assert 'value="sequence"' in page.text and 'value="all"' in page.text
    assert mask_email(KARIN) in page.text and KARIN not in page.text
    assert mailed.subscriber().status == SubscriberStatus.ACTIVE
    assert set(mailed.enrollments().values()) == {EnrollmentStatus.ACTIVE}
    assert not mailed.events(EventKind.UNSUBSCRIBED)


def test_leaving_only_this_sequence_keeps_the_others(mailed: Site) -> None:
    path = _path_of(mailed, "follow-up")
    csrf = _csrf(mailed.client.get(path))

    answer = mailed.client.post(path, data={"csrf": csrf, "scope": "sequence"})

    assert answer.status_code == 200, answer.text
    assert "Uppföljningen" in answer.text
    assert mailed.enrollments() == {"sales-process": "active", "follow-up": "exited"}
    assert mailed.subscriber().status == SubscriberStatus.ACTIVE
    assert not mailed.suppressed()
    [event] = mailed.events(EventKind.UNSUBSCRIBED)
    assert event.sequence_id == "follow-up" and event.payload["scope"] == "sequence"


def test_the_page_form_can_leave_all_email(mailed: Site) -> None:
    path = mailed.unsubscribe_path()
    answer = mailed.client.post(path, data={"csrf": _csrf(mailed.client.get(path)), "scope": "all"})

    assert answer.status_code == 200
    _assert_left_everything(mailed)


# --------------------------------------------------------------------------- preferences


def test_preferences_list_sequences_and_leaving_one_works(mailed: Site) -> None:
    path = mailed.preferences_path()
    page = mailed.client.get(path)

    assert page.status_code == 200
    assert page.text.count("<h1>") == 1
    assert "Uppföljningen" in page.text and "Säljprocessen i fem mejl" in page.text
    assert 'name="leave" value="follow-up"' in page.text
    assert 'name="all"' in page.text
    assert mailed.enrollments() == {"sales-process": "active", "follow-up": "active"}

    answer = mailed.client.post(
        path, data={"csrf": _csrf(page), "action": "save", "leave": "follow-up"}
    )

    assert answer.status_code == 200, answer.text
    assert "Dina val är sparade." in answer.text
    assert mailed.enrollments() == {"sales-process": "active", "follow-up": "exited"}
    assert 'value="follow-up"' not in answer.text
    assert mailed.subscriber().status == SubscriberStatus.ACTIVE


def test_preferences_unsubscribe_from_all(mailed: Site) -> None:
    path = mailed.preferences_path()
    csrf = _csrf(mailed.client.get(path))

    answer = mailed.client.post(path, data={"csrf": csrf, "action": "save", "all": "1"})

    assert answer.status_code == 200
    assert "Prenumerera igen" in answer.text
    _assert_left_everything(mailed)


def test_resubscribing_records_fresh_consent(mailed: Site) -> None:
    mailed.client.post(mailed.unsubscribe_path(), data=ONE_CLICK)
    path = mailed.preferences_path()
    page = mailed.client.get(path)
    consent_text = (
        "Ja, jag vill få mejl från er igen. Jag kan avsluta när som helst med länken i varje mejl."
    )
    assert consent_text in page.text  # what is recorded is what was shown

    answer = mailed.client.post(path, data={"csrf": _csrf(page), "action": "resubscribe"})

    assert answer.status_code == 200, answer.text
    assert "Välkommen tillbaka" in answer.text
    karin = mailed.subscriber()
    assert karin.status == SubscriberStatus.ACTIVE
    assert karin.consent_source == "preferences"
    assert karin.consent_text == consent_text
    assert karin.consent_ip == CLIENT_IP
    assert karin.consent_user_agent == BROWSER
    assert karin.consent_at == FRIDAY
    assert not mailed.suppressed()
    assert len(mailed.events(EventKind.SUBSCRIBED)) == 1


def test_behind_a_trusted_proxy_the_consent_ip_is_the_forwarded_one(
    engine: Engine, tmp_path: Path
) -> None:
    site = make_site(engine, tmp_path, trusted_proxies=["203.0.113.0/24"])
    site.add()
    site.dispatch()
    site.client.post(site.unsubscribe_path(), data=ONE_CLICK)
    path = site.preferences_path()
    csrf = _csrf(site.client.get(path))

    site.client.post(
        path,
        data={"csrf": csrf, "action": "resubscribe"},
        headers={"X-Forwarded-For": "192.0.2.1, 198.51.100.7"},
    )

    assert site.subscriber().consent_ip == "198.51.100.7"
    site.runtime.dispatcher.close()


def test_resubscribing_a_complained_address_is_refused(mailed: Site) -> None:
    with mailed.session() as session:
        row = get_subscriber(session, KARIN)
        block(
            session, KARIN, row, status=SubscriberStatus.COMPLAINED, reason="spam report",
            source="sendgrid", now=FRIDAY,
        )  # fmt: skip
        session.commit()
    path = mailed.preferences_path()
    page = mailed.client.get(path)
    assert "anmäldes som skräppost" in page.text and "Prenumerera igen" not in page.text

    answer = mailed.client.post(
        path, data={"csrf": _csrf_for_prefs(mailed), "action": "resubscribe"}
    )

    assert answer.status_code == 409
    assert "Vi kan inte starta prenumerationen igen" in answer.text
    assert mailed.subscriber().status == SubscriberStatus.COMPLAINED
    assert mailed.suppressed()


def test_a_blocked_address_is_told_where_to_write(engine: Engine, tmp_path: Path) -> None:
    """The page of a bounced address cannot offer to subscribe again: it says
    where to write instead, the sender's reply-to address, else its From."""
    site = make_site(engine, tmp_path)
    site.add(KARIN)
    assert site.dispatch() == 2
    with site.session() as session:
        block(
            session, KARIN, get_subscriber(session, KARIN), status=SubscriberStatus.BOUNCED,
            reason="mailbox full", source="sendgrid", now=FRIDAY,
        )  # fmt: skip
        session.commit()
    page = site.client.get(site.preferences_path())
    assert "studsade" in page.text and "Prenumerera igen" not in page.text
    assert 'Skriv till oss på <a href="mailto:anna@example.com">anna@example.com</a>' in page.text

    for file in site.runtime.settings.sequences_dir.glob("*.yaml"):
        text = file.read_text(encoding="utf-8")
        file.write_text(
            text.replace("  reply_to: anna@example.com\n", "  reply_to: svar@exempel.se\n"),
            encoding="utf-8",
        )
    site.runtime.registry.reload()
    page = site.client.get(site.preferences_path())
    assert 'href="mailto:svar@exempel.se"' in page.text
    assert "mailto:anna@example.com" not in page.text
    site.runtime.dispatcher.close()


def _csrf_for_prefs(site: Site) -> str:
    """A genuine preferences CSRF token (the blocked page shows no form)."""
    settings = site.runtime.settings
    pages = Pages(settings.templates_dir, settings.secret_keys)
    return pages.csrf_token(f"prefs:{site.subscriber().id}", now=FRIDAY)


# --------------------------------------------------------------------------- bad links


def _bad_token(kind: str, site: Site) -> str:
    genuine = site.unsubscribe_path().rsplit("/", 1)[1]
    if kind == "tampered":
        _body, stamp, signature = genuine.split(".")
        payload = tokens.sign("x", tokens.MANAGE, {"e": "other@example.com", "s": "x"}, now=FRIDAY)
        return f"{payload.split('.')[0]}.{stamp}.{signature}"
    if kind == "foreign":
        return tokens.sign(
            "someone-elses-secret", tokens.MANAGE, {"e": KARIN, "s": "sales-process"}, now=FRIDAY
        )
    if kind == "rotated-out":
        return tokens.sign(OLD_KEY, tokens.MANAGE, {"e": KARIN, "s": "sales-process"}, now=FRIDAY)
    if kind == "other-purpose":
        return tokens.sign(
            site.runtime.settings.secret_key,
            tokens.CLICK,
            {"e": KARIN, "s": "sales-process"},
            now=FRIDAY,
        )
    return "not-a-token%21%C3%A9"


BAD_TOKENS = ["tampered", "foreign", "rotated-out", "other-purpose", "garbage"]
ENDPOINTS = [
    ("GET", "unsubscribe"),
    ("POST", "unsubscribe"),
    ("GET", "preferences"),
    ("POST", "preferences"),
]


@pytest.mark.parametrize("kind", BAD_TOKENS)
@pytest.mark.parametrize(("method", "page"), ENDPOINTS)
def test_a_bad_token_is_404_and_changes_nothing(
    mailed: Site, method: str, page: str, kind: str
) -> None:
    path = f"/{page}/{_bad_token(kind, mailed)}"
    if method == "GET":
        answer = mailed.client.get(path)
    elif page == "unsubscribe":
        answer = mailed.client.post(path, data=ONE_CLICK)
    else:
        answer = mailed.client.post(
            path, data={"csrf": _csrf_for_prefs(mailed), "action": "save", "all": "1"}
        )

    assert answer.status_code == 404
    assert "Länken fungerar inte" not in answer.text  # no subscriber known: the browser's language
    assert "This link does not work" in answer.text
    assert mailed.subscriber().status == SubscriberStatus.ACTIVE
    assert set(mailed.enrollments().values()) == {EnrollmentStatus.ACTIVE}
    assert not mailed.events(EventKind.UNSUBSCRIBED)


def test_a_link_signed_with_an_old_key_still_works_while_it_is_listed(
    engine: Engine, tmp_path: Path
) -> None:
    site = make_site(engine, tmp_path, old_secret_keys=[OLD_KEY])
    site.add()
    token = tokens.sign(OLD_KEY, tokens.MANAGE, {"e": KARIN, "s": "sales-process"}, now=FRIDAY)

    answer = site.client.post(f"/unsubscribe/{token}", data=ONE_CLICK)

    assert answer.status_code == 200
    assert site.subscriber().status == SubscriberStatus.UNSUBSCRIBED
    site.runtime.dispatcher.close()


# --------------------------------------------------------------------------- CSRF and size


@pytest.mark.parametrize("csrf", [None, "", "garbage", "wrong-scope"])
def test_a_form_without_a_good_csrf_token_is_403(mailed: Site, csrf: str | None) -> None:
    settings = mailed.runtime.settings
    if csrf == "wrong-scope":  # a genuine token, made for another form
        csrf = Pages(settings.templates_dir, settings.secret_keys).csrf_token(
            "prefs:999", now=FRIDAY
        )
    fields = {} if csrf is None else {"csrf": csrf}

    leave = mailed.client.post(mailed.unsubscribe_path(), data={**fields, "scope": "all"})
    prefs = mailed.client.post(
        mailed.preferences_path(), data={**fields, "action": "save", "all": "1"}
    )

    assert (leave.status_code, prefs.status_code) == (403, 403)
    assert "Formuläret har gått ut" in leave.text
    assert mailed.subscriber().status == SubscriberStatus.ACTIVE
    assert set(mailed.enrollments().values()) == {EnrollmentStatus.ACTIVE}


def test_an_expired_csrf_token_is_403(mailed: Site) -> None:
    path = mailed.preferences_path()
    csrf = _csrf(mailed.client.get(path))
    mailed.runtime.clock = FixedClock(FRIDAY + timedelta(hours=3))

    answer = mailed.client.post(path, data={"csrf": csrf, "action": "save", "all": "1"})

    assert answer.status_code == 403
    assert mailed.subscriber().status == SubscriberStatus.ACTIVE


@pytest.mark.parametrize("page", ["unsubscribe", "preferences"])
def test_an_oversized_body_is_413(mailed: Site, page: str) -> None:
    path = mailed.unsubscribe_path().replace("/unsubscribe/", f"/{page}/")
    answer = mailed.client.post(
        path,
        content=b"List-Unsubscribe=One-Click&pad=" + b"x" * 5000,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )

    assert answer.status_code == 413
    assert mailed.subscriber().status == SubscriberStatus.ACTIVE


def test_garbage_bodies_are_refused_not_crashed_on(mailed: Site) -> None:
    path = mailed.unsubscribe_path()
    bodies = [
        ("multipart/form-data; boundary=zz", b"--zz\r\nnonsense\r\n\r\n\xff\xfe--"),
        ("multipart/form-data", b"no boundary at all"),
        ("application/x-www-form-urlencoded", b"%zz=%%&&=\xff"),
        ("application/json", b'{"List-Unsubscribe": "One-Click"}'),
    ]
    for content_type, body in bodies:
        answer = mailed.client.post(path, content=body, headers={"Content-Type": content_type})
        assert answer.status_code == 403, (content_type, answer.status_code)
    assert mailed.subscriber().status == SubscriberStatus.ACTIVE


# --------------------------------------------------------------------------- language and escaping


def test_an_english_subscriber_gets_english_pages(site: Site) -> None:
    site.add("jamie@example.com", locale="en")
    site.dispatch()

    leave = site.client.get(site.unsubscribe_path(), headers={"Accept-Language": "sv"})
    prefs = site.client.get(site.preferences_path())

    assert '<html lang="en">' in leave.text and "<h1>Unsubscribe</h1>" in leave.text
    assert "<h1>Your email preferences</h1>" in prefs.text


def test_a_swedish_subscriber_gets_swedish_pages(mailed: Site) -> None:
    leave = mailed.client.get(mailed.unsubscribe_path(), headers={"Accept-Language": "en"})
    prefs = mailed.client.get(mailed.preferences_path())

    assert '<html lang="sv">' in leave.text and "<h1>Avsluta prenumeration</h1>" in leave.text
    assert "<h1>Dina mejlinställningar</h1>" in prefs.text
    assert "Unsubscribe" not in leave.text


def _title(page: Response) -> str:
    found = re.search(r"<title>(.*?)</title>", page.text, re.S)
    assert found is not None, page.text
    return found.group(1).strip()


def test_the_pages_say_whose_emails_they_are(engine: Engine, tmp_path: Path) -> None:
    """The pages said "all email from us" without a name: a subscriber of
    several lists could not tell whose emails the link was about. Each page
    names the business behind the email the link came from: its sequence's
    brand (the follow-up here has its own), in the title and above it."""
    site = make_site(engine, tmp_path)
    follow_up = site.runtime.settings.sequences_dir / "follow-up.yaml"
    follow_up.write_text(
        follow_up.read_text(encoding="utf-8").replace("name: Exempel AB", "name: Verkstan", 1),
        encoding="utf-8",
    )
    site.runtime.registry.reload()
    site.add()
    assert site.dispatch() == 2

    for sequence_id, name in (("sales-process", "Exempel AB"), ("follow-up", "Verkstan")):
        path = _path_of(site, sequence_id)
        leave = site.client.get(path)
        prefs = site.client.get(path.replace("/unsubscribe/", "/preferences/"))
        assert _title(leave) == f"Avsluta prenumeration – {name}"
        assert _title(prefs) == f"Dina mejlinställningar – {name}"
        assert f'<p class="brand">{name}</p>' in leave.text and name in prefs.text
    left = site.client.post(
        _path_of(site, "follow-up"), data={"csrf": _csrf(leave), "scope": "all"}
    )
    assert _title(left) == "Din prenumeration är avslutad – Verkstan"
    site.runtime.dispatcher.close()


def test_the_pages_fall_back_on_the_projects_brand_then_the_sender(
    engine: Engine, tmp_path: Path
) -> None:
    """As in the email: a sequence's own brand name first, then the project's
    ``[brand]``, then the sender's name."""
    for brand, then, email in (
        (Brand(name="Lindqvist Verkstad"), "Lindqvist Verkstad", KARIN),
        (None, "Anna på Exempel AB", "jamie@example.com"),  # one database: someone new
    ):
        site = make_site(engine, tmp_path / then, brand=brand)
        site.add(email)
        assert site.dispatch() == 2
        assert _title(site.client.get(site.unsubscribe_path())).endswith("– Exempel AB")

        for file in site.runtime.settings.sequences_dir.glob("*.yaml"):
            file.write_text(
                file.read_text(encoding="utf-8").replace("  name: Exempel AB\n", "", 1),
                encoding="utf-8",
            )
        site.runtime.registry.reload()
        assert _title(site.client.get(site.unsubscribe_path())).endswith(f"– {then}")
        assert _title(site.client.get(site.preferences_path())).endswith(f"– {then}")
        site.runtime.dispatcher.close()


def test_a_project_can_override_the_words(engine: Engine, tmp_path: Path) -> None:
    site = make_site(engine, tmp_path)
    words = site.runtime.settings.templates_dir / "web"
    words.mkdir()
    (words / "messages.sv.json").write_text(
        '{"unsubscribe_title": "Sluta få mejl"}', encoding="utf-8"
    )
    site.add()
    site.dispatch()

    assert "<h1>Sluta få mejl</h1>" in site.client.get(site.unsubscribe_path()).text
    site.runtime.dispatcher.close()


def test_what_the_pages_show_is_escaped(engine: Engine, tmp_path: Path) -> None:
    site = make_site(engine, tmp_path, follow_up='<script>alert("x")</script> & co')
    site.add()
    site.dispatch()

    page = site.client.get(site.preferences_path()).text

    assert "<script>" not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; co" in page
    site.runtime.dispatcher.close()


# --------------------------------------------------------------------------- helpers


def test_parse_form_reads_both_encodings() -> None:
    assert parse_form("application/x-www-form-urlencoded", b"List-Unsubscribe=One-Click") == {
        "List-Unsubscribe": ["One-Click"]
    }
    body = (
        b'--b1\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\n'
        b'One-Click\r\n--b1\r\nContent-Disposition: form-data; name="f"; filename="a.txt"\r\n'
        b"\r\nignored\r\n--b1--\r\n"
    )
    assert parse_form("multipart/form-data; boundary=b1", body) == {
        "List-Unsubscribe": ["One-Click"]
    }
    assert parse_form(None, b"List-Unsubscribe=One-Click") == {}


def test_mask_email() -> None:
    assert mask_email("karin@example.com") == "k***n@example.com"
    assert mask_email("al@example.com") == "a***@example.com"


def test_one_click_from_many_at_once_unsubscribes_once_without_an_error(mailed: Site) -> None:
    """A mail client retrying, two of the subscriber's links clicked at once:
    every answer is the confirmation page, never a 500 from two transactions
    suppressing the same address, and the address is suppressed once."""
    paths = [_path_of(mailed, "sales-process"), _path_of(mailed, "follow-up")] * 4
    start = threading.Barrier(len(paths))

    def click(path: str) -> int:
        start.wait()
        return mailed.client.post(path, data=ONE_CLICK).status_code

    with ThreadPoolExecutor(len(paths)) as pool:
        statuses = list(pool.map(click, paths))

    assert statuses == [200] * len(paths)
    _assert_left_everything(mailed)
    with mailed.session() as session:
        rows = session.exec(select(SuppressionRow).where(SuppressionRow.email == KARIN)).all()
    assert len(rows) == 1
