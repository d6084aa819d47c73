"""The send log for admins: /admin/sends, its CSV export, one send's detail,
and the same as JSON under /admin/api/sends."""

from __future__ import annotations

import base64
import csv
import io
import itertools
import re
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update

from nurture.audience.subscribers import add_subscriber
from nurture.audience.tokens import create_token
from nurture.core.vocabulary import SendStatus
from nurture.store.db import session_factory
from nurture.store.queries import ENROLLMENT, EVENT, SEND, SUBSCRIBER
from tests.admin_kit import NOW, AdminApp

HOSTILE = "<script>alert(1)</script>"
_TOKENS = itertools.count()


# ---------------------------------------------------------------------- the data


def _subscriber(admin: AdminApp, email: str, name: str = "Karin Lindqvist") -> int:
    """A real subscriber, enrolled by the real service."""
    with session_factory(admin.engine)() as session:
        row, _ = add_subscriber(
            session,
            email=email,
            name=name,
            tz="Europe/Stockholm",
            locale="sv",
            tags=("b2b",),
            consent_source="test",
            now=NOW,
            sequences=admin.runtime.registry.sequences(),
        )
        session.commit()
        assert row.id is not None
        return row.id


def _ledger(admin: AdminApp, rows: list[dict[str, Any]], email: str = "bulk@example.com") -> None:
    """Many ledger rows at once for one subscriber (one enrollment each step
    id is unique in): plain inserts, as the dispatcher's would be."""
    subscriber_id = _subscriber(admin, email)
    with admin.engine.begin() as conn:
        enrollment_id = conn.execute(
            select(ENROLLMENT.c.id).where(ENROLLMENT.c.subscriber_id == subscriber_id)
        ).scalar_one()
        conn.execute(
            insert(SEND),
            [
                {
                    "key": f"{email}-{n}",
                    "enrollment_id": enrollment_id,
                    "subscriber_id": subscriber_id,
                    "sequence_id": "sales-process",
                    "sequence_version": "v1",
                    "step_id": f"step-{n}",
                    "status": SendStatus.SENT,
                    "due_at": NOW,
                    "attempts": 1,
                    "reason": None,
                    "subject": None,
                    **row,
                }
                for n, row in enumerate(rows)
            ],
        )


def _dispatched(admin: AdminApp, email: str, name: str = "Karin Lindqvist") -> int:
    """A subscriber whose welcome email went out through the real dispatcher;
    the id of its ledger row."""
    subscriber_id = _subscriber(admin, email, name)
    admin.runtime.dispatcher.dispatch(NOW)
    with admin.engine.connect() as conn:
        send_id: int = conn.execute(
            select(SEND.c.id).where(SEND.c.subscriber_id == subscriber_id)
        ).scalar_one()
    return send_id


def _event(admin: AdminApp, send_id: int, kind: str, at: datetime, **extra: Any) -> None:
    with admin.engine.begin() as conn:
        conn.execute(
            insert(EVENT).values(
                provider_event_id=f"test-{send_id}-{kind}-{at.isoformat()}",
                kind=kind,
                send_id=send_id,
                occurred_at=at,
                received_at=at + timedelta(seconds=5),
                payload=extra.pop("payload", {}),
                **extra,
            )
        )


def _ids(html: str) -> list[int]:
    return [int(n) for n in re.findall(r'href="/admin/sends/(\d+)"', html)]


def _cursor(html: str, rel: str) -> str | None:
    found = re.search(rf'<a href="([^"]+)" rel="{rel}">', html)
    return None if found is None else found.group(1).replace("&amp;", "&")


def _token(admin: AdminApp, scope: str = "admin") -> dict[str, str]:
    with session_factory(admin.engine)() as session:
        made = create_token(session, f"t-{scope}-{next(_TOKENS)}", scope, NOW)
        session.commit()
    return {"Authorization": f"Bearer {made.token}"}


# --------------------------------------------------------------------- the pages


