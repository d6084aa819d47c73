"""``POST /webhooks/sendgrid``: SendGrid's signed Event Webhook, end to end over
the app, the real dispatcher (with the memory transport) and a real database.

Batches are signed with a P-256 key made here (``cryptography``, which the
``sendgrid`` library itself verifies with); the vectors SendGrid publishes are
checked as they are published.
"""

from __future__ import annotations

import base64
import json
import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from nurture.app.clock import FixedClock
from nurture.app.runtime import Runtime, build_runtime
from nurture.app.settings import Settings
from nurture.audience.subscribers import add_subscriber
from nurture.errors import AmbiguousSendError
from nurture.store.db import session_factory
from nurture.store.tables import (
    EnrollmentRow,
    EventRow,
    SendRow,
    SubscriberRow,
    SuppressionRow,
)
from nurture.testing import MemoryTransport
from nurture.web.app import create_app
from tests.factories import sequence_dict

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 3, 3, 10, 0, tzinfo=UTC)  # a Tuesday morning
URL = "/webhooks/sendgrid"
SEND = SendRow.__table__  # type: ignore[attr-defined]
EVENT = EventRow.__table__  # type: ignore[attr-defined]
ENROLLMENT = EnrollmentRow.__table__  # type: ignore[attr-defined]
SUBSCRIBER = SubscriberRow.__table__  # type: ignore[attr-defined]
SUPPRESSION = SuppressionRow.__table__  # type: ignore[attr-defined]

# The test vectors SendGrid publishes with its Python library, copied as data:
# sendgrid/sendgrid-python, test/unit/test_eventwebhook.py (PUBLIC_KEY,
# SIGNATURE, TIMESTAMP, PAYLOAD, and the other key and signature of its
# negative tests).
SG_PUBLIC_KEY = (
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3GRqe62g"
    "w+2fNNRaINXvVpiglSI8eNEc6wEA3F+g=="
)
SG_SIGNATURE = (
    "MEUCIGHQVtGj+Y3LkG9fLcxf3qfI10QysgDWmMOVmxG0u6ZUAiEAyBiXDWzM+uOe5W0JuG+luQAbPIqHh89M15TluLtE"
    "ZtM="
)
SG_TIMESTAMP = "1600112502"
SG_PAYLOAD = (
    json.dumps(
        [
            {
                "email": "hello@world.com",
                "event": "dropped",
                "reason": "Bounced Address",
                "sg_event_id": "ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA",
                "sg_message_id": (
                    "LRzXl_NHStOGhQ4kofSm_A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0"
                ),
                "smtp-id": "<LRzXl_NHStOGhQ4kofSm_A@ismtpd0039p1iad1.sendgrid.net>",
                "timestamp": 1600112492,
            }
        ],
        sort_keys=True,
        separators=(",", ":"),
    )
    + "\r\n"
)
SG_OTHER_KEY = (
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEqTxd43gyp8IOEto2LdIfjRQrIbsd4SXZkLW6jDutdhXSJCWHw8REnt"
    "lo7aNDthvj+y7GjUuFDb/R1NGe1OPzpA=="
)
SG_OTHER_SIGNATURE = (
    "MEUCIQCtIHJeH93Y+qpYeWrySphQgpNGNr/U+UyUlBkU6n7RAwIgJTz2C+8a8xonZGi6BpSzoQsbVRamr2nlxFDWYNH3"
    "j/0="
)

PRIVATE_KEY = ec.generate_private_key(ec.SECP256R1())
PUBLIC_KEY = base64.b64encode(
    PRIVATE_KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode("ascii")


def signed(body: bytes, timestamp: str | None = None) -> dict[str, str]:
    """The headers SendGrid would send with ``body``, signed with our key."""
    stamp = timestamp or str(int(NOW.timestamp()))
    signature = PRIVATE_KEY.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
        "Content-Type": "application/json",
    }


