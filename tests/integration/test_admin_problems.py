"""/admin/problems: failed and unknown sends settled from the page exactly as
``nurture sends resolve`` settles them, paused sequences resumed as ``nurture
resume`` does, each action recorded; CSRF, escaping, access."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select, update

from nurture.audience.subscribers import add_subscriber
from nurture.audience.tokens import create_token
from nurture.errors import AmbiguousSendError, PermanentSendError
from nurture.sending.resolve import Resolution, resolve_sends
from nurture.store import queries
from nurture.store.db import session_factory
from nurture.store.tables import AdminActionRow, EnrollmentRow, SendRow, SubscriberRow
from tests.admin_kit import ADMIN, NOW, AdminApp, csrf_of

SEND = SendRow.__table__
ENROLLMENT = EnrollmentRow.__table__
SUBSCRIBER = SubscriberRow.__table__
XSS = "<script>alert(1)</script>"
LATER = NOW + timedelta(minutes=20)


def add(admin: AdminApp, email: str, name: str = "") -> None:
    with session_factory(admin.engine)() as session:
        add_subscriber(
            session, email=email, name=name, tags=["b2b"], consent_source="test", now=NOW,
            sequences=admin.runtime.registry.sequences(),
        )  # fmt: skip
        session.commit()


def welcome(admin: AdminApp, email: str, *errors: Exception, name: str = "") -> int:
    """``email`` enrolled and its welcome dispatched through ``errors``; its send id."""
    add(admin, email, name)
    admin.transport.fail_next(*errors)
    admin.runtime.dispatcher.dispatch(NOW)
    return row_of(admin, email)["id"]


def row_of(admin: AdminApp, email: str) -> dict[str, object]:
    """The welcome's ledger row and its enrollment's status and due time."""
    with admin.engine.connect() as conn:
        row = conn.execute(
            select(
                SEND.c.id, SEND.c.status, SEND.c.resolution, SEND.c.resolved_by,
                SEND.c.resolved_at, SEND.c.next_attempt_at,
                ENROLLMENT.c.status.label("enrollment"), ENROLLMENT.c.next_due_at,
            )
            .join(SUBSCRIBER, SUBSCRIBER.c.id == SEND.c.subscriber_id)
            .join(ENROLLMENT, ENROLLMENT.c.id == SEND.c.enrollment_id)
            .where(SUBSCRIBER.c.email == email, SEND.c.step_id == "welcome")
        ).one()  # fmt: skip
    return dict(row._mapping)


def actions(admin: AdminApp) -> list[tuple[str, str, str]]:
    with session_factory(admin.engine)() as session:
        rows = session.exec(select(AdminActionRow).order_by(AdminActionRow.id)).all()  # type: ignore[call-overload]
        return [(row.admin, row.action, row.target) for (row,) in rows]


def resolve_on_page(admin: AdminApp, send_id: int, resolution: str, why: str) -> httpx.Response:
    page = admin.client.get("/admin/problems")
    return admin.client.post(
        f"/admin/problems/sends/{send_id}/resolve",
        data={"csrf": csrf_of(page.text), "resolution": resolution, "why": why},
        follow_redirects=False,
    )


@pytest.mark.parametrize("resolution", list(Resolution))
def test_the_page_settles_an_unknown_send_as_the_cli_does(
    admin: AdminApp, resolution: Resolution
) -> None:
    on_page = welcome(admin, "page@example.com", AmbiguousSendError("timed out"))
    by_cli = welcome(admin, "cli@example.com", AmbiguousSendError("timed out"))
    listed = admin.client.get("/admin/problems")
    assert listed.status_code == 200
    assert f'id="send-{on_page}"' in listed.text and "timed out" in listed.text
    admin.clock.instant = LATER
    answer = resolve_on_page(admin, on_page, resolution.value, "checked SendGrid")
    assert answer.status_code == 303
    location = answer.headers["location"]
    assert location == f"/admin/problems?done={resolution.value}&send={on_page}"
    resolve_sends(
        admin.engine, [str(by_cli)], all_unknown=False, resolution=resolution,
        why="checked SendGrid", by=ADMIN, now=LATER,
    )  # fmt: skip
    page_row, cli_row = row_of(admin, "page@example.com"), row_of(admin, "cli@example.com")
    del page_row["id"], cli_row["id"]
    assert page_row == cli_row
    assert (
        page_row["status"]
        == {"as-sent": "sent", "resend": "retry", "give-up": "failed"}[resolution.value]
    )
    assert page_row["resolution"] == f"{resolution.value}: checked SendGrid"
    assert page_row["resolved_by"] == ADMIN and page_row["resolved_at"] == LATER
    assert actions(admin) == [
        (ADMIN, f"send {resolution.value}", f"send {on_page} (sales-process/welcome)")
    ]
    # What the redirect shows; the send left the list unless it failed for good.
    after = admin.client.get(location)
    assert f"Send {on_page}" in after.text
    assert (f'id="send-{on_page}"' in after.text) == (resolution is Resolution.GIVE_UP)


def test_a_resend_from_the_page_goes_out_once_more(admin: AdminApp) -> None:
    send_id = welcome(admin, "again@example.com", AmbiguousSendError("timed out"))
    assert admin.transport.sent == []
    admin.clock.instant = LATER
    assert resolve_on_page(admin, send_id, "resend", "not in the activity feed").status_code == 303
    admin.runtime.dispatcher.dispatch(LATER)
    admin.runtime.dispatcher.dispatch(LATER)
    assert [email.step_id for email in admin.transport.sent] == ["welcome"]


def test_without_the_csrf_token_nothing_changes(admin: AdminApp) -> None:
    send_id = welcome(admin, "a@example.com", AmbiguousSendError("timed out"))
    for csrf in ({}, {"csrf": "forged"}):
        data = {**csrf, "resolution": "as-sent", "why": "x"}
        answer = admin.client.post(
            f"/admin/problems/sends/{send_id}/resolve", data=data, follow_redirects=False
        )
        assert answer.status_code == 403
    with admin.engine.begin() as conn:
        queries.pause_sequence(conn, "sales-process", "paused for the test", NOW)
    answer = admin.client.post(
        "/admin/problems/resume", data={"sequence": "sales-process"}, follow_redirects=False
    )
    assert answer.status_code == 403
    assert row_of(admin, "a@example.com")["status"] == "unknown"
    with admin.engine.connect() as conn:
        assert "sales-process" in queries.paused_sequences(conn)
    assert actions(admin) == []


def test_a_refused_resolution_changes_nothing_and_says_why(admin: AdminApp) -> None:
    sent = welcome(admin, "fine@example.com")
    answer = resolve_on_page(admin, sent, "give-up", "oops")
    assert answer.status_code == 409
    assert "only unknown sends can be resolved" in answer.text
    unknown = welcome(admin, "b@example.com", AmbiguousSendError("timed out"))
    empty = resolve_on_page(admin, unknown, "as-sent", "   ")
    assert empty.status_code == 409 and "say why" in empty.text
    assert row_of(admin, "fine@example.com")["status"] == "sent"
    assert row_of(admin, "b@example.com")["status"] == "unknown"
    assert actions(admin) == []


def test_a_paused_sequence_is_resumed_from_the_page(admin: AdminApp) -> None:
    with admin.engine.begin() as conn:
        queries.pause_sequence(conn, "sales-process", f"complaints {XSS}", NOW)
    page = admin.client.get("/admin/problems")
    assert "complaints &lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert XSS not in page.text
    admin.clock.instant = LATER
    answer = admin.client.post(
        "/admin/problems/resume",
        data={"csrf": csrf_of(page.text), "sequence": "sales-process"},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/admin/problems?resumed=sales-process"
    with admin.engine.connect() as conn:
        assert queries.paused_sequences(conn) == {}
    assert actions(admin) == [(ADMIN, "sequence resume", "sales-process")]
    # Resumed: its emails go out again.
    add(admin, "after@example.com")
    admin.runtime.dispatcher.dispatch(LATER)
    assert [email.to_email for email in admin.transport.sent] == ["after@example.com"]
    # Resuming what is not paused is refused.
    again = admin.client.post(
        "/admin/problems/resume",
        data={"csrf": csrf_of(page.text), "sequence": "sales-process"},
        follow_redirects=False,
    )
    assert again.status_code == 409 and "is not paused" in again.text
    assert len(actions(admin)) == 1


def test_subscriber_data_is_escaped(admin: AdminApp) -> None:
    welcome(admin, "x@example.com", PermanentSendError(f"rejected {XSS}"), name=XSS)
    welcome(admin, "y@example.com", AmbiguousSendError("timed out"), name=XSS)
    with admin.engine.begin() as conn:
        conn.execute(update(SEND).values(subject=f"Subject {XSS}"))
    page = admin.client.get("/admin/problems")
    assert page.status_code == 200
    assert XSS not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "Subject &lt;script&gt;" in page.text
    assert "failed" in page.text and "unknown" in page.text


def test_filters_are_bound_parameters(admin: AdminApp) -> None:
    welcome(admin, "z@example.com", AmbiguousSendError("timed out"))
    hostile = admin.client.get("/admin/problems", params={"sequence": "' OR 1=1 --"})
    assert hostile.status_code == 200 and "z@example.com" not in hostile.text
    assert "z@example.com" in admin.client.get("/admin/problems?sequence=sales-process").text
    assert "z@example.com" not in admin.client.get("/admin/problems?status=failed").text


def test_anonymous_requests_are_turned_away(admin: AdminApp) -> None:
    anonymous = admin.anonymous()
    page = anonymous.get("/admin/problems", follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"].startswith("/admin/login?next=/admin/problems")
    post = anonymous.post("/admin/problems/resume", data={"sequence": "x"}, follow_redirects=False)
    assert post.status_code == 403
    assert anonymous.get("/admin/api/problems").status_code == 401


def test_the_json_api_lists_the_same_problems(admin: AdminApp) -> None:
    send_id = welcome(admin, "api@example.com", AmbiguousSendError("timed out"), name=XSS)
    with admin.engine.begin() as conn:
        queries.pause_sequence(conn, "other", "budget spent", NOW)
    with session_factory(admin.engine)() as session:
        token = create_token(session, "ops", "admin", NOW).token
        ingest = create_token(session, "site", "ingest", NOW).token
        session.commit()
    assert (
        admin.anonymous()
        .get("/admin/api/problems", headers={"Authorization": f"Bearer {ingest}"})
        .status_code
        == 403
    )
    answer = admin.anonymous().get(
        "/admin/api/problems", headers={"Authorization": f"Bearer {token}"}
    )
    assert answer.status_code == 200
    body = answer.json()
    [send] = body["sends"]
    assert (send["id"], send["status"], send["email"], send["name"]) == (
        send_id, "unknown", "api@example.com", XSS,
    )  # fmt: skip
    assert send["reason"] and "timed out" in send["reason"]
    assert [p["sequence_id"] for p in body["paused"]] == ["other"]
