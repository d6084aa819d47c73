"""/admin (the dashboard) over a known set of sends, events, enrollments and
worker ticks: today and this week in the admin's zone, the queue, the
workers, the 7-day rates against the 0.1 % / 0.3 % lines; and the
complaint-rate pause (``complaint_pause_rate``)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert, select, update
from sqlalchemy.engine import Engine

from nurture.audience.complaints import ComplaintLimit
from nurture.audience.provider_events import apply_sendgrid_events
from nurture.audience.subscribers import add_subscriber
from nurture.audience.tokens import create_token
from nurture.store import heartbeat, queries
from nurture.store.db import session_factory
from nurture.store.tables import EnrollmentRow, EventRow, SendRow, SubscriberRow
from nurture.transports.sendgrid_events import read_events
from tests.admin_kit import NOW, AdminApp
from tests.integration.test_webhook_sendgrid import NOW as WEBHOOK_NOW
from tests.integration.test_webhook_sendgrid import event as webhook_event
from tests.integration.test_webhook_sendgrid import make_world

SEND = SendRow.__table__  # type: ignore[attr-defined]
EVENT = EventRow.__table__  # type: ignore[attr-defined]
ENROLLMENT = EnrollmentRow.__table__  # type: ignore[attr-defined]
SUBSCRIBER = SubscriberRow.__table__  # type: ignore[attr-defined]
XSS = "<script>alert(1)</script>"
SEQ = "sales-process"

# NOW is Friday 2026-11-27 14:30 UTC, 15:30 in Stockholm (UTC+1): the admin's
# day began at 2026-11-26 23:00 UTC and their week (Monday) at 2026-11-22 23:00 UTC.
STOCKHOLM_MIDNIGHT = datetime(2026, 11, 26, 23, 0, tzinfo=NOW.tzinfo)
STOCKHOLM_MONDAY = datetime(2026, 11, 22, 23, 0, tzinfo=NOW.tzinfo)
SECOND = timedelta(seconds=1)
WARNING_BOX = '<div class="warning"'
DANGER_BOX = '<div class="danger-box"'


def subscriber(admin: AdminApp, email: str, name: str = "") -> tuple[int, int]:
    """A subscriber enrolled in the example sequence: (subscriber id, enrollment id)."""
    with session_factory(admin.engine)() as session:
        row, enrollments = add_subscriber(
            session, email=email, name=name, tags=["b2b"], consent_source="test", now=NOW,
            sequences=admin.runtime.registry.sequences(),
        )  # fmt: skip
        session.commit()
        assert row.id is not None and enrollments[0].id is not None
        return row.id, enrollments[0].id


def sends(
    admin: AdminApp, rows: list[tuple[str, datetime]], *, sequence: str = SEQ, who: str = "s"
) -> list[str]:
    """Ledger rows (status, decided at) of one subscriber; their keys."""
    subscriber_id, enrollment_id = subscriber(admin, f"{who}-{sequence}@example.com")
    values = [
        {
            "key": f"{who}{sequence}{n}"[:32], "enrollment_id": enrollment_id,
            "subscriber_id": subscriber_id, "sequence_id": sequence, "sequence_version": "v1",
            "step_id": f"step-{n}", "status": status, "due_at": decided, "decided_at": decided,
            "sent_at": decided if status == "sent" else None, "attempts": 1,
            "subject": f"Hello {XSS}",
        }
        for n, (status, decided) in enumerate(rows)
    ]  # fmt: skip
    with admin.engine.begin() as conn:
        conn.execute(insert(SEND), values)
    return [str(value["key"]) for value in values]


def events(admin: AdminApp, kind: str, count: int, *, at: datetime, sequence: str = SEQ) -> None:
    values = [
        {
            "provider_event_id": f"{kind}-{sequence}-{at.isoformat()}-{n}", "kind": kind,
            "sequence_id": sequence, "occurred_at": at, "received_at": at, "payload": {},
            "machine": False,
        }
        for n in range(count)
    ]  # fmt: skip
    if values:
        with admin.engine.begin() as conn:
            conn.execute(insert(EVENT), values)


def test_today_and_this_week_start_in_the_admins_zone(admin: AdminApp) -> None:
    sends(
        admin,
        [
            ("sent", STOCKHOLM_MIDNIGHT),  # today (in UTC, still yesterday)
            ("sent", NOW),  # today
            ("failed", NOW - timedelta(hours=1)),  # today
            ("sent", STOCKHOLM_MIDNIGHT - SECOND),  # yesterday: this week only
            ("unknown", STOCKHOLM_MONDAY),  # Monday 00:00: this week
            ("sent", STOCKHOLM_MONDAY - SECOND),  # Sunday: last week
        ],
    )
    page = admin.client.get("/admin")
    assert page.status_code == 200
    assert '<td class="num" id="today-total">3</td>' in page.text
    assert '<td class="num" id="week-total">5</td>' in page.text
    assert '<tr><td>sent</td><td class="num">2</td><td class="num">3</td></tr>' in page.text
    assert '<tr><td>failed</td><td class="num">1</td><td class="num">1</td></tr>' in page.text
    assert '<tr><td>unknown</td><td class="num">0</td><td class="num">1</td></tr>' in page.text
    with session_factory(admin.engine)() as session:
        token = create_token(session, "ops", "admin", NOW).token
        session.commit()
    auth = {"Authorization": f"Bearer {token}"}
    stockholm = admin.anonymous().get("/admin/api/dashboard?zone=Europe/Stockholm", headers=auth)
    body = stockholm.json()
    assert body["today"]["since"] == STOCKHOLM_MIDNIGHT.isoformat()
    assert body["today"]["by_status"]["sent"] == 2
    assert sum(body["week"]["by_status"].values()) == 5
    # In UTC the day starts an hour later: the send at Stockholm's midnight is yesterday's.
    utc = admin.anonymous().get("/admin/api/dashboard", headers=auth).json()
    assert utc["today"]["by_status"]["sent"] == 1


def test_the_queue_now_and_within_the_next_hour(admin: AdminApp) -> None:
    due = {"now@example.com": NOW - timedelta(minutes=5), "exactly@example.com": NOW}
    due |= {"soon@example.com": NOW + timedelta(minutes=59)}
    due |= {"hour@example.com": NOW + timedelta(hours=1)}
    due |= {"later@example.com": NOW + timedelta(hours=1, seconds=1)}
    for email, at in due.items():
        _, enrollment_id = subscriber(admin, email)
        with admin.engine.begin() as conn:
            conn.execute(
                update(ENROLLMENT).where(ENROLLMENT.c.id == enrollment_id).values(next_due_at=at)
            )
    _, done = subscriber(admin, "done@example.com")  # due, but no longer active
    with admin.engine.begin() as conn:
        conn.execute(
            update(ENROLLMENT)
            .where(ENROLLMENT.c.id == done)
            .values(status="completed", next_due_at=NOW - timedelta(hours=1))
        )
    page = admin.client.get("/admin")
    assert '<dd id="due-now">2</dd>' in page.text
    assert '<dd id="due-next-hour">2</dd>' in page.text


def test_each_workers_last_tick_and_a_late_one(admin: AdminApp) -> None:
    with admin.engine.begin() as conn:
        heartbeat.record_tick(conn, "worker-fresh", NOW - timedelta(seconds=10), None)
        heartbeat.record_tick(conn, "worker-stale", NOW - timedelta(minutes=10), f"Boom {XSS}")
    page = admin.client.get("/admin").text
    assert "worker-fresh" in page and "10 s</td>" in page
    assert "600 s — late" in page
    assert "Boom &lt;script&gt;" in page and XSS not in page


@pytest.mark.parametrize(
    ("complaints", "box"),
    [(0, None), (1, WARNING_BOX), (2, WARNING_BOX), (3, DANGER_BOX)],
)
def test_the_complaint_rate_against_the_lines(
    admin: AdminApp, complaints: int, box: str | None
) -> None:
    sends(admin, [("sent", NOW - timedelta(days=1))] * 1000)
    sends(admin, [("sent", NOW - timedelta(days=8))] * 1000, who="old")  # outside the 7 days
    events(admin, "complained", complaints, at=NOW - timedelta(hours=2))
    events(admin, "complained", 5, at=NOW - timedelta(days=8))  # outside the 7 days
    page = admin.client.get("/admin").text
    rate = f"{complaints / 10:.2f}%"
    assert f'<td class="num">{rate}</td>' in page
    warning = f"Complaint rate {rate} over the last 7 days is at or above"
    if box is None:
        assert warning not in page
        assert WARNING_BOX not in page and DANGER_BOX not in page
    else:
        assert f"{box} role=" in page and warning in page
        assert ("0.30%</strong>" in page) == (box == DANGER_BOX)


def test_the_bounce_rate_is_bounces_per_sent_email(admin: AdminApp) -> None:
    sends(admin, [("sent", NOW - timedelta(days=1))] * 200 + [("failed", NOW)] * 50)
    events(admin, "bounced", 1, at=NOW - timedelta(hours=1))
    page = admin.client.get("/admin").text
    assert "Bounce rate 0.50% over the last 7 days is at or above 0.30%" in page
    assert "1 / 200" in page


def _complaint(key: str, n: int) -> dict[str, object]:
    return {
        "event": "spamreport", "email": "someone@example.com", "sg_event_id": f"spam-{key}-{n}",
        "timestamp": int(NOW.timestamp()) - 60, "nurture_send_id": key,
    }  # fmt: skip


def _report(admin: AdminApp, keys: list[str], limit: ComplaintLimit) -> list[str]:
    with session_factory(admin.engine)() as session:
        applied = apply_sendgrid_events(
            session,
            read_events([_complaint(key, n) for n, key in enumerate(keys)]),
            now=NOW,
            complaint_limit=limit,
        )
        session.commit()
    return applied.paused


def _paused(admin: AdminApp) -> dict[str, str]:
    with admin.engine.connect() as conn:
        return queries.paused_sequences(conn)


def test_complaints_pause_a_sequence_at_the_rate(
    admin: AdminApp, caplog: pytest.LogCaptureFixture
) -> None:
    keys = sends(admin, [("sent", NOW - timedelta(days=2))] * 1000)
    limit = ComplaintLimit(rate=0.003, min_sends=1000)
    caplog.set_level(logging.WARNING, logger="nurture.audience.complaints")
    assert _report(admin, keys[:2], limit) == []  # 0.2 %: below the rate
    assert _paused(admin) == {}
    assert _report(admin, keys[2:3], limit) == [SEQ]  # 0.3 %: paused
    reason = _paused(admin)[SEQ]
    assert reason.startswith("complaint rate 0.30% over 1,000 sends in 7 days ≥ 0.30%")
    assert _report(admin, keys[3:4], limit) == []  # already paused: no second pause
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"sequence {SEQ} paused by its complaint rate: {reason}"]
    # The dispatcher holds it: a new subscriber's welcome is not sent.
    subscriber(admin, "new@example.com")
    admin.runtime.dispatcher.dispatch(NOW)
    assert admin.transport.sent == []
    # The dashboard says so, with the reason.
    page = admin.client.get("/admin").text
    assert "complaint rate 0.30% over 1,000 sends in 7 days" in page
    assert "Paused sequences" in page


def test_no_pause_below_the_minimum_number_of_sends(admin: AdminApp) -> None:
    keys = sends(admin, [("sent", NOW - timedelta(days=2))] * 999)
    sends(admin, [("sent", NOW - timedelta(days=9))] * 10, who="old")  # before the window
    limit = ComplaintLimit(rate=0.003, min_sends=1000)
    assert _report(admin, keys[:10], limit) == []  # 1 %, but over 999 sends
    assert _paused(admin) == {}
    assert _report(admin, keys[10:20], ComplaintLimit(rate=0.0, min_sends=1)) == []  # off
    assert _paused(admin) == {}
    assert _report(admin, keys[20:21], ComplaintLimit(rate=0.003, min_sends=999)) == [SEQ]


def test_the_sendgrid_webhook_pauses_by_the_settings(engine: Engine, tmp_path: Path) -> None:
    for world in make_world(
        engine, tmp_path, complaint_pause_rate=0.5, complaint_pause_min_sends=2
    ):
        world.add("a@example.com", "b@example.com")
        world.runtime.dispatcher.dispatch(WEBHOOK_NOW)
        spam = [
            webhook_event("spamreport", "a@example.com", "spam-a",
                          nurture_send_id=world.key("a@example.com")),
        ]  # fmt: skip
        assert world.post(spam).status_code == 200
        with engine.connect() as conn:
            paused = queries.paused_sequences(conn)
        assert paused["hooks"].startswith("complaint rate 50.00% over 2 sends in 7 days ≥ 50.00%")


def test_subscriber_data_and_reasons_are_escaped(admin: AdminApp) -> None:
    sends(admin, [("sent", NOW)], sequence=SEQ, who="x")
    with admin.engine.begin() as conn:
        queries.pause_sequence(conn, SEQ, f"because {XSS}", NOW)
        conn.execute(update(SUBSCRIBER).values(name=XSS))
    page = admin.client.get("/admin").text
    assert XSS not in page
    assert "because &lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_anonymous_requests_are_turned_away(admin: AdminApp) -> None:
    anonymous = admin.anonymous()
    page = anonymous.get("/admin", follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"] == "/admin/login?next=/admin"
    assert anonymous.get("/admin/api/dashboard").status_code == 401
    bad = anonymous.get("/admin/api/dashboard", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401


def test_the_json_api_has_the_pages_numbers(admin: AdminApp) -> None:
    sends(admin, [("sent", NOW - timedelta(days=1))] * 1000)
    events(admin, "complained", 3, at=NOW - timedelta(hours=1))
    with admin.engine.begin() as conn:
        heartbeat.record_tick(conn, "w1", NOW - timedelta(seconds=30), None)
    with session_factory(admin.engine)() as session:
        token = create_token(session, "ops", "admin", NOW).token
        session.commit()
    body = (
        admin.anonymous()
        .get("/admin/api/dashboard", headers={"Authorization": f"Bearer {token}"})
        .json()
    )
    complaints = body["rates_7_days"]["complaints"]
    assert (complaints["count"], complaints["sends"], complaints["level"]) == (3, 1000, "danger")
    assert complaints["rate"] == pytest.approx(0.003)
    assert body["workers"][0]["worker_id"] == "w1" and body["workers"][0]["age_seconds"] == 30
    assert body["rates_7_days"]["sequences"][0]["sequence_id"] == SEQ
    with admin.engine.connect() as conn:
        assert conn.execute(select(SEND.c.id)).first() is not None
