"""``/api/v1`` over a real database (SQLite and PostgreSQL): tokens, subscribers,
app events that enroll, and every refused request changing nothing."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from nurture.app.clock import FixedClock
from nurture.app.runtime import Runtime, build_runtime
from nurture.audience.tokens import create_token
from nurture.errors import TransientSendError
from nurture.store import planning
from nurture.store.db import session_factory
from nurture.store.tables import (
    ApiTokenRow,
    AppEventRow,
    EnrollmentRow,
    SubscriberRow,
    SuppressionRow,
)
from nurture.testing import MemoryTransport
from nurture.web.app import create_app
from tests.factories import example_workdir

NOW = datetime(2026, 11, 27, 14, 30, tzinfo=UTC)  # Friday 15:30 in Stockholm

TRIAL_TEMPLATE = """Hi {{ subscriber.first_name }},

Your {{ trigger.properties.plan }} trial has started.
"""

TRIAL_SAMPLE = """- name: Sam Sample
  locale: en
  trigger:
    event: trial_started
    properties: {plan: pro}
"""


def _trial_sequence(sales_process: str) -> str:
    """The example sequence as a trial sequence started by the app event ``trial_started``."""
    text = sales_process.replace("id: sales-process", "id: trial", 1)
    text = text.replace("  event: subscribed\n  tags: [b2b]", "  event: trial_started", 1)
    text = text.replace("    template: welcome.md", "    template: trial-welcome.md", 1)
    text = text.replace(
        'en: "Welcome{% if subscriber.first_name %}, {{ subscriber.first_name }}{% endif %}!"',
        'en: "Your {{ trigger.properties.plan }} trial"',
        1,
    )
    assert "trial_started" in text and "trial-welcome.md" in text
    return text


@dataclass
class Api:
    client: TestClient
    runtime: Runtime
    transport: MemoryTransport
    engine: Engine
    token: str
    admin_token: str

    def post(self, path: str, body: Any, token: str | None = None, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {token or self.token}"}
        return self.client.post(path, content=json.dumps(body), headers=headers, **kw)

    def count(self, table: type[Any]) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


@pytest.fixture
def api(engine: Engine, tmp_path: Path) -> Iterator[Api]:
    settings = example_workdir(tmp_path)
    sales = (settings.sequences_dir / "sales-process.yaml").read_text("utf-8")
    (settings.sequences_dir / "trial.yaml").write_text(_trial_sequence(sales), "utf-8")
    # validate renders every template over the samples: they declare the event.
    (settings.sequences_dir / "trial.sample.yaml").write_text(TRIAL_SAMPLE, "utf-8")
    for locale in ("en", "sv"):
        (settings.templates_dir / locale / "trial-welcome.md").write_text(TRIAL_TEMPLATE, "utf-8")
    transport = MemoryTransport()
    runtime = build_runtime(
        settings, FixedClock(NOW), transport=transport, engine=engine, migrate=False
    )
    assert "trial" in runtime.registry.sequences(), runtime.registry.sequences().broken
    with session_factory(engine)() as session:
        token = create_token(session, "website", "ingest", NOW).token
        admin = create_token(session, "ops", "admin", NOW).token
        session.commit()
    yield Api(TestClient(create_app(runtime)), runtime, transport, engine, token, admin)


KARIN = {
    "email": "Karin@Example.com",
    "name": "Karin Lindqvist",
    "timezone": "Europe/Stockholm",
    "locale": "en",
    "tags": ["b2b"],
    "attributes": {"company": "Doe AB"},
    "consent": {"source": "signup-form", "text": "Send me the course", "ip": "192.0.2.7"},
    "confirmed": True,
}


def test_a_confirmed_subscriber_is_created_enrolled_then_updated(api: Api) -> None:
    created = api.post("/api/v1/subscribers", KARIN)
    assert created.status_code == 201, created.text
    assert created.json() == {
        "email": "karin@example.com",
        "status": "active",
        "created": True,
        "suppressed": False,
        "enrolled_in": ["sales-process"],
        "confirmation": None,  # consent collected by the caller: nothing to confirm
    }
    assert [sent.sequence_id for sent in api.transport.sent] == []  # the dispatcher sends
    updated = api.post("/api/v1/subscribers", {"email": "karin@example.com", "tags": ["vip"]})
    assert updated.status_code == 200, updated.text
    assert updated.json()["created"] is False
    assert updated.json()["status"] == "active"  # an unconfirmed post never demotes
    with session_factory(api.engine)() as session:
        row = session.exec(select(SubscriberRow)).scalars().one()  # type: ignore[call-overload]
        assert row.tags == ["b2b", "vip"]
        assert row.consent_source == "signup-form" and row.consent_ip == "192.0.2.7"
        used = session.exec(select(ApiTokenRow).where(ApiTokenRow.name == "website"))
        assert used.scalars().one().last_used_at == NOW  # type: ignore[attr-defined]


def _confirm_path(sent: Any) -> str:
    text = sent.as_message().get_body(preferencelist=("plain",)).get_content()
    found = re.search(r"https?://[^/\s]+(/confirm/[A-Za-z0-9_.\-]+)", text)
    assert found is not None, text
    return found.group(1)


def test_an_unconfirmed_subscriber_is_sent_the_double_opt_in_email_and_enrolled_once_confirmed(
    api: Api,
) -> None:
    """They were stored unconfirmed and never asked: stuck, "enrolled in
    nothing until they confirm" with nothing to confirm with."""
    body = {**KARIN, "confirmed": False, "consent": {"source": "form", "at": NOW.isoformat()}}
    answer = api.post("/api/v1/subscribers", body)
    assert answer.status_code == 201, answer.text
    assert answer.json()["status"] == "unconfirmed"
    assert answer.json()["enrolled_in"] == []
    assert answer.json()["confirmation"] == "sent"
    assert api.count(EnrollmentRow) == 0
    # The sign-up form's email: same subject, sender, send-log entry.
    [sent] = api.transport.sent
    assert (sent.to_email, sent.sequence_id, sent.step_id) == (
        "karin@example.com", "signup", "confirmation",
    )  # fmt: skip
    message = sent.as_message()
    assert message["Subject"] == "Please confirm your subscription"
    assert message["To"].addresses[0].display_name == ""  # nothing but the address

    link = _confirm_path(sent)
    assert "Confirm my subscription" in api.client.get(link).text
    assert api.client.post(link).status_code == 200
    with session_factory(api.engine)() as session:
        row = session.exec(select(SubscriberRow)).scalars().one()  # type: ignore[call-overload]
        assert row.status == "active"
    assert api.count(EnrollmentRow) == 1


