"""Funnels per sequence and step (``/admin/sequences``, their JSON, the
summary tables kept by triggers) and "Send me a test".

A real dispatch over the example sequence, then the provider's events, our
tracked clicks and purchases in two currencies through their services; the
figures must be exact, equal to a rebuild from the raw tables, and a test
send must leave them as they were. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import func, select

from nurture.admin import funnels
from nurture.app.worker import Worker
from nurture.audience.engagement import record_click, record_open
from nurture.audience.personal_data import erase_personal_data
from nurture.audience.provider_events import apply_sendgrid_events
from nurture.audience.purchases import purchase_input, record_purchase
from nurture.audience.subscribers import add_subscriber
from nurture.core.tokens import REF, sign
from nurture.store import funnels as store
from nurture.store.admins import recent_actions
from nurture.store.db import session_factory
from nurture.store.queries import SEND
from nurture.transports.sendgrid_events import read_events
from tests.admin_kit import ADMIN_EMAIL, NOW, AdminApp, csrf_of

STOCKHOLM = ZoneInfo("Europe/Stockholm")
FRIDAY = NOW  # 15:30 in Stockholm: the welcome goes out
MONDAY = datetime(2026, 11, 30, 9, 30, tzinfo=STOCKHOLM)  # three-models
LATER = MONDAY + timedelta(hours=2)
KEY = "test-secret-not-a-placeholder"
PEOPLE = ("alice", "bob", "carl")
HUMAN = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) AppleWebKit/605.1.15 Version/17.0 Safari"


def enroll_and_dispatch(admin: AdminApp) -> None:
    runtime = admin.runtime
    with session_factory(admin.engine)() as session:
        for name in PEOPLE:
            add_subscriber(
                session, email=f"{name}@example.com", name=name.title(), tz="Europe/Stockholm",
                locale="sv", tags=("b2b",), consent_source="test", now=FRIDAY,
                sequences=runtime.registry.sequences(),
            )  # fmt: skip
        session.commit()
    assert runtime.dispatcher.dispatch(FRIDAY).sent == 3
    assert runtime.dispatcher.dispatch(MONDAY).sent == 3
    admin.transport.clear()


def key_of(admin: AdminApp, name: str, step: str) -> str:
    with admin.engine.connect() as conn:
        return str(
            conn.execute(
                select(SEND.c.key)
                .where(SEND.c.step_id == step)
                .where(SEND.c.subscriber_id == subscriber_id(admin, name))
            ).scalar_one()
        )


def subscriber_id(admin: AdminApp, name: str) -> int:
    from nurture.audience.subscribers import get_subscriber

    with session_factory(admin.engine)() as session:
        row = get_subscriber(session, f"{name}@example.com")
        assert row is not None and row.id is not None
        return row.id


def sendgrid(admin: AdminApp, *events: dict[str, Any]) -> None:
    with session_factory(admin.engine)() as session:
        apply_sendgrid_events(session, read_events(list(events)), now=LATER)
        session.commit()


def event(kind: str, name: str, event_id: str, key: str, **more: Any) -> dict[str, Any]:
    return {
        "event": kind, "email": f"{name}@example.com", "sg_event_id": event_id,
        "timestamp": int(LATER.timestamp()), "nurture_send_id": key, **more,
    }  # fmt: skip


def buy(admin: AdminApp, key: str, order: str, amount: str, currency: str) -> None:
    purchase = purchase_input(
        source="checkout", order_id=order, product="sales-audit", amount=amount,
        currency=currency, occurred_at=LATER, ref=sign([KEY], REF, {"k": key}, now=LATER),
    )  # fmt: skip
    with admin.engine.begin() as conn:
        record_purchase(conn, purchase, keys=[KEY], attribution_window=timedelta(days=7), now=LATER)


def realistic_run(admin: AdminApp) -> None:
    """Six emails out, then what came back about them."""
    enroll_and_dispatch(admin)
    a, b, c = (key_of(admin, name, "welcome") for name in PEOPLE)
    sendgrid(
        admin,
        event("delivered", "alice", "d-a", a),
        event("delivered", "alice", "d-a-again", a),  # a second report of one delivery
        event("delivered", "bob", "d-b", b),
        event("delivered", "carl", "d-c", c),
        event("open", "alice", "o-a", a),
        event("open", "bob", "o-b", b, sg_machine_open=True),  # Apple's prefetch
        event("unsubscribe", "carl", "u-c", c),
    )
    at = LATER + timedelta(minutes=5)
    # Alice opens twice and clicks (a person); bob's email is clicked by a scanner.
    record_open(admin.engine, a, method="GET", user_agent=HUMAN, now=at)
    record_click(admin.engine, a, "https://example.com/a", method="GET", user_agent=HUMAN, now=at)
    record_click(
        admin.engine, b, "https://example.com/a", method="GET", user_agent="curl/8", now=at
    )
    # Carl clicks one link, then a second link within a second: a scanner's burst,
    # so the first click, counted when it came, is a machine's after all.
    record_click(admin.engine, c, "https://example.com/a", method="GET", user_agent=HUMAN, now=at)
    record_click(
        admin.engine, c, "https://example.com/b", method="GET", user_agent=HUMAN,
        now=at + timedelta(seconds=1),
    )  # fmt: skip
    buy(admin, a, "A-1", "19.99", "SEK")
    buy(admin, a, "A-2", "5.01", "SEK")
    buy(admin, key_of(admin, "bob", "three-models"), "B-1", "10.50", "EUR")


def welcome(funnel: funnels.SequenceFunnel, step: str = "welcome") -> funnels.StepFunnel:
    return next(s for s in funnel.steps if s.step_id == step)


def test_the_funnel_is_exact_after_a_real_run(admin: AdminApp) -> None:
    realistic_run(admin)
    funnel = funnels.sequence_funnel(
        admin.engine, admin.runtime.registry.sequences(), "sales-process"
    )
    assert funnel is not None
    first = welcome(funnel)
    assert (first.sent, first.unknown, first.delivered) == (3, 0, 3)
    assert first.opened == 1  # alice (twice, and by SendGrid and us); bob's was a machine
    assert first.clicked == 1  # alice; bob's scanner and carl's burst do not count
    assert first.conversions == 2
    assert first.revenue == {"SEK": Decimal("25.00")}
    assert first.delivered_rate == 1.0 and first.open_rate == pytest.approx(1 / 3)
    assert first.conversion_rate == pytest.approx(2 / 3)
    second = welcome(funnel, "three-models")
    assert (second.sent, second.delivered, second.opened, second.conversions) == (3, 0, 0, 1)
    assert second.revenue == {"EUR": Decimal("10.50")} and second.open_rate is None
    assert funnel.revenue == {"EUR": Decimal("10.50"), "SEK": Decimal("25.00")}
    assert [s.step_id for s in funnel.steps][:2] == ["welcome", "three-models"]
    assert all(s.sent == 0 for s in funnel.steps[2:])


def test_the_incremental_summary_equals_a_rebuild(admin: AdminApp) -> None:
    realistic_run(admin)
    # An erasure removes a person's sends and events, and unlinks their purchases.
    with session_factory(admin.engine)() as session:
        erase_personal_data(session, "carl@example.com", LATER)
        session.commit()
    with admin.engine.connect() as conn:
        incremental = (store.step_counts(conn), store.revenue(conn))
        raw = (store.raw_step_counts(conn), store.raw_revenue(conn))
    assert incremental == raw
    assert incremental[0] and incremental[1]
    funnels.rebuild_funnels(admin.engine)
    with admin.engine.connect() as conn:
        assert (store.step_counts(conn), store.revenue(conn)) == incremental


def test_a_summary_that_drifted_is_put_right_by_a_rebuild(admin: AdminApp) -> None:
    enroll_and_dispatch(admin)
    with admin.engine.begin() as conn:
        # Wherever the counters are (on PostgreSQL, partly in per-process deltas).
        conn.execute(store.FUNNEL_STEP.update().values(sent=99))
        conn.execute(store.FUNNEL_STEP_DELTA.update().values(sent=99))
    with admin.engine.connect() as conn:
        assert {c.step_id: c.sent for c in store.step_counts(conn)} != {
            "welcome": 3, "three-models": 3,
        }  # fmt: skip
    funnels.rebuild_funnels(admin.engine)
    with admin.engine.connect() as conn:
        assert {c.step_id: c.sent for c in store.step_counts(conn)} == {
            "welcome": 3, "three-models": 3,
        }  # fmt: skip


def test_the_workers_reconcile_folds_the_counters_and_no_figure_changes(
    admin: AdminApp,
) -> None:
    """PostgreSQL's per-process deltas (migration 0010) move into the summary;
    SQLite has none to move."""
    realistic_run(admin)
    with admin.engine.connect() as conn:
        before = store.step_counts(conn)
        deltas = conn.execute(select(func.count()).select_from(store.FUNNEL_STEP_DELTA)).scalar()
    assert (deltas > 0) == (admin.engine.dialect.name == "postgresql")
    Worker(admin.runtime).reconcile()
    with admin.engine.connect() as conn:
        assert store.step_counts(conn) == before == store.raw_step_counts(conn)
        left = conn.execute(select(func.count()).select_from(store.FUNNEL_STEP_DELTA)).scalar()
    assert left == 0


def test_a_fold_connects_only_where_there_are_deltas(admin: AdminApp) -> None:
    """Every reconcile folds: on SQLite that must not cost a connection."""
    realistic_run(admin)
    checkouts: list[object] = []

    def count(*_: object) -> None:
        checkouts.append(None)

    sa_event.listen(admin.engine, "checkout", count)
    try:
        moved = store.fold_all(admin.engine)
    finally:
        sa_event.remove(admin.engine, "checkout", count)
    if admin.engine.dialect.name == "postgresql":
        assert (len(checkouts), moved > 0) == (1, True)
    else:
        assert (len(checkouts), moved) == (0, 0)


def test_the_sequence_pages_show_the_funnel_chart_and_revenue(admin: AdminApp) -> None:
    realistic_run(admin)
    listing = admin.client.get("/admin/sequences")
    assert listing.status_code == 200
    assert 'href="/admin/sequences/sales-process"' in listing.text
    assert '<td class="num">6</td>' in listing.text  # emails sent
    page = admin.client.get("/admin/sequences/sales-process")
    assert page.status_code == 200
    assert '<svg xmlns="http://www.w3.org/2000/svg"' in page.text and 'role="img"' in page.text
    assert (
        'aria-label="Funnel of sales-process per step. welcome: 3 sent, 3 delivered, ' in page.text
    )
    assert "<title>welcome: 1 clicked</title>" in page.text
    assert "33.3%" in page.text  # opened / delivered
    assert "25.00 SEK" in page.text and "10.50 EUR" in page.text
    assert admin.client.get("/admin/sequences/no-such-thing").status_code == 404


def test_sequence_strings_are_escaped(admin: AdminApp) -> None:
    path = admin.settings.sequences_dir / "sales-process.yaml"
    text = path.read_text(encoding="utf-8")
    path.write_text(
        text.replace("\nname: ", '\nname: "<script>alert(1)</script>" #', 1), encoding="utf-8"
    )
    admin.runtime.registry.reload(force=True)
    assert admin.runtime.registry.sequences()["sales-process"].sequence.name.startswith("<script>")
    for url in (
        "/admin/sequences",
        "/admin/sequences/sales-process?test=sent&step=<script>alert(1)</script>",
    ):
        page = admin.client.get(url)
        assert page.status_code == 200
        assert "<script>alert(1)</script>" not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


def test_a_hostile_sequence_id_finds_nothing(admin: AdminApp) -> None:
    realistic_run(admin)
    hostile = "' OR 1=1 --"
    assert admin.client.get(f"/admin/sequences/{hostile}").status_code == 404
    assert funnels.sequence_funnel(admin.engine, {}, hostile) is None


def test_send_me_a_test_goes_to_the_admin_marked_and_out_of_the_funnel(admin: AdminApp) -> None:
    realistic_run(admin)
    with admin.engine.connect() as conn:
        before = (store.step_counts(conn), store.revenue(conn), conn.execute(select(SEND)).all())
    page = admin.client.get("/admin/sequences/sales-process")
    answer = admin.client.post(
        "/admin/sequences/sales-process/test",
        data={"csrf": csrf_of(page.text), "step": "three-models"},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    assert (
        answer.headers["location"] == "/admin/sequences/sales-process?test=sent&step=three-models"
    )
    [sent] = admin.transport.sent
    assert sent.to_email == ADMIN_EMAIL
    message = sent.as_message()
    assert message["Subject"].startswith("[Test] ")
    assert message["X-Nurture-Test"] == "1"
    assert message["To"].endswith(f"<{ADMIN_EMAIL}>") or message["To"] == ADMIN_EMAIL
    with admin.engine.connect() as conn:
        after = (store.step_counts(conn), store.revenue(conn), conn.execute(select(SEND)).all())
    assert after == before
    with session_factory(admin.engine)() as session:
        [action] = recent_actions(session)
        assert (action.admin, action.action, action.target) == (
            "ana", "test_send", "sales-process/three-models",
        )  # fmt: skip
    shown = admin.client.get(answer.headers["location"])
    assert "Test sent" in shown.text and ADMIN_EMAIL in shown.text


def test_a_test_without_the_forms_token_is_refused(admin: AdminApp) -> None:
    answer = admin.client.post(
        "/admin/sequences/sales-process/test",
        data={"csrf": "forged", "step": "welcome"},
        follow_redirects=False,
    )
    assert answer.status_code == 403
    assert admin.transport.sent == []


def test_the_json_api_needs_an_admin_token(admin: AdminApp) -> None:
    from nurture.audience.tokens import create_token

    realistic_run(admin)
    with session_factory(admin.engine)() as session:
        token = create_token(session, "ops", "admin", FRIDAY).token
        session.commit()
    client = admin.anonymous()
    assert client.get("/admin/api/sequences").status_code == 401
    assert client.get("/admin/api/sequences/sales-process/funnel").status_code == 401
    headers = {"Authorization": f"Bearer {token}"}
    [summary] = client.get("/admin/api/sequences", headers=headers).json()
    assert summary["sequence"] == "sales-process" and summary["sent"] == 6
    # Carl unsubscribed (his enrollment exited): two are still active.
    assert summary["paused"] is False and summary["active_enrollments"] == 2
    funnel = client.get("/admin/api/sequences/sales-process/funnel", headers=headers).json()
    assert funnel["revenue"] == {"EUR": "10.50", "SEK": "25.00"}
    assert funnel["steps"][0]["opened"] == 1 and funnel["steps"][0]["rates"]["delivered"] == 1.0


def test_anonymous_visitors_are_sent_to_the_login_page(admin: AdminApp) -> None:
    client = admin.anonymous()
    for url in ("/admin/sequences", "/admin/sequences/sales-process"):
        answer = client.get(url, follow_redirects=False)
        assert answer.status_code == 303
        assert answer.headers["location"].startswith("/admin/login")
    posted = client.post(
        "/admin/sequences/sales-process/test", data={"step": "welcome"}, follow_redirects=False
    )
    assert posted.status_code in (303, 401, 403)
    assert admin.transport.sent == []


def test_the_funnel_triggers_exist_at_head(admin: AdminApp) -> None:
    """A later revision that copies send, event or purchase must create them again."""
    with admin.engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            query = "SELECT name FROM sqlite_master WHERE type = 'trigger'"
        else:
            query = "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"
        names = {row[0] for row in conn.exec_driver_sql(query)}
    assert {
        "funnel_send_insert", "funnel_send_status", "funnel_send_delete", "funnel_event_insert",
        "funnel_event_update", "funnel_event_delete", "funnel_purchase_insert",
        "funnel_purchase_update", "funnel_purchase_delete", "funnel_mark_insert",
        "funnel_mark_delete",
    } <= names  # fmt: skip