@dataclass
class World:
    runtime: Runtime
    transport: MemoryTransport
    clock: FixedClock
    client: TestClient

    def add(self, *emails: str) -> None:
        with session_factory(self.runtime.engine)() as session:
            for email in emails:
                add_subscriber(
                    session, email=email, tags=["t"], consent_source="test", now=NOW,
                    sequences=self.runtime.registry.sequences(),
                )  # fmt: skip
            session.commit()

    def key(self, email: str, step: str = "welcome") -> str:
        with self.runtime.engine.connect() as conn:
            found: str = conn.execute(
                select(SEND.c.key)
                .join(SUBSCRIBER, SUBSCRIBER.c.id == SEND.c.subscriber_id)
                .where(SUBSCRIBER.c.email == email, SEND.c.step_id == step)
            ).scalar_one()
        return found

    def send(self, email: str, step: str = "welcome") -> tuple[str, str | None, str | None]:
        with self.runtime.engine.connect() as conn:
            row = conn.execute(
                select(SEND.c.status, SEND.c.resolution, SEND.c.resolved_by)
                .join(SUBSCRIBER, SUBSCRIBER.c.id == SEND.c.subscriber_id)
                .where(SUBSCRIBER.c.email == email, SEND.c.step_id == step)
            ).one()
        return row.status, row.resolution, row.resolved_by

    def post(self, events: list[dict[str, Any]], **options: Any) -> Response:
        body = json.dumps(events).encode()
        return self.client.post(URL, content=body, headers=signed(body, **options))

    def counts(self) -> dict[str, int]:
        """Rows of every table the webhook may write, and the statuses it may change."""
        with self.runtime.engine.connect() as conn:

            def count(table: Any, *where: Any) -> int:
                query = select(func.count()).select_from(table).where(*where)
                return int(conn.execute(query).scalar_one())

            return {
                "events": count(EVENT),
                "suppressions": count(SUPPRESSION),
                "active subscribers": count(SUBSCRIBER, SUBSCRIBER.c.status == "active"),
                "active enrollments": count(ENROLLMENT, ENROLLMENT.c.status == "active"),
                "unknown sends": count(SEND, SEND.c.status == "unknown"),
            }

    def status(self, email: str) -> str:
        with self.runtime.engine.connect() as conn:
            found: str = conn.execute(
                select(SUBSCRIBER.c.status).where(SUBSCRIBER.c.email == email)
            ).scalar_one()
        return found

    def suppressed(self) -> dict[str, str]:
        with self.runtime.engine.connect() as conn:
            rows = conn.execute(select(SUPPRESSION.c.email, SUPPRESSION.c.source)).all()
        return {row.email: row.source for row in rows}

    def events(self) -> list[dict[str, Any]]:
        with self.runtime.engine.connect() as conn:
            rows = conn.execute(select(EVENT).order_by(EVENT.c.id)).all()
        return [dict(row._mapping) for row in rows]


def make_world(engine: Engine, tmp_path: Path, **settings: Any) -> Iterator[World]:
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    (tmp_path / "sequences").mkdir()
    definition = sequence_dict(id="hooks", timezone="UTC", trigger={"tags": ["t"]})
    (tmp_path / "sequences" / "hooks.yaml").write_text(json.dumps(definition), "utf-8")
    transport = MemoryTransport()
    clock = FixedClock(NOW)
    options: dict[str, Any] = {"sendgrid_webhook_public_key": PUBLIC_KEY, **settings}
    runtime = build_runtime(
        Settings(
            sequences_dir=tmp_path / "sequences",
            templates_dir=tmp_path / "templates",
            outbox_dir=tmp_path / "outbox",
            secret_key="webhook-test-secret-not-a-placeholder",
            rate_limit=10_000.0,
            **options,
        ),
        clock,
        transport=transport,
        engine=engine,
        migrate=False,
    )
    yield World(runtime, transport, clock, TestClient(create_app(runtime)))
    runtime.dispatcher.close()


@pytest.fixture
def world(engine: Engine, tmp_path: Path) -> Iterator[World]:
    yield from make_world(engine, tmp_path)


def event(name: str, email: str, event_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "event": name,
        "email": email,
        "timestamp": int(NOW.timestamp()) + 60,
        "sg_event_id": event_id,
        "sg_message_id": "msg.filter0001",
        **fields,
    }


# -- the published vectors ---------------------------------------------------