def test_an_unconfirmed_subscriber_posted_again_is_asked_at_most_once_per_five_minutes(
    api: Api,
) -> None:
    clock = api.runtime.clock
    assert isinstance(clock, FixedClock)
    body = {**KARIN, "confirmed": False}
    assert api.post("/api/v1/subscribers", body).json()["confirmation"] == "sent"
    again = api.post("/api/v1/subscribers", body)
    assert again.status_code == 200
    assert again.json()["confirmation"] == "sent_recently"
    assert len(api.transport.sent) == 1
    clock.instant = NOW + timedelta(minutes=6)
    assert api.post("/api/v1/subscribers", body).json()["confirmation"] == "sent"
    assert len(api.transport.sent) == 2

    # A provider that refuses it: the subscriber stays, and the answer says so.
    clock.instant = NOW + timedelta(minutes=12)
    api.transport.fail_next(TransientSendError("provider down", status=503))
    failed = api.post("/api/v1/subscribers", body)
    assert (failed.status_code, failed.json()["confirmation"]) == (200, "failed")
    assert api.post("/api/v1/subscribers", body).json()["confirmation"] == "sent"

    # Confirmed by the caller, or already active: nothing to ask.
    active = api.post("/api/v1/subscribers", {**body, "confirmed": True})
    assert (active.json()["status"], active.json()["confirmation"]) == ("active", None)
    later = api.post("/api/v1/subscribers", body)
    assert (later.json()["status"], later.json()["confirmation"]) == ("active", None)
    assert len(api.transport.sent) == 3


def test_a_suppressed_address_posted_unconfirmed_is_sent_nothing(api: Api) -> None:
    with session_factory(api.engine)() as session:
        session.add(SuppressionRow(email="karin@example.com", reason="complaint", created_at=NOW))
        session.commit()
    answer = api.post("/api/v1/subscribers", {**KARIN, "confirmed": False})
    assert answer.status_code == 201, answer.text
    assert (answer.json()["suppressed"], answer.json()["confirmation"]) == (True, None)
    assert api.transport.sent == []