def test_keyset_pages_walk_every_row_once_in_order_both_ways(admin: AdminApp) -> None:
    # 120 rows, in threes with the same decided_at: ties are ordered by id.
    _ledger(admin, [{"decided_at": NOW - timedelta(minutes=n // 3)} for n in range(120)])
    seen: list[int] = []
    pages: list[str] = []
    link: str | None = "/admin/sends"
    while link is not None:
        page = admin.client.get(link)
        assert page.status_code == 200, page.text
        seen += _ids(page.text)
        pages.append(link)
        link = _cursor(page.text, "next")
    with admin.engine.connect() as conn:
        expected = list(
            conn.execute(select(SEND.c.id).order_by(SEND.c.decided_at.desc(), SEND.c.id.desc()))
            .scalars()
            .all()
        )
    assert len(expected) == 120 and seen == expected and len(pages) == 3
    # "Newer" from the last page leads back to the middle one.
    last = admin.client.get(pages[-1]).text
    newer = _cursor(last, "prev")
    assert newer is not None
    assert _ids(admin.client.get(newer).text) == expected[50:100]


def test_each_filter_narrows_the_log(admin: AdminApp) -> None:
    day = timedelta(days=1)
    _ledger(
        admin,
        [
            {"decided_at": NOW - 3 * day, "status": SendStatus.FAILED, "reason": "bad address"},
            {"decided_at": NOW - 2 * day, "status": SendStatus.SKIPPED, "sequence_id": "other"},
            {"decided_at": NOW - day, "step_id": "offer"},
        ],
    )
    other = _dispatched(admin, "Someone@Example.com")

    def ids(query: str) -> set[int]:
        page = admin.client.get("/admin/sends?" + query)
        assert page.status_code == 200, page.text
        return set(_ids(page.text))

    with admin.engine.connect() as conn:
        by_step = dict(conn.execute(select(SEND.c.step_id, SEND.c.id)).all())
    assert ids("") == set(by_step.values())
    assert ids("status=failed") == {by_step["step-0"]}
    assert ids("sequence=other") == {by_step["step-1"]}
    assert ids("step=offer") == {by_step["offer"]}
    assert ids("email=SOMEONE@example.com") == {other}
    # Dates are in the admin's zone (Stockholm) and include the "to" day.
    assert ids("from=2026-11-24&to=2026-11-24") == {by_step["step-0"]}
    assert ids("from=2026-11-26") == {by_step["offer"], other}
    assert ids("status=failed&sequence=other") == set()


def test_hostile_filter_values_are_bound_parameters(admin: AdminApp) -> None:
    _dispatched(admin, "karin@example.com")
    for query in (
        "email=' OR 1=1 --",
        "sequence=' OR '1'='1",
        "step=x%22 OR 1=1; DROP TABLE send; --",
    ):
        page = admin.client.get("/admin/sends", params=dict([query.split("=", 1)]))
        assert page.status_code == 200
        assert _ids(page.text) == [], query
    with admin.engine.connect() as conn:
        assert conn.execute(select(SEND.c.id)).first() is not None  # still there
    bad = admin.client.get("/admin/sends", params={"status": "' OR 1=1 --"})
    assert bad.status_code == 400 and "use one of" in bad.text


def test_a_damaged_cursor_or_date_is_a_400_not_a_500(admin: AdminApp) -> None:
    _dispatched(admin, "karin@example.com")
    forged = base64.urlsafe_b64encode(b"o|yesterday|1").decode()
    for params in (
        {"cursor": "not-a-cursor!"},
        {"cursor": forged},
        {"cursor": base64.urlsafe_b64encode(b"x|2026-11-27T14:30:00+00:00|1").decode()},
        {"cursor": base64.urlsafe_b64encode(b"o|2026-11-27T14:30:00|1").decode()},
        {"from": "27/11/2026"},
    ):
        page = admin.client.get("/admin/sends", params=params)
        assert page.status_code == 400, params
        assert 'role="alert"' in page.text
    api = admin.client.get("/admin/api/sends", params={"cursor": forged}, headers=_token(admin))
    assert api.status_code == 400 and "damaged" in api.json()["detail"]


def test_subscriber_data_is_escaped_on_the_log_and_the_detail(admin: AdminApp) -> None:
    send_id = _dispatched(admin, "karin@example.com", name=HOSTILE)
    with admin.engine.begin() as conn:
        conn.execute(update(SEND).values(subject=HOSTILE, reason=HOSTILE))
    for path in ("/admin/sends", f"/admin/sends/{send_id}"):
        page = admin.client.get(path)
        assert page.status_code == 200, page.text
        assert HOSTILE not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


def test_without_a_session_pages_go_to_login_and_the_api_answers_401(admin: AdminApp) -> None:
    send_id = _dispatched(admin, "karin@example.com")
    anonymous = admin.anonymous()
    for path in ("/admin/sends", "/admin/sends.csv", f"/admin/sends/{send_id}"):
        answer = anonymous.get(path, follow_redirects=False)
        assert answer.status_code == 303, path
        assert answer.headers["location"].startswith("/admin/login?next=")
    for path in ("/admin/api/sends", f"/admin/api/sends/{send_id}"):
        assert anonymous.get(path).status_code == 401
        assert anonymous.get(path, headers=_token(admin, "ingest")).status_code == 403


def test_csv_export_streams_the_filtered_set_with_formulas_neutralised(admin: AdminApp) -> None:
    _ledger(
        admin,
        [
            {"decided_at": NOW, "subject": '=HYPERLINK("http://evil")', "reason": "+1"},
            {"decided_at": NOW, "subject": "@SUM(A1)", "reason": "\tx", "status": "failed"},
            {"decided_at": NOW, "subject": "-2", "reason": "\rcarriage", "status": "failed"},
            {"decided_at": NOW, "subject": "plain", "status": "skipped"},
        ],
    )
    answer = admin.client.get("/admin/sends.csv", params={"status": "failed"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/csv")
    assert "attachment" in answer.headers["content-disposition"]
    assert "content-length" not in answer.headers  # streamed, not built whole
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert sorted(row["subject"] for row in rows) == ["'-2", "'@SUM(A1)"]
    assert sorted(row["reason"] for row in rows) == ["'\tx", "'\rcarriage"]
    everything = list(csv.DictReader(io.StringIO(admin.client.get("/admin/sends.csv").text)))
    subjects = {row["subject"] for row in everything}
    assert '\'=HYPERLINK("http://evil")' in subjects and "plain" in subjects
    assert {row["email"] for row in everything} == {"bulk@example.com"}


def test_csv_export_of_more_rows_than_a_batch(admin: AdminApp) -> None:
    _ledger(admin, [{"decided_at": NOW - timedelta(seconds=n)} for n in range(1_050)])
    rows = list(csv.DictReader(io.StringIO(admin.client.get("/admin/sends.csv").text)))
    assert len({row["id"] for row in rows}) == 1_050


def test_the_detail_shows_the_events_in_order_the_text_part_and_a_sandboxed_html_part(
    admin: AdminApp,
) -> None:
    send_id = _dispatched(admin, "karin@example.com")
    _event(admin, send_id, "opened", NOW + timedelta(minutes=9), machine=True)
    _event(admin, send_id, "delivered", NOW + timedelta(minutes=1))
    _event(admin, send_id, "clicked", NOW + timedelta(minutes=30), payload={"url": "https://x.se"})
    page = admin.client.get(f"/admin/sends/{send_id}")
    assert page.status_code == 200, page.text
    html = page.text
    positions = [html.index(f"<td>{kind}") for kind in ("delivered", "opened", "clicked")]
    assert positions == sorted(positions)
    assert "(machine" in html
    # The text part of the re-rendered email (Swedish: the subscriber's locale).
    [sent] = admin.transport.sent
    text_part = sent.as_message().get_body(("plain",))
    assert text_part is not None
    first_line = text_part.get_content().strip().splitlines()[0]
    assert first_line.replace("&", "&amp;") in html
    assert "re-rendering" in html
    # The HTML part: in a sandboxed iframe, as an escaped srcdoc, under the
    # app's CSP (which a srcdoc document inherits).
    frame = re.search(r"<iframe ([^>]*)>", html)
    assert frame is not None
    assert re.search(r"\bsandbox\b(?!=)", frame.group(1))
    srcdoc = re.search(r'srcdoc="([^"]*)"', frame.group(1))
    assert srcdoc is not None and "&lt;" in srcdoc.group(1) and "<" not in srcdoc.group(1)
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp
    # In the list, the latest event is the click.
    listed = admin.client.get("/admin/sends").text
    assert "clicked" in listed


def test_the_detail_says_why_when_the_version_is_gone(admin: AdminApp) -> None:
    send_id = _dispatched(admin, "karin@example.com")
    with admin.engine.begin() as conn:
        conn.execute(update(SEND).values(sequence_version="gone0000", status="failed"))
    page = admin.client.get(f"/admin/sends/{send_id}")
    assert page.status_code == 200
    assert "version gone0000 of sales-process is no longer stored" in page.text
    assert admin.client.get("/admin/sends/999999").status_code == 404


def test_the_api_lists_with_cursors_and_shows_one_send(admin: AdminApp) -> None:
    send_id = _dispatched(admin, "karin@example.com")
    _ledger(admin, [{"decided_at": NOW - timedelta(minutes=n + 1)} for n in range(7)])
    _event(admin, send_id, "delivered", NOW + timedelta(minutes=1))
    headers = _token(admin)
    first = admin.client.get("/admin/api/sends", params={"limit": 5}, headers=headers).json()
    assert len(first["sends"]) == 5 and first["newer_cursor"] is None
    assert first["sends"][0]["id"] == send_id
    assert first["sends"][0]["latest_event"]["kind"] == "delivered"
    second = admin.client.get(
        "/admin/api/sends", params={"limit": 5, "cursor": first["next_cursor"]}, headers=headers
    ).json()
    assert len(second["sends"]) == 3 and second["next_cursor"] is None
    filtered = admin.client.get(
        "/admin/api/sends", params={"email": "KARIN@example.com"}, headers=headers
    ).json()
    assert [line["id"] for line in filtered["sends"]] == [send_id]
    one = admin.client.get(f"/admin/api/sends/{send_id}", headers=headers)
    assert one.status_code == 200
    body = one.json()
    assert body["email"] == "karin@example.com" and body["status"] == "sent"
    assert [event["kind"] for event in body["events"]] == ["delivered"]
    assert body["rendering"]["problem"] is None and body["rendering"]["text"]
    with admin.engine.connect() as conn:
        stored = conn.execute(select(SUBSCRIBER.c.email)).scalars().all()
    assert "karin@example.com" in stored