def test_the_published_vector_is_accepted_and_applied(engine: Engine, tmp_path: Path) -> None:
    for world in make_world(engine, tmp_path, sendgrid_webhook_public_key=SG_PUBLIC_KEY):
        answer = world.client.post(
            URL,
            content=SG_PAYLOAD.encode(),
            headers={
                "X-Twilio-Email-Event-Webhook-Signature": SG_SIGNATURE,
                "X-Twilio-Email-Event-Webhook-Timestamp": SG_TIMESTAMP,
            },
        )
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"received": 1, "new": 1, "duplicates": 0}
        [stored] = world.events()
        assert stored["kind"] == "rejected"
        assert stored["provider_event_id"] == "ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA"
        assert stored["send_id"] is None and stored["subscriber_id"] is None
        # Dropped as a bounced address: suppressed, though we hold no such subscriber.
        assert world.suppressed() == {"hello@world.com": "sendgrid"}


@pytest.mark.parametrize(
    ("key", "body", "signature", "timestamp"),
    [
        pytest.param(SG_OTHER_KEY, SG_PAYLOAD, SG_SIGNATURE, SG_TIMESTAMP, id="bad-key"),
        pytest.param(SG_PUBLIC_KEY, "payload", SG_SIGNATURE, SG_TIMESTAMP, id="bad-payload"),
        pytest.param(SG_PUBLIC_KEY, SG_PAYLOAD, SG_OTHER_SIGNATURE, SG_TIMESTAMP, id="bad-sig"),
        pytest.param(SG_PUBLIC_KEY, SG_PAYLOAD, SG_SIGNATURE, "timestamp", id="bad-timestamp"),
    ],
)
def test_the_published_negative_vectors_are_refused(
    engine: Engine, tmp_path: Path, key: str, body: str, signature: str, timestamp: str
) -> None:
    for world in make_world(engine, tmp_path, sendgrid_webhook_public_key=key):
        answer = world.client.post(
            URL,
            content=body.encode(),
            headers={
                "X-Twilio-Email-Event-Webhook-Signature": signature,
                "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
            },
        )
        assert answer.status_code == 403
        assert answer.json() == {"detail": "signature not verified"}
        assert world.events() == [] and world.suppressed() == {}


def test_the_published_vector_is_stale_when_an_age_is_required(
    engine: Engine, tmp_path: Path
) -> None:
    for world in make_world(
        engine, tmp_path, sendgrid_webhook_public_key=SG_PUBLIC_KEY, sendgrid_webhook_max_age=300
    ):
        answer = world.client.post(
            URL,
            content=SG_PAYLOAD.encode(),
            headers={
                "X-Twilio-Email-Event-Webhook-Signature": SG_SIGNATURE,
                "X-Twilio-Email-Event-Webhook-Timestamp": SG_TIMESTAMP,
            },
        )
        assert answer.status_code == 403
        assert world.events() == []


# -- a batch of every kind -----------------------------------------------------