def test_refused_subscribers_get_an_error_per_field_and_change_nothing(api: Api) -> None:
    bad = {**KARIN, "email": "not-an-address", "timezone": "Mars/Olympus", "locale": "!!"}
    answer = api.post("/api/v1/subscribers", bad)
    assert answer.status_code == 422
    errors = answer.json()["errors"]
    assert {"email", "timezone", "locale"} <= set(errors), errors
    wrong_types = api.post("/api/v1/subscribers", {**KARIN, "tags": "b2b", "name": 5})
    assert wrong_types.status_code == 422
    assert {"tags", "name"} <= set(wrong_types.json()["errors"])
    # A wrong type and a refused value, in one answer: every field to fix at once.
    both = {**bad, "tags": "b2b", "consent": {"source": "x", "at": "2026-01-01T00:00:00Z"}}
    answer = api.post("/api/v1/subscribers", both)
    assert answer.status_code == 422
    assert set(answer.json()["errors"]) == {"tags", "email", "timezone", "locale"}, answer.text
    assert "Mars/Olympus" in answer.json()["errors"]["timezone"]
    missing = api.post("/api/v1/subscribers", {"timezone": "Mars/Olympus"})
    assert set(missing.json()["errors"]) == {"email", "timezone"}, missing.text
    unknown = api.post("/api/v1/subscribers", {**KARIN, "admin": True})
    assert unknown.status_code == 422
    future = {**KARIN, "consent": {"source": "x", "at": "2030-01-01T00:00:00Z"}}
    assert api.post("/api/v1/subscribers", future).status_code == 422
    naive = {**KARIN, "consent": {"source": "x", "at": "2026-01-01T00:00:00"}}
    assert api.post("/api/v1/subscribers", naive).status_code == 422
    for far in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"):  # out of range in UTC
        too_far = {**KARIN, "consent": {"source": "x", "at": far}}
        answer = api.post("/api/v1/subscribers", too_far)
        assert answer.status_code == 422, answer.text
        assert "consent" in str(answer.json()["errors"]), answer.text
    # An IPv6 zone id took any text into a 64-character column (a 500 on
    # PostgreSQL); controls in the consent's source and wording were stored.
    for consent in (
        {"source": "x", "ip": "fe80::1%" + "A" * 5000 + "\n<script>"},
        {"source": "s\u001b]0;x\u0007"},
        {"source": "x", "text": "I agree \u001b[2J"},
    ):
        answer = api.post("/api/v1/subscribers", {**KARIN, "consent": consent})
        assert answer.status_code == 422, answer.text
        assert "consent" in answer.text and len(answer.text) < 1000, answer.text
    assert api.post("/api/v1/subscribers", [KARIN]).status_code == 422
    assert api.count(SubscriberRow) == 0


def test_bad_json_and_oversized_bodies_are_refused(api: Api) -> None:
    headers = {"Authorization": f"Bearer {api.token}"}
    for path in ("/api/v1/subscribers", "/api/v1/events"):
        broken = api.client.post(path, content=b'{"email": ', headers=headers)
        assert broken.status_code == 400, broken.text
        binary = api.client.post(path, content=b"\xff\xfe\x00", headers=headers)
        assert binary.status_code == 400, binary.text
        huge = {**KARIN, "attributes": {"blob": "x" * 70_000}}
        assert api.post(path, huge).status_code == 413
    assert api.count(SubscriberRow) == 0
    assert api.count(AppEventRow) == 0


def test_tokens_missing_unknown_revoked_or_of_the_wrong_scope_are_refused(api: Api) -> None:
    missing = api.client.post("/api/v1/subscribers", content=json.dumps(KARIN))
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    basic = api.client.post(
        "/api/v1/subscribers", content=json.dumps(KARIN), headers={"Authorization": "Basic eDp5"}
    )
    assert basic.status_code == 401
    unknown = api.post("/api/v1/subscribers", KARIN, token="nrt_" + "x" * 43)
    assert unknown.status_code == 401
    assert unknown.headers["www-authenticate"].startswith("Bearer")
    assert api.post("/api/v1/events", {}, token="nrt_nope").status_code == 401

    # An ingest token may not read a person's data; an admin token may.
    path = "/api/v1/subscribers/karin@example.com"
    assert api.client.get(path, headers={"Authorization": f"Bearer {api.token}"}).status_code == 403
    assert api.post("/api/v1/subscribers", KARIN).status_code == 201
    read = api.client.get(path, headers={"Authorization": f"Bearer {api.admin_token}"})
    assert read.status_code == 200
    assert read.json()["subscriber"]["email"] == "karin@example.com"

    from nurture.audience.tokens import revoke_token

    with session_factory(api.engine)() as session:
        revoke_token(session, "website")
        session.commit()
    revoked = api.post("/api/v1/subscribers", {**KARIN, "email": "jamie@example.com"})
    assert revoked.status_code == 401
    assert api.count(SubscriberRow) == 1


