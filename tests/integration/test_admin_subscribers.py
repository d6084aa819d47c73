"""/admin/subscribers: search, the explain timeline after real dispatch passes,
and the actions (unsubscribe, export, erase, preview), over the example sequence.

The example (sequences/sales-process.yaml): welcome at once; three-models 2 days
later at 09:30 (Friday's enrollment makes that a Sunday: moved to Monday);
choosing 2 days on; case-study 3 days on, only when 'customer' is not a tag;
the offer 4 days on. Weekdays 08:00-18:00 in the subscriber's zone.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import select
from sqlalchemy.engine import Engine

from nurture.audience.events import record_event
from nurture.audience.subscribers import add_subscriber
from nurture.audience.tokens import create_token
from nurture.core.simulation import simulate
from nurture.core.subscriber import Subscriber
from nurture.core.vocabulary import EventKind
from nurture.store import queries
from nurture.store.db import session_factory
from nurture.store.tables import AdminActionRow, SubscriberRow
from tests.admin_kit import NOW, AdminApp, csrf_of, log_in
from tests.factories import OFFER, sequence_dict

STOCKHOLM = ZoneInfo("Europe/Stockholm")
HOSTILE = "<script>alert(1)</script>"


def add(
    admin: AdminApp, email: str, name: str = "Karin Lindqvist", tags: tuple[str, ...] = ("b2b",)
) -> int:
    with session_factory(admin.engine)() as session:
        row, enrolled = add_subscriber(
            session, email=email, name=name, tz="Europe/Stockholm", locale="sv", tags=tags,
            consent_source="signup form", consent_ip="192.0.2.7", now=admin.clock(),
            sequences=admin.runtime.registry.sequences(),
        )  # fmt: skip
        assert enrolled and row.id is not None
        session.commit()
        return row.id


def dispatch(admin: AdminApp, at: datetime) -> None:
    admin.clock.instant = at
    admin.runtime.dispatcher.dispatch(at)


def dispatch_until(admin: AdminApp, until: datetime) -> None:
    """Passes at each next due time before ``until`` (as the worker would)."""
    while True:
        with admin.engine.connect() as conn:
            due = queries.next_due_time(conn)
        if due is None or due >= until:
            break
        dispatch(admin, due)
    admin.clock.instant = until


def token(admin: AdminApp) -> dict[str, str]:
    with session_factory(admin.engine)() as session:
        made = create_token(session, "admin-tests", "admin", NOW)
        session.commit()
    return {"Authorization": f"Bearer {made.token}"}


def explain(admin: AdminApp, subscriber_id: int, headers: dict[str, str]) -> dict[str, Any]:
    answer = admin.client.get(f"/admin/api/subscribers/{subscriber_id}/explain", headers=headers)
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()
    return data


def steps_of(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    [enrollment] = data["enrollments"]
    return {line["step"]: line for line in enrollment["steps"]}


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def actions(engine: Engine) -> list[AdminActionRow]:
    with session_factory(engine)() as session:
        return list(session.exec(select(AdminActionRow).order_by(AdminActionRow.id)).scalars())  # type: ignore[call-overload]


def test_the_timeline_explains_sends_waits_weekends_and_skipped_conditions(
    admin: AdminApp,
) -> None:
    sid = add(admin, "karin@example.com", tags=("b2b", "customer"))
    dispatch(admin, NOW)  # Friday 15:30 in Stockholm: the welcome goes out
    headers = token(admin)
    steps = steps_of(explain(admin, sid, headers))
    assert list(steps) == ["welcome", "three-models", "choosing", "case-study", "offer"]
    assert steps["welcome"]["state"] == "sent"
    assert utc(steps["welcome"]["at"]) == NOW
    assert "no wait after enrollment" in steps["welcome"]["timing"]
    # The next step: the due time the core computes (simulate's, from enrollment).
    loaded = admin.runtime.registry.sequences()["sales-process"]
    view = Subscriber(
        "karin@example.com", "Karin Lindqvist", locale="sv", timezone="Europe/Stockholm",
        tags=("b2b", "customer"),
    )  # fmt: skip
    simulated = simulate(loaded.sequence, view, NOW)
    nxt = steps["three-models"]
    assert nxt["state"] == "pending" and not nxt["projected"]
    assert utc(nxt["at"]) == simulated[1].at.astimezone(UTC)
    assert simulated[1].at == datetime(2026, 11, 30, 9, 30, tzinfo=STOCKHOLM)
    # Why Monday: the weekend moved it.
    assert "wait 2 days, at 09:30 after 'welcome' was due" in nxt["timing"]
    assert "moved from Sun 2026-11-29 09:30 to Mon 2026-11-30 09:30" in nxt["timing"]
    assert "Sun is not a sending day" in nxt["timing"]
    # Later steps are projections, each at simulate's time.
    assert steps["choosing"]["projected"] and steps["choosing"]["state"] == "would send"
    assert utc(steps["choosing"]["at"]) == simulated[2].at.astimezone(UTC)
    assert steps["case-study"]["state"] == "would skip"
    data = explain(admin, sid, headers)
    assert utc(data["enrollments"][0]["next_due_at"]) == simulated[1].at.astimezone(UTC)

    # Real passes up to the offer: case-study's `when` is false for a customer.
    dispatch_until(admin, simulated[3].at.astimezone(UTC) + timedelta(minutes=1))
    steps = steps_of(explain(admin, sid, headers))
    assert [steps[s]["state"] for s in ("welcome", "three-models", "choosing")] == ["sent"] * 3
    assert utc(steps["three-models"]["at"]) == simulated[1].at.astimezone(UTC)
    assert "Sun is not a sending day" in steps["three-models"]["timing"]  # still explained
    skipped = steps["case-study"]
    assert skipped["state"] == "skipped" and not skipped["projected"]
    assert "condition \"'customer' not in subscriber.tags\" is false" in skipped["why"]
    assert steps["offer"]["state"] == "pending"
    assert utc(steps["offer"]["at"]) == simulated[4].at.astimezone(UTC)

    log_in(admin.client)  # days have passed: the morning's session has expired
    page = admin.client.get(f"/admin/subscribers/{sid}")
    assert page.status_code == 200
    assert "skipped" in page.text and "is false" in page.text
    assert "Sun is not a sending day" in page.text
    # Both zones: the subscriber's and the admin's (ana's is Stockholm too; the
    # page labels both columns).
    assert "When (theirs)" in page.text and "When (yours)" in page.text
    assert "192.0.2.7" in page.text and "signup form" in page.text  # the consent record


def test_unsubscribing_on_the_page_ends_the_enrollment_and_is_recorded(admin: AdminApp) -> None:
    sid = add(admin, "ola@example.com", name="Ola Berg")
    dispatch(admin, NOW)
    page = admin.client.get(f"/admin/subscribers/{sid}")
    without = admin.client.post(f"/admin/subscribers/{sid}/unsubscribe", data={"sequence": ""})
    assert without.status_code == 403
    answer = admin.client.post(
        f"/admin/subscribers/{sid}/unsubscribe",
        data={"csrf": csrf_of(page.text), "sequence": ""},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/admin/subscribers/{sid}?notice=unsubscribed"
    shown = admin.client.get(answer.headers["location"])
    assert "Unsubscribed from all email" in shown.text
    # The status is named once, and the button that can no longer change anything is gone.
    assert '<span class="status">unsubscribed</span> (admin)</dd>' in shown.text
    assert "Unsubscribe from all email</button>" in page.text
    assert "Unsubscribe from all email</button>" not in shown.text
    data = explain(admin, sid, token(admin))
    [enrollment] = data["enrollments"]
    assert (enrollment["status"], enrollment["status_reason"]) == ("exited", "unsubscribed (admin)")
    steps = steps_of(data)
    assert steps["welcome"]["state"] == "sent"
    assert steps["three-models"]["state"] == "not reached"
    assert steps["three-models"]["why"] == "the enrollment ended first (exited)"
    action = actions(admin.engine)[0]
    assert (action.admin, action.action, action.target) == (
        "ana",
        "unsubscribe",
        f"subscriber #{sid}",
    )
    again = admin.client.post(
        f"/admin/subscribers/{sid}/unsubscribe",
        data={"csrf": csrf_of(page.text), "sequence": ""},
        follow_redirects=False,
    )
    assert again.headers["location"] == f"/admin/subscribers/{sid}?notice=unchanged"
    sent = len(admin.transport.sent)
    admin.runtime.dispatcher.dispatch(NOW + timedelta(days=10))
    assert len(admin.transport.sent) == sent  # nothing more goes out


def test_a_purchase_that_meets_the_goal_ends_the_timeline(admin: AdminApp) -> None:
    sid = add(admin, "buyer@example.com")
    dispatch(admin, NOW)
    bought = NOW + timedelta(hours=2)
    with admin.engine.begin() as conn:
        record_event(
            conn, kind=EventKind.PURCHASED, subscriber_id=sid, occurred_at=bought,
            received_at=bought, product="sales-audit",
        )  # fmt: skip
    admin.clock.instant = bought
    headers = token(admin)
    before = steps_of(explain(admin, sid, headers))  # decided, not yet dispatched
    assert before["three-models"]["state"] == "not reached"
    assert (
        "leaves at the next pass: goal reached: purchased sales-audit"
        in (before["three-models"]["why"])
    )
    dispatch(admin, bought)
    data = explain(admin, sid, headers)
    [enrollment] = data["enrollments"]
    assert enrollment["status"] == "converted" and enrollment["next_due_at"] is None
    assert enrollment["status_reason"] == "goal reached: purchased sales-audit"
    steps = steps_of(data)
    assert steps["welcome"]["state"] == "sent"
    assert steps["offer"]["why"] == "the enrollment ended first (converted)"


def test_times_are_shown_in_the_subscribers_zone_and_the_admins(admin: AdminApp) -> None:
    with session_factory(admin.engine)() as session:
        row, _ = add_subscriber(
            session, email="jamie@example.com", name="Jamie Doe", tz="America/New_York",
            tags=["b2b"], consent_source="test", now=NOW,
            sequences=admin.runtime.registry.sequences(),
        )  # fmt: skip
        session.commit()
        sid = row.id
    dispatch(admin, NOW)
    page = admin.client.get(f"/admin/subscribers/{sid}")
    # Monday 09:30 in New York (three-models), which is 15:30 in Stockholm (ana's).
    assert "2026-11-30 09:30 EST" in page.text and "2026-11-30 15:30 CET" in page.text


def test_unsubscribing_from_one_sequence_leaves_the_address_mailable(admin: AdminApp) -> None:
    sid = add(admin, "one@example.com")
    page = admin.client.get(f"/admin/subscribers/{sid}")
    answer = admin.client.post(
        f"/admin/subscribers/{sid}/unsubscribe",
        data={"csrf": csrf_of(page.text), "sequence": "sales-process"},
        follow_redirects=False,
    )
    assert answer.headers["location"] == f"/admin/subscribers/{sid}?notice=left"
    data = explain(admin, sid, token(admin))
    assert data["subscriber"]["status"] == "active" and data["subscriber"]["suppressed"] is None
    assert data["enrollments"][0]["status_reason"] == "unsubscribed from this sequence (admin)"
    assert [a.detail["sequence"] for a in actions(admin.engine)] == ["sales-process"]


def test_erasing_needs_the_address_typed(admin: AdminApp) -> None:
    sid = add(admin, "erase.me@example.com")
    confirm = admin.client.get(f"/admin/subscribers/{sid}/erase")
    assert confirm.status_code == 200 and "Type the subscriber" in confirm.text
    csrf = csrf_of(confirm.text)
    assert admin.client.post(
        f"/admin/subscribers/{sid}/erase", data={"email": "erase.me@example.com"}
    ).status_code == 403  # fmt: skip
    wrong = admin.client.post(
        f"/admin/subscribers/{sid}/erase",
        data={"csrf": csrf, "email": "someone.else@example.com"},
        follow_redirects=False,
    )
    assert wrong.status_code == 303 and wrong.headers["location"].endswith("?error=mismatch")
    assert "does not match" in admin.client.get(wrong.headers["location"]).text
    assert admin.client.get(f"/admin/subscribers/{sid}").status_code == 200  # still there
    done = admin.client.post(
        f"/admin/subscribers/{sid}/erase",
        data={"csrf": csrf, "email": "Erase.Me@example.com"},
        follow_redirects=False,
    )
    assert (
        done.status_code == 303 and done.headers["location"] == "/admin/subscribers?notice=erased"
    )
    assert "was erased" in admin.client.get(done.headers["location"]).text
    assert admin.client.get(f"/admin/subscribers/{sid}").status_code == 404
    again = admin.client.post(
        f"/admin/subscribers/{sid}/erase", data={"csrf": csrf, "email": "erase.me@example.com"}
    )
    assert again.status_code == 404
    with session_factory(admin.engine)() as session:
        assert session.get(SubscriberRow, sid) is None
    [action] = actions(admin.engine)
    assert action.action == "erase" and "erase.me" not in action.target + str(action.detail)


def test_export_downloads_their_data_and_is_recorded(admin: AdminApp) -> None:
    sid = add(admin, "karin@example.com")
    answer = admin.client.get(f"/admin/subscribers/{sid}/export")
    assert answer.status_code == 200
    assert answer.headers["content-disposition"].startswith("attachment;")
    assert answer.json()["subscriber"]["email"] == "karin@example.com"
    assert [a.action for a in actions(admin.engine)] == ["export"]


def test_preview_renders_a_step_for_this_subscriber(admin: AdminApp) -> None:
    sid = add(admin, "karin@example.com")
    page = admin.client.get(f"/admin/subscribers/{sid}/preview/sales-process/welcome")
    assert page.status_code == 200
    assert "Välkommen, Karin!" in page.text  # their name, their locale
    assert "<iframe sandbox srcdoc=" in page.text
    offer = admin.client.get(f"/admin/subscribers/{sid}/preview/sales-process/offer")
    assert "Säljprocessanalys" in offer.text
    missing = admin.client.get(f"/admin/subscribers/{sid}/preview/sales-process/nope")
    assert missing.status_code == 200 and "no step &#39;nope&#39;" in missing.text
    unknown = admin.client.get(f"/admin/subscribers/{sid}/preview/no-such/welcome")
    assert unknown.status_code == 200 and "no valid sequence" in unknown.text


def test_a_step_that_cannot_render_for_this_subscriber_is_a_message(admin: AdminApp) -> None:
    # A sequence whose template needs an attribute: its samples have it, so it
    # validates and loads; a subscriber without it cannot be rendered.
    folder = admin.settings.sequences_dir
    data = sequence_dict(
        id="plans", trigger={"event": "subscribed", "tags": ["plans"]},
        steps=[{"id": "only", "wait": 0, "subject": "Hi", "template": "plan.md",
                "offer": dict(OFFER)}],
    )  # fmt: skip
    (folder / "plans.yaml").write_text(json.dumps(data), encoding="utf-8")
    sample = [{"email": "s@example.com", "name": "Sam", "attributes": {"plan": "pro"}}]
    (folder / "plans.sample.yaml").write_text(json.dumps(sample), encoding="utf-8")
    (admin.settings.templates_dir / "en" / "plan.md").write_text(
        "Your plan: {{ subscriber.attributes.plan.upper() }}. [Buy]({{ offer.url }})\n",
        encoding="utf-8",
    )
    assert admin.runtime.registry.reload(force=True) == []
    sid = add(admin, "karin@example.com")
    page = admin.client.get(f"/admin/subscribers/{sid}/preview/plans/only")
    assert page.status_code == 200
    assert "could not render" in page.text and "<iframe" not in page.text


def test_subscriber_data_is_escaped_on_every_page(admin: AdminApp) -> None:
    sid = add(admin, "hostile@example.com", name=HOSTILE)
    dispatch(admin, NOW)
    for path in (
        "/admin/subscribers?q=hostile",
        f"/admin/subscribers/{sid}",
        f"/admin/subscribers/{sid}/erase",
        f"/admin/subscribers/{sid}/preview/sales-process/welcome",
    ):
        page = admin.client.get(path)
        assert page.status_code == 200, path
        assert HOSTILE not in page.text, path
        assert "&lt;script&gt;" in page.text, path


def test_search_is_a_prefix_match_and_hostile_input_finds_nothing(admin: AdminApp) -> None:
    add(admin, "karin@example.com")
    add(admin, "ola@example.com", name="Ola Berg")
    page = admin.client.get("/admin/subscribers", params={"q": "KAR"})
    assert "karin@example.com" in page.text and "ola@example.com" not in page.text
    by_name = admin.client.get("/admin/subscribers", params={"q": "ola b"})
    assert "ola@example.com" in by_name.text and "karin@example.com" not in by_name.text
    headers = token(admin)
    for hostile in ("' OR 1=1 --", "%", "_", '" OR ""="'):
        page = admin.client.get("/admin/subscribers", params={"q": hostile})
        assert page.status_code == 200
        assert "@example.com" not in page.text, hostile
        api = admin.client.get("/admin/api/subscribers", params={"q": hostile}, headers=headers)
        assert api.json()["subscribers"] == [], hostile
    every = admin.client.get("/admin/api/subscribers", headers=headers).json()
    assert [s["email"] for s in every["subscribers"]] == ["karin@example.com", "ola@example.com"]


def test_search_pages_by_keyset(admin: AdminApp) -> None:
    from nurture.admin.subscribers import search

    ids = [add(admin, f"p{n:02d}@example.com") for n in range(5)]
    first = search(admin.engine, "p", limit=2)
    assert [h.id for h in first.hits] == ids[:2] and first.next_after == ids[1]
    last = search(admin.engine, "p", after=ids[3], limit=2)
    assert [h.id for h in last.hits] == ids[4:] and last.next_after is None


def test_without_a_session_pages_redirect_and_the_api_needs_a_token(admin: AdminApp) -> None:
    sid = add(admin, "karin@example.com")
    anonymous = admin.anonymous()
    for path in (
        "/admin/subscribers",
        f"/admin/subscribers/{sid}",
        f"/admin/subscribers/{sid}/export",
        f"/admin/subscribers/{sid}/erase",
        f"/admin/subscribers/{sid}/preview/sales-process/welcome",
    ):
        answer = anonymous.get(path, follow_redirects=False)
        assert answer.status_code == 303, path
        assert answer.headers["location"].startswith("/admin/login"), path
    posted: httpx.Response = anonymous.post(
        f"/admin/subscribers/{sid}/unsubscribe", data={"sequence": ""}
    )
    assert posted.status_code == 403
    for path in ("/admin/api/subscribers?q=k", f"/admin/api/subscribers/{sid}/explain"):
        assert anonymous.get(path).status_code == 401, path
    assert actions(admin.engine) == []