def test_a_signed_batch_is_applied_and_its_replay_changes_nothing(world: World) -> None:
    world.add(*(f"{name}@example.com" for name in "abcde"))
    world.runtime.dispatcher.dispatch(NOW)
    assert len(world.transport.sent) == 5
    keys = {name: world.key(f"{name}@example.com") for name in "abcde"}
    batch = [
        event("delivered", "a@example.com", "ev-1", nurture_send_id=keys["a"]),
        event("open", "a@example.com", "ev-2", nurture_send_id=keys["a"], sg_machine_open=True,
              useragent="Mozilla/5.0 (AppleMail)"),
        event("click", "a@example.com", "ev-3", nurture_send_id=keys["a"],
              url="https://example.com/offer", useragent="Mozilla/5.0"),
        event("bounce", "b@example.com", "ev-4", nurture_send_id=keys["b"], type="bounce",
              reason="550 5.1.1 no such user"),
        event("spamreport", "c@example.com", "ev-5", nurture_send_id=keys["c"]),
        event("unsubscribe", "d@example.com", "ev-6", nurture_send_id=keys["d"]),
        event("account_status_change", "a@example.com", "ev-7"),
        event("group_unsubscribe", "e@example.com", "ev-8", nurture_send_id=keys["e"],
              asm_group_id=1),
    ]  # fmt: skip
    answer = world.post(batch)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"received": 8, "new": 8, "duplicates": 0}

    by_id = {row["provider_event_id"]: row for row in world.events()}
    kinds = {eid: by_id[eid]["kind"] for eid in ("ev-1", "ev-2", "ev-3", "ev-4", "ev-5", "ev-6")}
    assert kinds == {
        "ev-1": "delivered",
        "ev-2": "opened",
        "ev-3": "clicked",
        "ev-4": "bounced",
        "ev-5": "complained",
        "ev-6": "unsubscribed",
    }
    assert by_id["ev-2"]["machine"] is True
    assert by_id["ev-2"]["user_agent"] == "Mozilla/5.0 (AppleMail)"
    assert by_id["ev-3"]["machine"] is False
    assert by_id["ev-3"]["payload"]["url"] == "https://example.com/offer"
    assert by_id["ev-1"]["send_id"] is not None and by_id["ev-1"]["step_id"] == "welcome"
    # An event type we do not know is kept, matched to the subscriber by address.
    assert by_id["ev-7"]["kind"] == "unknown"
    assert by_id["ev-7"]["payload"]["event"] == "account_status_change"
    assert by_id["ev-7"]["send_id"] is None and by_id["ev-7"]["subscriber_id"] is not None

    assert world.status("a@example.com") == "active"
    assert world.status("b@example.com") == "bounced"
    assert world.status("c@example.com") == "complained"
    assert world.status("d@example.com") == "unsubscribed"
    assert world.status("e@example.com") == "unsubscribed"
    assert world.suppressed() == {
        "b@example.com": "sendgrid",
        "c@example.com": "sendgrid",
        "d@example.com": "unsubscribe",
        "e@example.com": "unsubscribe",
    }
    before = world.counts()
    assert before["active enrollments"] == 1  # a's only

    replay = world.post(batch)
    assert replay.status_code == 200
    assert replay.json() == {"received": 8, "new": 0, "duplicates": 8}
    assert world.counts() == before
    # And the dispatcher sends nothing more to the three who left.
    world.runtime.dispatcher.dispatch(NOW + timedelta(days=3))
    assert {e.to_email for e in world.transport.sent[5:]} <= {"a@example.com"}


def test_a_late_delivered_does_not_undo_a_bounce(world: World) -> None:
    world.add("b@example.com")
    world.runtime.dispatcher.dispatch(NOW)
    key = world.key("b@example.com")
    bounce = event("bounce", "b@example.com", "ev-b", nurture_send_id=key, type="bounce")
    delivered = event("delivered", "b@example.com", "ev-d", nurture_send_id=key)
    assert world.post([bounce]).status_code == 200
    assert world.post([delivered]).status_code == 200
    assert world.status("b@example.com") == "bounced"
    assert world.suppressed() == {"b@example.com": "sendgrid"}
    assert world.counts()["active enrollments"] == 0


def test_either_order_ends_in_the_same_state(engine: Engine, tmp_path: Path) -> None:
    states = []
    for order in ("bounce-first", "delivered-first"):
        folder = tmp_path / order
        folder.mkdir()
        for world in make_world(engine, folder):
            world.add(f"{order}@example.com")
            world.runtime.dispatcher.dispatch(NOW)
            key = world.key(f"{order}@example.com")
            bounce = event("bounce", f"{order}@example.com", f"{order}-b", nurture_send_id=key)
            delivered = event("delivered", f"{order}@example.com", f"{order}-d",
                              nurture_send_id=key)  # fmt: skip
            batch = [bounce, delivered] if order == "bounce-first" else [delivered, bounce]
            assert world.post(batch).status_code == 200
            states.append(
                (world.status(f"{order}@example.com"), world.send(f"{order}@example.com")[0])
            )
    assert states == [("bounced", "sent"), ("bounced", "sent")]