def test_an_event_enrolls_once_and_its_properties_reach_the_first_email(api: Api) -> None:
    assert api.post("/api/v1/subscribers", KARIN).status_code == 201
    event = {
        "email": "karin@example.com",
        "name": "trial_started",
        "id": "evt-1",
        "properties": {"plan": "pro"},
        "occurred_at": "2026-11-27T14:00:00Z",
    }
    first = api.post("/api/v1/events", event)
    assert first.status_code == 201, first.text
    assert first.json() == {
        "id": "evt-1",
        "name": "trial_started",
        "replay": False,
        "enrolled_in": ["trial"],
    }
    replay = api.post("/api/v1/events", {**event, "properties": {"plan": "basic"}})
    assert replay.status_code == 200
    assert replay.json()["replay"] is True and replay.json()["enrolled_in"] == []
    assert api.count(AppEventRow) == 1
    with session_factory(api.engine)() as session:
        trial = (
            session.exec(  # type: ignore[call-overload]
                select(EnrollmentRow).where(EnrollmentRow.sequence_id == "trial")
            )
            .scalars()
            .one()
        )
        assert trial.trigger_properties == {"plan": "pro"}
    with api.engine.connect() as conn:  # what `nurture plan` reads of live enrollments
        live = {e.sequence_id: e for e in planning.enrollments_of(conn, "karin@example.com", NOW)}
        assert live["trial"].view.trigger_properties == {"plan": "pro"}

    report = api.runtime.dispatcher.dispatch(NOW)
    assert report.sent == 2  # the sales-process welcome and the trial's first email
    [trial_email] = [sent for sent in api.transport.sent if sent.sequence_id == "trial"]
    message = trial_email.as_message()
    assert message["Subject"] == "Your pro trial"
    assert "Your pro trial has started." in message.get_body(("plain",)).get_content()


def test_refused_events_change_nothing(api: Api) -> None:
    base = {"email": "karin@example.com", "name": "trial_started", "id": "evt-1"}
    unknown_address = api.post("/api/v1/events", base)
    assert unknown_address.status_code == 404  # events create no subscribers
    assert api.post("/api/v1/subscribers", KARIN).status_code == 201
    for bad in (
        {**base, "name": "Trial Started"},
        {**base, "id": ""},
        {**base, "properties": ["plan"]},
        {**base, "properties": {"x": "\x1b[31m"}},
        {**base, "occurred_at": "2030-01-01T00:00:00Z"},
        {**base, "occurred_at": "yesterday"},
        {**base, "occurred_at": "0001-01-01T00:00:00+23:59"},  # before year 1 in UTC
        {**base, "occurred_at": "9999-12-31T23:59:59-14:00"},  # after 9999 in UTC
        {**base, "email": "nope"},
        {"email": "karin@example.com", "name": "trial_started"},
    ):
        answer = api.post("/api/v1/events", bad)
        assert answer.status_code == 422, (bad, answer.text)
    assert api.count(AppEventRow) == 0
    assert api.count(EnrollmentRow) == 1  # sales-process, from the subscriber post


def test_an_erased_address_posted_again_is_kept_suppressed(api: Api) -> None:
    from nurture.audience.personal_data import erase_personal_data

    assert api.post("/api/v1/subscribers", KARIN).status_code == 201
    with session_factory(api.engine)() as session:
        erase_personal_data(session, "karin@example.com", NOW)
        session.commit()
    assert api.count(SubscriberRow) == 0 and api.count(EnrollmentRow) == 0
    again = api.post("/api/v1/subscribers", KARIN)
    assert again.status_code == 201
    assert again.json()["suppressed"] is True
    assert again.json()["enrolled_in"] == []
    event = {"email": "karin@example.com", "name": "trial_started", "id": "e2"}
    assert api.post("/api/v1/events", event).json()["enrolled_in"] == []
    assert api.count(EnrollmentRow) == 0
    assert api.count(SuppressionRow) == 1


def test_the_openapi_document_describes_the_bodies(api: Api) -> None:
    document = api.client.get("/openapi.json").json()
    post = document["paths"]["/api/v1/subscribers"]["post"]
    schema = post["requestBody"]["content"]["application/json"]["schema"]
    assert {"email", "consent", "confirmed"} <= set(schema["properties"])
    assert "source" in schema["properties"]["consent"]["properties"]
    assert "/api/v1/events" in document["paths"]
    assert api.client.get("/docs").status_code == 200
