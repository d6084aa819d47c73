"""Fixes for findings 1, 2, 6, 10 and 12 of the web fuzzing report, over the
real app and database (SQLite, and PostgreSQL with NURTURE_TEST_DATABASE_URL).

* 1: a multipart part whose charset no codec can read with ``errors="replace"``
  is read as UTF-8: the route answers as for any other junk body;
* 2: a SendGrid timestamp header too long for a float is refused as stale;
* 6: a signed SendGrid event dated year 1 is stored at its receive time, and
  one whose number is infinite (1e999) is refused as NaN is;
* 10: ``HEAD`` works on ``/healthz`` and on the unsubscribe and preferences pages;
* 12: a genuine link whose address no longer passes today's address check
  still works, and one whose address no row can hold is 404.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from nurture.core import tokens
from nurture.core.vocabulary import EnrollmentStatus, EventKind, SubscriberStatus
from nurture.store.tables import SubscriberRow
from nurture.web.leaving import parse_form
from tests.integration.test_leaving_web import FRIDAY, KARIN, ONE_CLICK, Site, make_site
from tests.integration.test_webhook_sendgrid import NOW, URL, World, event, make_world, signed

# Every charset whose codec raises something other than LookupError on junk
# bytes: "undefined" always, "idna" refuses errors="replace", "punycode" fails
# on non-ASCII bytes, a NUL in the name is a ValueError of the codec lookup,
# and "unicode_escape" warns on a bad escape (an error under pytest's filter).
BAD_CHARSETS = ["undefined", "idna", "punycode", '"utf\x00-8"', "unicode_escape"]


def _multipart(charset: str) -> bytes:
    return (
        b"--x\r\nContent-Disposition: form-data; name=List-Unsubscribe\r\n"
        b"Content-Type: text/plain; charset=" + charset.encode("latin-1") + b"\r\n\r\n"
        b"One-Click\\q\xff\r\n--x--\r\n"
    )


@pytest.fixture
def mailed(engine: Engine, tmp_path: Path) -> Iterator[Site]:
    """Karin is in two sequences and got the first email of each."""
    site = make_site(engine, tmp_path)
    site.add()
    assert site.dispatch() == 2
    yield site
    site.runtime.dispatcher.close()


def _unchanged(site: Site) -> None:
    assert site.subscriber().status == SubscriberStatus.ACTIVE
    assert set(site.enrollments().values()) == {EnrollmentStatus.ACTIVE}
    assert not site.events(EventKind.UNSUBSCRIBED)


# -- 1: charsets no codec can read ---------------------------------------------


@pytest.mark.parametrize("charset", BAD_CHARSETS)
def test_parse_form_reads_a_part_of_an_unreadable_charset_as_utf8(charset: str) -> None:
    form = parse_form("multipart/form-data; boundary=x", _multipart(charset))

    assert form == {"List-Unsubscribe": ["One-Click\\q\ufffd"]}


@pytest.mark.parametrize("charset", BAD_CHARSETS)
@pytest.mark.parametrize("page", ["unsubscribe", "preferences"])
def test_an_unreadable_charset_is_refused_like_other_junk(
    mailed: Site, page: str, charset: str
) -> None:
    headers = {"Content-Type": "multipart/form-data; boundary=x"}
    genuine = mailed.unsubscribe_path().replace("/unsubscribe/", f"/{page}/")

    # A genuine link: no CSRF token, and not the one-click field, as for other junk.
    answer = mailed.client.post(genuine, content=_multipart(charset), headers=headers)
    assert answer.status_code == 403
    # The body is read before the token is checked: any path once crashed.
    answer = mailed.client.post(
        f"/{page}/not-a-token", content=_multipart(charset), headers=headers
    )
    assert answer.status_code == 404
    _unchanged(mailed)


# -- 2: a SendGrid timestamp too long for a float ------------------------------


@pytest.fixture
def aged(engine: Engine, tmp_path: Path) -> Iterator[World]:
    yield from make_world(engine, tmp_path, sendgrid_webhook_max_age=300)


@pytest.mark.parametrize("digits", [308, 309, 512])
def test_a_timestamp_too_long_for_a_float_is_refused(aged: World, digits: int) -> None:
    body = b"[]"
    headers = {**signed(body), "X-Twilio-Email-Event-Webhook-Timestamp": "9" * digits}

    answer = aged.client.post(URL, content=body, headers=headers)

    assert answer.status_code == 403, answer.text
    assert aged.events() == []


def test_a_long_but_signed_timestamp_is_still_only_stale(aged: World) -> None:
    body = json.dumps([event("delivered", "a@example.com", "ev-long")]).encode()

    answer = aged.client.post(URL, content=body, headers=signed(body, "9" * 400))

    assert answer.status_code == 403
    assert aged.events() == []


# -- 6: a signed event dated outside any sensible time -------------------------


@pytest.fixture
def hooks(engine: Engine, tmp_path: Path) -> Iterator[World]:
    yield from make_world(engine, tmp_path)


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _odd_event(world: World, stamp: str) -> bytes:
    """A signed-to-be open of a@example.com's email whose timestamp is ``stamp``
    (JSON text, so that numbers Python would not write can be given)."""
    world.add("a@example.com")
    world.runtime.dispatcher.dispatch(NOW)
    key = world.key("a@example.com")
    text = json.dumps([event("open", "a@example.com", "ev-odd", nurture_send_id=key)])
    return text.replace(str(int(NOW.timestamp()) + 60), stamp).encode()


@pytest.mark.parametrize(
    "stamp",
    ["-62135596800", "-1", "0", "946684799", "253402300799", "1e300"],
    ids=["year-1", "1969", "1970", "1999", "year-9999", "1e300"],
)
def test_an_event_outside_sensible_times_is_stored_at_its_receive_time(
    hooks: World, stamp: str
) -> None:
    body = _odd_event(hooks, stamp)

    answer = hooks.client.post(URL, content=body, headers=signed(body))

    assert answer.status_code == 200, answer.text
    assert answer.json()["new"] == 1
    [row] = hooks.events()
    assert _utc(row["occurred_at"]) == NOW  # the receive time, as for a missing timestamp
    assert row["kind"] == EventKind.OPENED


@pytest.mark.parametrize("stamp", ["1e999", "-1e999"])
def test_an_infinite_number_is_refused_as_nan_is(hooks: World, stamp: str) -> None:
    # JSON has no Infinity, but 1e999 is JSON that Python reads as infinity:
    # neither a time nor anything PostgreSQL stores in the event's payload.
    body = _odd_event(hooks, stamp)

    answer = hooks.client.post(URL, content=body, headers=signed(body))

    assert answer.status_code == 400, answer.text
    assert hooks.events() == []


def test_an_event_with_a_sensible_time_keeps_it(hooks: World) -> None:
    earlier = int(NOW.timestamp()) - 3600
    answer = hooks.post([{**event("open", "a@example.com", "ev-ok"), "timestamp": earlier}])

    assert answer.status_code == 200
    [row] = hooks.events()
    assert _utc(row["occurred_at"]) == datetime.fromtimestamp(earlier, UTC)


# -- 10: HEAD ------------------------------------------------------------------


def test_head_healthz_answers_like_get(mailed: Site) -> None:
    head = mailed.client.head("/healthz")
    get = mailed.client.get("/healthz")

    assert (head.status_code, get.status_code) == (200, 200)
    assert head.headers["content-type"] == get.headers["content-type"]


@pytest.mark.parametrize("page", ["unsubscribe", "preferences"])
def test_head_on_the_link_pages_answers_and_changes_nothing(mailed: Site, page: str) -> None:
    genuine = mailed.unsubscribe_path().replace("/unsubscribe/", f"/{page}/")

    assert mailed.client.head(genuine).status_code == 200
    assert mailed.client.head(f"/{page}/not-a-token").status_code == 404
    _unchanged(mailed)


def test_head_is_not_in_the_openapi_document(mailed: Site) -> None:
    paths = mailed.client.get("/openapi.json").json()["paths"]

    assert set(paths["/healthz"]) == {"get"}
    assert set(paths["/unsubscribe/{token}"]) == {"get", "post"}


# -- 12: genuine links whose address does not normalise -------------------------


def _link(site: Site, payload: dict[str, Any], page: str = "unsubscribe") -> str:
    token = tokens.sign(site.runtime.settings.secret_key, tokens.MANAGE, payload, now=FRIDAY)
    return f"/{page}/{token}"


@pytest.mark.parametrize(
    "address",
    ["not an email\x00", "x" * 10_000 + "@example.com", "a\ud800@example.com", "a..b@example.com"],
    ids=["nul", "long", "lone-surrogate", "nobody-stored"],
)
@pytest.mark.parametrize("page", ["unsubscribe", "preferences"])
def test_a_signed_address_no_row_holds_is_404(mailed: Site, page: str, address: str) -> None:
    path = _link(mailed, {"e": address, "s": "sales-process"}, page)

    assert mailed.client.get(path).status_code == 404
    assert mailed.client.post(path, data=ONE_CLICK).status_code == 404
    _unchanged(mailed)


def test_an_address_stored_before_todays_check_can_still_leave(mailed: Site) -> None:
    legacy = "old..import@example.com"  # two dots in a row: refused today
    with mailed.session() as session:
        row = SubscriberRow(email=legacy, locale="en", created_at=FRIDAY, updated_at=FRIDAY)
        session.add(row)
        session.commit()
        legacy_id = row.id
    path = _link(mailed, {"e": legacy, "s": "sales-process"})

    page = mailed.client.get(path)
    prefs = mailed.client.get(path.replace("/unsubscribe/", "/preferences/"))
    left = mailed.client.post(path, data=ONE_CLICK)

    assert (page.status_code, prefs.status_code, left.status_code) == (200, 200, 200)
    assert "o***t@example.com" in page.text
    with mailed.session() as session:
        stored = session.get(SubscriberRow, legacy_id)
        assert stored is not None and stored.status == SubscriberStatus.UNSUBSCRIBED
    assert mailed.subscriber(KARIN).status == SubscriberStatus.ACTIVE  # nobody else