def test_bounces_and_unsubscribes_in_one_post_apply_in_their_order(world: World) -> None:
    """The bounces of a post are applied together, but never after an
    unsubscribe that came later in it: the suppression says which came first."""
    world.add("a@example.com", "b@example.com")
    answer = world.post(
        [
            event("unsubscribe", "a@example.com", "ev-1"),
            event("bounce", "a@example.com", "ev-2", type="bounce"),
            event("bounce", "b@example.com", "ev-3", type="bounce"),
            event("unsubscribe", "b@example.com", "ev-4"),
            event("bounce", "gone@example.com", "ev-5", type="bounce"),
        ]
    )
    assert answer.status_code == 200
    assert answer.json() == {"received": 5, "new": 5, "duplicates": 0}
    assert world.status("a@example.com") == "bounced"
    assert world.status("b@example.com") == "bounced"
    assert world.suppressed() == {
        "a@example.com": "unsubscribe",
        "b@example.com": "sendgrid",
        "gone@example.com": "sendgrid",
    }
    assert world.counts()["active enrollments"] == 0


def test_blocked_bounce_and_harmless_drop_leave_the_address_alone(world: World) -> None:
    world.add("a@example.com")
    world.runtime.dispatcher.dispatch(NOW)
    key = world.key("a@example.com")
    answer = world.post(
        [
            event("bounce", "a@example.com", "ev-1", nurture_send_id=key, type="blocked"),
            event("dropped", "a@example.com", "ev-2", nurture_send_id=key, reason="Spam Content"),
            event("dropped", "a@example.com", "ev-3", nurture_send_id=key, reason="Invalid"),
        ]
    )
    assert answer.status_code == 200
    assert [row["kind"] for row in world.events()] == ["failed", "rejected", "rejected"]
    # Only the third, a drop for an invalid address, says anything about it.
    assert world.status("a@example.com") == "invalid"


def test_delivered_confirms_an_unknown_send(world: World) -> None:
    world.add("a@example.com")
    world.transport.accept_then_raise(AmbiguousSendError("timed out after the request was sent"))
    world.runtime.dispatcher.dispatch(NOW)
    assert world.send("a@example.com")[0] == "unknown"
    key = world.key("a@example.com")
    assert world.post([event("delivered", "a@example.com", "ev-1", nurture_send_id=key)]).is_success
    status, resolution, by = world.send("a@example.com")
    assert status == "sent"
    assert resolution is not None and "delivered" in resolution and "ev-1" in resolution
    assert by == "sendgrid"
    # Never resent.
    world.runtime.dispatcher.reconcile(NOW + timedelta(hours=2))
    world.runtime.dispatcher.dispatch(NOW + timedelta(hours=2))
    assert [e.step_id for e in world.transport.sent] == ["welcome"]


# -- refusals: a test each, nothing stored -------------------------------------

BATCH = json.dumps([event("delivered", "a@example.com", "ev-1")]).encode()


def refused(world: World, answer: Response, status: int) -> None:
    assert answer.status_code == status, answer.text
    assert set(answer.json()) == {"detail"}
    assert world.events() == [] and world.suppressed() == {}


def test_a_bad_signature_is_refused(world: World) -> None:
    headers = signed(BATCH)
    other = json.dumps([event("delivered", "a@example.com", "ev-2")]).encode()
    refused(world, world.client.post(URL, content=other, headers=headers), 403)


def test_missing_headers_are_refused(world: World) -> None:
    refused(world, world.client.post(URL, content=BATCH), 403)
    only_signature = {k: v for k, v in signed(BATCH).items() if "Signature" in k}
    refused(world, world.client.post(URL, content=BATCH, headers=only_signature), 403)


def test_a_signature_that_is_not_base64_is_refused(world: World) -> None:
    headers = {**signed(BATCH), "X-Twilio-Email-Event-Webhook-Signature": "not base64 at all!"}
    refused(world, world.client.post(URL, content=BATCH, headers=headers), 403)
    headers["X-Twilio-Email-Event-Webhook-Signature"] = "AAAA"  # base64, not DER
    refused(world, world.client.post(URL, content=BATCH, headers=headers), 403)


def test_a_signed_body_that_is_not_json_is_refused(world: World) -> None:
    nan = b'[{"event": "open", "email": "a@example.com", "sg_event_id": "x", "timestamp": NaN}]'
    for body in (b"{not json", b"", b"[" * 100_000, nan):
        refused(world, world.client.post(URL, content=body, headers=signed(body)), 400)
    # Not UTF-8: SendGrid signs text, so such a body cannot be one of its posts.
    body = b"\xff\xfe[]"
    refused(world, world.client.post(URL, content=body, headers=signed(body)), 403)


def test_json_of_the_wrong_shape_is_refused(world: World) -> None:
    for value in ({"event": "delivered"}, ["delivered"], [{"event": "open"}, 3], "[]"):
        body = json.dumps(value).encode()
        refused(world, world.client.post(URL, content=body, headers=signed(body)), 422)
    body = b'[{"event": "open", "email": "a\\u0000@example.com", "sg_event_id": "x"}]'
    refused(world, world.client.post(URL, content=body, headers=signed(body)), 422)


def test_an_oversized_body_is_refused(world: World) -> None:
    body = json.dumps([event("delivered", "a@example.com", "x" * (1024 * 1024))]).encode()
    refused(world, world.client.post(URL, content=body, headers=signed(body)), 413)


def test_a_stale_timestamp_is_refused_when_an_age_is_set(engine: Engine, tmp_path: Path) -> None:
    for world in make_world(engine, tmp_path, sendgrid_webhook_max_age=300):
        stale = str(int((NOW - timedelta(minutes=10)).timestamp()))
        refused(world, world.client.post(URL, content=BATCH, headers=signed(BATCH, stale)), 403)
        fresh = str(int((NOW - timedelta(minutes=4)).timestamp()))
        answer = world.client.post(URL, content=BATCH, headers=signed(BATCH, fresh))
        assert answer.status_code == 200


def test_no_key_no_webhook(engine: Engine, tmp_path: Path) -> None:
    for world in make_world(engine, tmp_path, sendgrid_webhook_public_key=None):
        refused(world, world.client.post(URL, content=BATCH, headers=signed(BATCH)), 404)


def test_an_unreadable_key_turns_the_webhook_off(engine: Engine, tmp_path: Path) -> None:
    for world in make_world(engine, tmp_path, sendgrid_webhook_public_key="not-a-key"):
        refused(world, world.client.post(URL, content=BATCH, headers=signed(BATCH)), 503)


# -- reconcile: retried once, and only when silence means something -------------


def unknown_send(world: World, email: str) -> None:
    world.add(email)
    world.transport.fail_next(AmbiguousSendError("timed out"))
    world.runtime.dispatcher.dispatch(NOW)
    assert world.send(email)[0] == "unknown"


def webhook_alive(world: World, at: datetime, event_id: str) -> None:
    """b@example.com's email went out at NOW; SendGrid reports on it at ``at``."""
    if event_id == "ev-b0":
        world.add("b@example.com")
        world.runtime.dispatcher.dispatch(NOW)
    world.clock.instant = at
    key = world.key("b@example.com")
    answer = world.post([event("delivered", "b@example.com", event_id, nurture_send_id=key)])
    assert answer.json()["new"] == 1


def test_reconcile_retries_an_unconfirmed_send_once_while_events_arrive(world: World) -> None:
    unknown_send(world, "a@example.com")
    webhook_alive(world, NOW + timedelta(minutes=30), "ev-b0")
    # Within the window: still waiting for an event.
    world.runtime.dispatcher.reconcile(NOW + timedelta(minutes=50))
    assert world.send("a@example.com") == ("unknown", None, None)
    later = NOW + timedelta(minutes=61)
    world.runtime.dispatcher.reconcile(later)
    status, resolution, by = world.send("a@example.com")
    assert status == "retry" and by == "reconcile"
    assert resolution is not None and "retried once" in resolution
    world.runtime.dispatcher.dispatch(later)
    assert [e.to_email for e in world.transport.sent].count("a@example.com") == 1
    assert world.send("a@example.com")[0] == "sent"
    world.runtime.dispatcher.reconcile(later + timedelta(hours=2))
    world.runtime.dispatcher.dispatch(later + timedelta(hours=2))
    assert [e.to_email for e in world.transport.sent].count("a@example.com") == 1


def test_reconcile_never_retries_a_send_twice(world: World) -> None:
    unknown_send(world, "a@example.com")
    webhook_alive(world, NOW + timedelta(minutes=30), "ev-b0")
    later = NOW + timedelta(minutes=61)
    world.runtime.dispatcher.reconcile(later)
    assert world.send("a@example.com")[0] == "retry"
    world.transport.fail_next(AmbiguousSendError("timed out again"))
    world.runtime.dispatcher.dispatch(later)
    assert world.send("a@example.com")[0] == "unknown"
    # Unknown again while events keep arriving: left for an admin this time.
    webhook_alive(world, later + timedelta(minutes=30), "ev-b1")
    world.runtime.dispatcher.reconcile(later + timedelta(hours=2))
    status, resolution, by = world.send("a@example.com")
    assert (status, by) == ("unknown", "reconcile")
    assert resolution is not None and "retried once" in resolution


def test_reconcile_leaves_unknown_sends_alone_without_recent_events(world: World) -> None:
    unknown_send(world, "a@example.com")
    world.runtime.dispatcher.reconcile(NOW + timedelta(hours=2))
    assert world.send("a@example.com") == ("unknown", None, None)
    # Events that stopped long before: the webhook may be down.
    webhook_alive(world, NOW + timedelta(minutes=5), "ev-b0")
    world.runtime.dispatcher.reconcile(NOW + timedelta(hours=3))
    assert world.send("a@example.com") == ("unknown", None, None)


def test_reconcile_never_retries_without_the_webhook(engine: Engine, tmp_path: Path) -> None:
    for world in make_world(engine, tmp_path, sendgrid_webhook_public_key=None):
        unknown_send(world, "a@example.com")
        world.add("b@example.com")
        world.runtime.dispatcher.dispatch(NOW)
        with world.runtime.engine.begin() as conn:  # an event, as if a webhook had been on
            conn.execute(
                EVENT.insert().values(
                    provider_event_id="ev-b", kind="delivered", occurred_at=NOW,
                    received_at=NOW + timedelta(minutes=30), payload={},
                )
            )  # fmt: skip
        world.runtime.dispatcher.reconcile(NOW + timedelta(hours=1, minutes=1))
        assert world.send("a@example.com") == ("unknown", None, None)


def test_concurrent_posts_about_the_same_sends_are_all_applied(world: World) -> None:
    """SendGrid posts in parallel, and retries: posts about the same sends, in
    different orders, at once. Each is answered 200 (on PostgreSQL a post the
    database aborts as a deadlock victim is run again, not a 500) and all their
    bounces and unsubscribes hold."""
    names = [f"p{index:02d}" for index in range(12)]
    world.add(*(f"{name}@example.com" for name in names))
    world.runtime.dispatcher.dispatch(NOW)
    keys = {name: world.key(f"{name}@example.com") for name in names}
    posts: list[list[dict[str, Any]]] = []
    for post in range(8):
        batch = []
        for name in names:
            address, key = f"{name}@example.com", keys[name]
            batch += [
                event("delivered", address, f"d-{post}-{name}", nurture_send_id=key),
                event("open", address, f"o-{post}-{name}", nurture_send_id=key),
                event("click", address, f"c-{post}-{name}", nurture_send_id=key,
                      url="https://example.com/offer"),
            ]  # fmt: skip
            if name < "p04":
                batch.append(event("unsubscribe", address, f"u-{post}-{name}", nurture_send_id=key))
            elif name < "p08":
                batch.append(event("bounce", address, f"b-{post}-{name}", nurture_send_id=key,
                                   type="bounce", reason="550 5.1.1 no such user"))  # fmt: skip
        batch = batch[post % 2 :: 2] + batch[1 - post % 2 :: 2]  # another order
        posts.append(batch if post % 3 else list(reversed(batch)))
    start = threading.Barrier(len(posts))

    def deliver(batch: list[dict[str, Any]]) -> int:
        start.wait()
        return world.post(batch).status_code

    with ThreadPoolExecutor(len(posts)) as pool:
        statuses = list(pool.map(deliver, posts))

    assert statuses == [200] * len(posts)
    posted = {item["sg_event_id"] for batch in posts for item in batch}
    assert posted <= {row["provider_event_id"] for row in world.events()}
    assert world.suppressed() == {
        **{f"{name}@example.com": "unsubscribe" for name in names[:4]},
        **{f"{name}@example.com": "sendgrid" for name in names[4:8]},
    }
    assert [world.status(f"{name}@example.com") for name in names] == (
        ["unsubscribed"] * 4 + ["bounced"] * 4 + ["active"] * 4
    )
