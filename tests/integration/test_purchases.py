"""Purchases from the checkout (``/webhooks/checkout``, Stripe, Shopify,
WooCommerce) and by hand (``nurture events add purchase``): recorded once per
order, credited to the send that earned it, and the example sequence's goal
(``purchased sales-audit``) ends the enrollment ``converted`` on the next pass.

Runs on SQLite and on PostgreSQL (``NURTURE_TEST_DATABASE_URL``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import typer
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session
from typer.testing import CliRunner

from nurture.app.clock import FixedClock
from nurture.app.runtime import Runtime, build_runtime
from nurture.app.settings import Settings
from nurture.audience.subscribers import add_subscriber
from nurture.cli.events import events_app
from nurture.core.tokens import REF, sign
from nurture.store.db import session_factory
from nurture.store.queries import ENROLLMENT, EVENT, SEND
from nurture.store.tables import PurchaseRow
from nurture.testing import MemoryTransport
from nurture.web.app import create_app

ROOT = Path(__file__).resolve().parents[2]
STOCKHOLM = ZoneInfo("Europe/Stockholm")
FRIDAY = datetime(2026, 11, 27, 15, 30, tzinfo=STOCKHOLM).astimezone(UTC)  # welcome
MONDAY = datetime(2026, 11, 30, 9, 30, tzinfo=STOCKHOLM).astimezone(UTC)  # three-models
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=STOCKHOLM).astimezone(UTC)  # the purchase
PURCHASE = PurchaseRow.__table__  # type: ignore[attr-defined]

SECRETS = {
    "checkout_webhook_secret": "checkout-secret-for-tests",
    "stripe_webhook_secret": "whsec_test_secret_for_nurture",
    "shopify_webhook_secret": "shopify-app-secret-for-tests",
    "woocommerce_webhook_secret": "woo-secret-for-tests",
}
KEY = "test-secret-not-a-placeholder"


def settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "sequences_dir": ROOT / "sequences",
        "templates_dir": ROOT / "templates",
        "outbox_dir": tmp_path / "outbox",
        "secret_key": KEY,
        "rate_limit": 10_000.0,
        **SECRETS,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@dataclass
class Shop:
    runtime: Runtime
    client: TestClient

    @property
    def engine(self) -> Engine:
        return self.runtime.engine

    def key_of(self, step: str) -> str:
        with self.engine.connect() as conn:
            return str(conn.execute(select(SEND.c.key).where(SEND.c.step_id == step)).scalar_one())

    def send_id(self, step: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(SEND.c.id).where(SEND.c.step_id == step)).scalar_one())

    def ref(self, step: str) -> str:
        return sign([KEY], REF, {"k": self.key_of(step)}, now=FRIDAY)

    def click(self, step: str, at: datetime, *, machine: bool = False) -> None:
        """A click on ``step``'s link, as the click tracking writes it."""
        with self.engine.begin() as conn:
            send = conn.execute(select(SEND).where(SEND.c.step_id == step)).one()
            conn.execute(
                EVENT.insert().values(
                    provider_event_id=f"click:{step}:{at.isoformat()}:{machine}",
                    kind="clicked",
                    subscriber_id=send.subscriber_id,
                    send_id=send.id,
                    sequence_id=send.sequence_id,
                    step_id=send.step_id,
                    occurred_at=at,
                    received_at=at,
                    payload={},
                    machine=machine,
                )
            )

    def purchases(self) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(PURCHASE).order_by(PURCHASE.c.id)).all())

    def purchase_events(self) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(EVENT).where(EVENT.c.kind == "purchased")).all())

    def enrollment_status(self) -> str:
        with self.engine.connect() as conn:
            return str(conn.execute(select(ENROLLMENT.c.status)).scalar_one())

    def nothing_stored(self) -> bool:
        with self.engine.connect() as conn:
            purchases = conn.execute(select(func.count()).select_from(PURCHASE)).scalar_one()
            events = conn.execute(
                select(func.count()).select_from(EVENT).where(EVENT.c.kind == "purchased")
            ).scalar_one()
        return purchases == 0 and events == 0


def make_shop(engine: Engine, tmp_path: Path, **overrides: object) -> Shop:
    runtime = build_runtime(
        settings(tmp_path, **overrides), FixedClock(NOW), transport=MemoryTransport(),
        engine=engine, migrate=False,
    )  # fmt: skip
    with session_factory(engine)() as session:
        add_subscriber(
            session, email="karin@example.com", name="Karin Lindqvist", tz="Europe/Stockholm",
            locale="sv", tags=("b2b",), consent_source="test", now=FRIDAY,
            sequences=runtime.registry.sequences(),
        )  # fmt: skip
        session.commit()
    # Two emails delivered: welcome on Friday, three-models on Monday morning.
    assert runtime.dispatcher.dispatch(FRIDAY).sent == 1
    assert runtime.dispatcher.dispatch(MONDAY).sent == 1
    return Shop(runtime, TestClient(create_app(runtime)))


@pytest.fixture
def shop(engine: Engine, tmp_path: Path) -> Iterator[Shop]:
    made = make_shop(engine, tmp_path)
    yield made
    made.runtime.dispatcher.close()


# ------------------------------------------------------------ the generic webhook


def checkout_body(**fields: object) -> bytes:
    data: dict[str, object] = {
        "order_id": "A-1001",
        "product": "sales-audit",
        "amount": "19.99",
        "currency": "SEK",
        "occurred_at": "2026-11-30T10:55:00Z",
    }
    data.update(fields)
    return json.dumps({k: v for k, v in data.items() if v is not None}).encode()


def checkout_signature(body: bytes, t: int | None = None, secret: str | None = None) -> str:
    t = int(NOW.timestamp()) if t is None else t
    key = (secret or SECRETS["checkout_webhook_secret"]).encode()
    mac = hmac.new(key, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def post_checkout(shop: Shop, body: bytes, signature: str | None = None) -> Any:
    headers = {"Content-Type": "application/json"}
    headers["X-Nurture-Signature"] = signature or checkout_signature(body)
    return shop.client.post("/webhooks/checkout", content=body, headers=headers)


def test_a_checkout_with_a_ref_credits_that_send_and_the_goal_converts(shop: Shop) -> None:
    body = checkout_body(nurture_ref=shop.ref("welcome"))
    answer = post_checkout(shop, body)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"status": "recorded", "credit": "ref"}

    [row] = shop.purchases()
    assert (row.source, row.order_id, row.product) == ("checkout", "A-1001", "sales-audit")
    assert row.amount == Decimal("19.99") and isinstance(row.amount, Decimal)
    assert row.currency == "SEK"
    assert (row.send_id, row.sequence_id, row.step_id) == (
        shop.send_id("welcome"), "sales-process", "welcome",
    )  # fmt: skip
    [event] = shop.purchase_events()
    assert event.provider_event_id == "purchase:checkout:A-1001"
    assert (event.product, event.send_id) == ("sales-audit", shop.send_id("welcome"))

    # The next dispatch pass ends the enrollment: the goal is reached.
    assert shop.enrollment_status() == "active"
    report = shop.runtime.dispatcher.dispatch(NOW)
    assert report.sent == 0
    assert shop.enrollment_status() == "converted"


def test_by_email_the_last_delivered_send_is_credited(shop: Shop) -> None:
    answer = post_checkout(shop, checkout_body(email="Karin@Example.com"))
    assert answer.status_code == 200, answer.text
    assert answer.json()["credit"] == "last_send"
    [row] = shop.purchases()
    assert row.step_id == "three-models"
    shop.runtime.dispatcher.dispatch(NOW)
    assert shop.enrollment_status() == "converted"


def test_a_replay_is_a_no_op(shop: Shop) -> None:
    body = checkout_body(email="karin@example.com")
    assert post_checkout(shop, body).json()["status"] == "recorded"
    before = shop.purchases()
    again = post_checkout(shop, body)
    assert again.status_code == 200
    assert again.json() == {"status": "duplicate"}
    assert shop.purchases() == before
    assert len(shop.purchase_events()) == 1


def test_orders_and_replays_posted_at_once_are_each_stored_once(shop: Shop) -> None:
    """A shop's retries and parallel deliveries: four orders, each posted three
    times at once. Every post is answered 200 (never a 500 from two
    transactions racing), and each order is stored, and its event recorded, once."""
    bodies = [checkout_body(order_id=f"P-{n}", email="karin@example.com") for n in range(4)] * 3
    start = threading.Barrier(len(bodies))

    def deliver(body: bytes) -> tuple[int, str]:
        start.wait()
        answer = post_checkout(shop, body)
        return answer.status_code, answer.json()["status"]

    with ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(pool.map(deliver, bodies))

    assert {status for status, _ in answers} == {200}
    assert sorted(outcome for _, outcome in answers) == ["duplicate"] * 8 + ["recorded"] * 4
    assert sorted(row.order_id for row in shop.purchases()) == ["P-0", "P-1", "P-2", "P-3"]
    assert len(shop.purchase_events()) == 4


def test_a_human_click_beats_the_ref(shop: Shop) -> None:
    shop.click("three-models", MONDAY + timedelta(minutes=5))
    answer = post_checkout(shop, checkout_body(nurture_ref=shop.ref("welcome")))
    assert answer.json() == {"status": "recorded", "credit": "click"}
    assert shop.purchases()[0].step_id == "three-models"


def test_the_last_of_several_human_clicks_wins(shop: Shop) -> None:
    shop.click("three-models", MONDAY + timedelta(minutes=5))
    shop.click("welcome", MONDAY + timedelta(minutes=30))
    post_checkout(shop, checkout_body(email="karin@example.com"))
    assert shop.purchases()[0].step_id == "welcome"


def test_a_machine_click_earns_nothing(shop: Shop) -> None:
    shop.click("three-models", MONDAY + timedelta(minutes=5), machine=True)
    answer = post_checkout(shop, checkout_body(nurture_ref=shop.ref("welcome")))
    assert answer.json()["credit"] == "ref"
    assert shop.purchases()[0].step_id == "welcome"


def test_a_click_outside_the_attribution_window_earns_nothing(
    engine: Engine, tmp_path: Path
) -> None:
    shop = make_shop(engine, tmp_path, attribution_window=3600.0)
    try:
        shop.click("three-models", MONDAY + timedelta(minutes=5))  # 2 h before the purchase
        answer = post_checkout(shop, checkout_body(nurture_ref=shop.ref("welcome")))
        assert answer.json()["credit"] == "ref"
        assert shop.purchases()[0].step_id == "welcome"
    finally:
        shop.runtime.dispatcher.close()


def test_a_bad_ref_falls_back_to_the_email(shop: Shop) -> None:
    forged = sign(["another-key"], REF, {"k": shop.key_of("welcome")}, now=FRIDAY)
    answer = post_checkout(shop, checkout_body(nurture_ref=forged, email="karin@example.com"))
    assert answer.json() == {"status": "recorded", "credit": "last_send"}
    assert shop.purchases()[0].step_id == "three-models"


def test_a_bad_ref_without_an_email_is_422_and_stores_nothing(shop: Shop) -> None:
    answer = post_checkout(shop, checkout_body(nurture_ref=shop.ref("welcome") + "x"))
    assert answer.status_code == 422
    assert "nurture_ref" in answer.json()["detail"]
    assert shop.nothing_stored()


def test_an_address_that_is_no_subscriber_is_acknowledged_not_stored(shop: Shop) -> None:
    answer = post_checkout(shop, checkout_body(email="stranger@example.org"))
    assert answer.status_code == 200
    assert answer.json()["status"] == "ignored"
    assert shop.nothing_stored()


def test_an_amount_given_as_a_json_number_stays_exact(shop: Shop) -> None:
    body = b'{"order_id": 7, "product": "sales-audit", "amount": 4900.10, "currency": "sek",'
    body += b' "occurred_at": "2026-11-30T11:55:00+01:00", "email": "karin@example.com"}'
    assert post_checkout(shop, body).status_code == 200
    [row] = shop.purchases()
    assert (row.order_id, row.amount, row.currency) == ("7", Decimal("4900.10"), "SEK")


NOW_T = int(NOW.timestamp())


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ("no signature", 401),
        ("malformed signature", 401),
        ("bad signature", 401),
        ("other secret", 401),
        ("stale", 401),
        ("from the future", 401),
        ("garbage body", 400),
        ("not an object", 400),
        ("missing amount", 422),
        ("missing order id", 422),
        ("missing email and ref", 422),
        ("bad currency", 422),
        ("negative amount", 422),
        ("amount too precise", 422),
        ("no time zone", 422),
        ("year one", 422),
        ("long order id", 422),
        ("lone surrogate in the order id", 422),
        ("lone surrogate in the product", 422),
        ("C1 control in the order id", 422),
        ("line separator in the product", 422),
        ("long s currency", 422),
        ("no-currency code", 422),
        ("oversized", 413),
    ],
)
def test_the_checkout_webhook_refuses(shop: Shop, case: str, status: int) -> None:
    good = checkout_body(email="karin@example.com")
    body, signature = good, checkout_signature(good)
    if case == "no signature":
        answer = shop.client.post("/webhooks/checkout", content=body)
    else:
        if case == "malformed signature":
            signature = "v1=abc"
        elif case == "bad signature":
            signature = checkout_signature(good).replace("v1=", "v1=0")[:-1]
        elif case == "other secret":
            signature = checkout_signature(good, secret="guessed")
        elif case == "stale":
            signature = checkout_signature(good, t=NOW_T - 301)
        elif case == "from the future":
            signature = checkout_signature(good, t=NOW_T + 301)
        else:
            body = {
                "garbage body": b"\xff\xfe not json",
                "not an object": b"[1, 2]",
                "missing amount": checkout_body(email="karin@example.com", amount=None),
                "missing order id": checkout_body(email="karin@example.com", order_id=None),
                "missing email and ref": checkout_body(),
                "bad currency": checkout_body(email="karin@example.com", currency="KRONOR"),
                "negative amount": checkout_body(email="karin@example.com", amount="-1"),
                "amount too precise": checkout_body(email="karin@example.com", amount="1.00001"),
                "no time zone": checkout_body(
                    email="karin@example.com", occurred_at="2026-11-30T10:55:00"
                ),
                "year one": checkout_body(
                    email="karin@example.com", occurred_at="0001-01-01T00:00:00+14:00"
                ),
                "long order id": checkout_body(email="karin@example.com", order_id="x" * 171),
                "lone surrogate in the order id": checkout_body(
                    email="karin@example.com", order_id="A-\ud800"
                ),
                "lone surrogate in the product": checkout_body(
                    email="karin@example.com", product="audit\udfff"
                ),
                "C1 control in the order id": checkout_body(
                    email="karin@example.com", order_id="A-\x85-1"
                ),
                "line separator in the product": checkout_body(
                    email="karin@example.com", product="audit\u2028x"
                ),
                "long s currency": checkout_body(email="karin@example.com", currency="\u017fek"),
                "no-currency code": checkout_body(email="karin@example.com", currency="XXX"),
                "oversized": checkout_body(email="karin@example.com", pad="x" * 1024 * 1024),
            }[case]
            signature = checkout_signature(body)
        answer = post_checkout(shop, body, signature)
    assert answer.status_code == status, answer.text
    assert shop.nothing_stored()


@pytest.mark.parametrize("path", ["checkout", "stripe", "shopify", "woocommerce"])
def test_an_endpoint_without_its_secret_is_404_and_accepts_nothing(
    engine: Engine, tmp_path: Path, path: str
) -> None:
    shop = make_shop(engine, tmp_path, **{f"{path}_webhook_secret": None})
    try:
        answer = shop.client.post(f"/webhooks/{path}", content=checkout_body(email="k@x.se"))
        assert answer.status_code == 404
        assert f"{path}_webhook_secret" in answer.json()["detail"]
        assert shop.nothing_stored()
    finally:
        shop.runtime.dispatcher.close()


# ------------------------------------------------------------------ Stripe


def stripe_event(
    *, amount: int = 1999, currency: str = "sek", kind: str = "checkout.session.completed",
    ref: str | None = None, email: str = "karin@example.com", **session: Any,
) -> dict[str, Any]:  # fmt: skip
    """A Checkout Session event as Stripe sends it (the fields we read, and some)."""
    obj: dict[str, Any] = {
        "id": "cs_test_a1B2c3D4e5F6",
        "object": "checkout.session",
        "amount_subtotal": amount,
        "amount_total": amount,
        "client_reference_id": ref,
        "currency": currency,
        "customer_details": {"email": email, "name": "Karin Lindqvist"},
        "customer_email": None,
        "livemode": False,
        "metadata": {"product": "sales-audit"},
        "mode": "payment",
        "payment_status": "paid",
        "status": "complete",
    }
    obj.update(session)
    return {
        "id": "evt_1QxYz2ExampleEvent",
        "object": "event",
        "api_version": "2024-06-20",
        "created": int(NOW.timestamp()) - 60,
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "type": kind,
    }


def stripe_post(shop: Shop, body: bytes, *, t: int | None = None, secret: str = "") -> Any:
    # Stripe's library checks the timestamp against the real clock.
    t = int(time.time()) if t is None else t
    key = (secret or SECRETS["stripe_webhook_secret"]).encode()
    mac = hmac.new(key, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    headers = {"Stripe-Signature": f"t={t},v1={mac}", "Content-Type": "application/json"}
    return shop.client.post("/webhooks/stripe", content=body, headers=headers)


def test_stripe_checkout_session_completed_with_the_ref_converts(shop: Shop) -> None:
    body = json.dumps(stripe_event(ref=shop.ref("welcome"))).encode()
    answer = stripe_post(shop, body)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"status": "recorded", "credit": "ref"}
    [row] = shop.purchases()
    assert (row.source, row.order_id, row.step_id) == ("stripe", "cs_test_a1B2c3D4e5F6", "welcome")
    assert (row.amount, row.currency) == (Decimal("19.99"), "SEK")
    assert stripe_post(shop, body).json() == {"status": "duplicate"}
    shop.runtime.dispatcher.dispatch(NOW)
    assert shop.enrollment_status() == "converted"


def test_stripe_zero_decimal_amounts_are_exact(shop: Shop) -> None:
    event = stripe_event(amount=1500, currency="jpy", metadata={"nurture_ref": shop.ref("welcome")})
    assert stripe_post(shop, json.dumps(event).encode()).status_code == 200
    [row] = shop.purchases()
    assert (row.amount, row.currency, row.step_id) == (Decimal("1500"), "JPY", "welcome")
    assert row.product is None  # metadata without a product: no product, goal not met


def test_stripe_by_email_and_other_events_are_ignored(shop: Shop) -> None:
    other = stripe_event(kind="payment_intent.succeeded")
    assert stripe_post(shop, json.dumps(other).encode()).json()["status"] == "ignored"
    unpaid = stripe_event(payment_status="unpaid")
    assert stripe_post(shop, json.dumps(unpaid).encode()).json()["status"] == "ignored"
    assert shop.nothing_stored()
    answer = stripe_post(shop, json.dumps(stripe_event()).encode())
    assert answer.json() == {"status": "recorded", "credit": "last_send"}


@pytest.mark.parametrize(
    ("case", "status"),
    [("bad signature", 401), ("no signature", 401), ("stale", 401), ("garbage body", 400),
     ("non-ASCII signature", 401), ("a list, signed", 400), ("deep nesting, signed", 400),
     ("missing amount", 422), ("bad created", 422), ("oversized", 413)],
)  # fmt: skip
def test_stripe_refuses(shop: Shop, case: str, status: int) -> None:
    body = json.dumps(stripe_event()).encode()
    if case == "bad signature":
        answer = stripe_post(shop, body, secret="whsec_guessed")
    elif case == "non-ASCII signature":
        header = f"t={int(time.time())},v1=\u00e9".encode()
        answer = shop.client.post(
            "/webhooks/stripe", content=body, headers={"Stripe-Signature": header}
        )
    elif case == "a list, signed":
        answer = stripe_post(shop, b"[1]")
    elif case == "deep nesting, signed":
        answer = stripe_post(shop, b"[" * 50_000)
    elif case == "no signature":
        answer = shop.client.post("/webhooks/stripe", content=body)
    elif case == "stale":
        answer = stripe_post(shop, body, t=int(time.time()) - 301)
    elif case == "garbage body":
        answer = stripe_post(shop, b"{not json")
    elif case == "missing amount":
        answer = stripe_post(shop, json.dumps(stripe_event(amount_total=None)).encode())
    elif case == "bad created":
        event = {**stripe_event(), "created": 10**20}
        answer = stripe_post(shop, json.dumps(event).encode())
    else:
        event = stripe_event(padding="x" * 1024 * 1024)
        answer = stripe_post(shop, json.dumps(event).encode())
    assert answer.status_code == status, answer.text
    assert shop.nothing_stored()


# ------------------------------------------------------------------ Shopify


def shopify_order(*, ref: str | None = None, **fields: Any) -> dict[str, Any]:
    order: dict[str, Any] = {
        "id": 820982911946154508,
        "admin_graphql_api_id": "gid://shopify/Order/820982911946154508",
        "name": "#1001",
        "email": "karin@example.com",
        "contact_email": "karin@example.com",
        "created_at": "2026-11-30T11:50:00+01:00",
        "processed_at": "2026-11-30T11:50:00+01:00",
        "currency": "SEK",
        "total_price": "4900.00",
        "subtotal_price": "3920.00",
        "total_tax": "980.00",
        "financial_status": "paid",
        "landing_site": "/products/sales-audit?utm_source=nurture",
        "note_attributes": [{"name": "gift", "value": "no"}],
        "line_items": [
            {"id": 466157049, "product_id": 632910392, "sku": "sales-audit",
             "title": "Säljprocessanalys", "quantity": 1, "price": "4900.00"},
        ],
        "customer": {"id": 115310627314723954, "email": "karin@example.com"},
    }  # fmt: skip
    if ref is not None:
        order["note_attributes"].append({"name": "nurture_ref", "value": ref})
    order.update(fields)
    return order


def shopify_post(shop: Shop, body: bytes, *, topic: str = "orders/paid", secret: str = "") -> Any:
    key = (secret or SECRETS["shopify_webhook_secret"]).encode()
    digest = base64.b64encode(hmac.new(key, body, hashlib.sha256).digest()).decode()
    headers = {
        "X-Shopify-Hmac-Sha256": digest,
        "X-Shopify-Topic": topic,
        "X-Shopify-Shop-Domain": "exempel.myshopify.com",
        "Content-Type": "application/json",
    }
    return shop.client.post("/webhooks/shopify", content=body, headers=headers)


def test_shopify_orders_paid_with_a_ref_in_the_note_attributes(shop: Shop) -> None:
    body = json.dumps(shopify_order(ref=shop.ref("welcome"))).encode()
    answer = shopify_post(shop, body)
    assert answer.json() == {"status": "recorded", "credit": "ref"}, answer.text
    [row] = shop.purchases()
    assert (row.source, row.order_id, row.product) == (
        "shopify", "820982911946154508", "sales-audit",
    )  # fmt: skip
    assert (row.amount, row.currency, row.step_id) == (Decimal("4900.00"), "SEK", "welcome")
    assert shopify_post(shop, body).json() == {"status": "duplicate"}
    shop.runtime.dispatcher.dispatch(NOW)
    assert shop.enrollment_status() == "converted"


def test_shopify_ref_in_the_landing_site_else_the_email(shop: Shop) -> None:
    landing = f"/products/sales-audit?nurture_ref={shop.ref('welcome')}"
    body = json.dumps(shopify_order(id=1, landing_site=landing)).encode()
    assert shopify_post(shop, body).json()["credit"] == "ref"
    body = json.dumps(shopify_order(id=2)).encode()
    assert shopify_post(shop, body).json()["credit"] == "last_send"
    assert [row.step_id for row in shop.purchases()] == ["welcome", "three-models"]


def test_shopify_other_topics_are_ignored(shop: Shop) -> None:
    body = json.dumps(shopify_order()).encode()
    assert shopify_post(shop, body, topic="orders/create").json()["status"] == "ignored"
    assert shop.nothing_stored()


def test_shopify_a_landing_site_that_is_no_url_holds_no_ref(shop: Shop) -> None:
    order = shopify_order(landing_site="http://[::1/?nurture_ref=x")
    answer = shopify_post(shop, json.dumps(order).encode())
    assert answer.json() == {"status": "recorded", "credit": "last_send"}, answer.text


@pytest.mark.parametrize(
    ("case", "status"),
    [("bad signature", 401), ("no signature", 401), ("garbage body", 400),
     ("missing total", 422), ("oversized", 413)],
)  # fmt: skip
def test_shopify_refuses(shop: Shop, case: str, status: int) -> None:
    body = json.dumps(shopify_order()).encode()
    if case == "bad signature":
        answer = shopify_post(shop, body, secret="guessed")
    elif case == "no signature":
        answer = shop.client.post("/webhooks/shopify", content=body)
    elif case == "garbage body":
        answer = shopify_post(shop, b"\x00\x01")
    elif case == "missing total":
        answer = shopify_post(shop, json.dumps(shopify_order(total_price=None)).encode())
    else:
        answer = shopify_post(shop, json.dumps(shopify_order(pad="x" * 1024 * 1024)).encode())
    assert answer.status_code == status, answer.text
    assert shop.nothing_stored()


# ------------------------------------------------------------------ WooCommerce


def woo_order(*, ref: str | None = None, **fields: Any) -> dict[str, Any]:
    order: dict[str, Any] = {
        "id": 727,
        "number": "727",
        "status": "processing",
        "currency": "EUR",
        "date_created_gmt": "2026-11-30T10:50:00",
        "date_paid_gmt": "2026-11-30T10:51:00",
        "total": "449.00",
        "total_tax": "89.80",
        "payment_method": "stripe",
        "billing": {"first_name": "Karin", "last_name": "Lindqvist", "email": "karin@example.com"},
        "meta_data": [{"id": 13106, "key": "_wc_order_attribution_source_type", "value": "utm"}],
        "line_items": [
            {"id": 315, "name": "Säljprocessanalys", "product_id": 93, "quantity": 1,
             "sku": "sales-audit", "total": "359.20"},
        ],
    }  # fmt: skip
    if ref is not None:
        order["meta_data"].append({"id": 13107, "key": "nurture_ref", "value": ref})
    order.update(fields)
    return order


def woo_post(
    shop: Shop, body: bytes, *, topic: str = "order.updated", secret: str = "", signed: bool = True
) -> Any:
    key = (secret or SECRETS["woocommerce_webhook_secret"]).encode()
    headers = {"X-WC-Webhook-Topic": topic, "X-WC-Webhook-Source": "https://shop.example.com/"}
    if signed:
        digest = base64.b64encode(hmac.new(key, body, hashlib.sha256).digest()).decode()
        headers["X-WC-Webhook-Signature"] = digest
    return shop.client.post("/webhooks/woocommerce", content=body, headers=headers)


def test_woocommerce_paid_order_with_a_ref_in_meta_data(shop: Shop) -> None:
    body = json.dumps(woo_order(ref=shop.ref("welcome"))).encode()
    answer = woo_post(shop, body)
    assert answer.json() == {"status": "recorded", "credit": "ref"}, answer.text
    [row] = shop.purchases()
    assert (row.source, row.order_id, row.step_id) == ("woocommerce", "727", "welcome")
    assert (row.amount, row.currency) == (Decimal("449.00"), "EUR")
    assert row.occurred_at == datetime(2026, 11, 30, 10, 51, tzinfo=UTC)
    # order.updated fires again when the order is completed: still one purchase.
    again = json.dumps(woo_order(ref=shop.ref("welcome"), status="completed")).encode()
    assert woo_post(shop, again).json() == {"status": "duplicate"}
    shop.runtime.dispatcher.dispatch(NOW)
    assert shop.enrollment_status() == "converted"


def test_woocommerce_unpaid_orders_and_pings_store_nothing(shop: Shop) -> None:
    pending = json.dumps(woo_order(status="pending")).encode()
    assert woo_post(shop, pending, topic="order.created").json()["status"] == "ignored"
    deleted = json.dumps(woo_order()).encode()
    assert woo_post(shop, deleted, topic="order.deleted").json()["status"] == "ignored"
    assert woo_post(shop, b"webhook_id=12", signed=False).json() == {"status": "ping"}
    assert shop.nothing_stored()
    by_email = json.dumps(woo_order()).encode()
    assert woo_post(shop, by_email, topic="order.created").json()["credit"] == "last_send"


def test_woocommerce_a_status_that_is_no_string_is_not_paid(shop: Shop) -> None:
    for status in (["completed"], {"status": "completed"}, 1, None):
        answer = woo_post(shop, json.dumps(woo_order(status=status)).encode())
        assert answer.json()["status"] == "ignored", answer.text
    assert shop.nothing_stored()


@pytest.mark.parametrize(
    ("case", "status"),
    [("bad signature", 401), ("no signature", 401), ("garbage body", 400),
     ("missing total", 422), ("oversized", 413)],
)  # fmt: skip
def test_woocommerce_refuses(shop: Shop, case: str, status: int) -> None:
    body = json.dumps(woo_order()).encode()
    if case == "bad signature":
        answer = woo_post(shop, body, secret="guessed")
    elif case == "no signature":
        answer = woo_post(shop, body, signed=False)
    elif case == "garbage body":
        answer = woo_post(shop, b"webhook_id=12&more")
    elif case == "missing total":
        answer = woo_post(shop, json.dumps(woo_order(total=None)).encode())
    else:
        answer = woo_post(shop, json.dumps(woo_order(pad="x" * 1024 * 1024)).encode())
    assert answer.status_code == status, answer.text
    assert shop.nothing_stored()


# ------------------------------------------------------------------ the CLI


@dataclass
class CliContext:
    """What ``nurture events`` reads from ``ctx.obj``, on the test database."""

    shop: Shop

    def store_settings(self) -> Settings:
        return self.shop.runtime.settings

    def now(self) -> datetime:
        return NOW

    def open_store(self) -> tuple[Engine, sessionmaker[Session]]:
        from nurture.store.db import make_engine

        engine = make_engine(self.shop.engine.url.render_as_string(hide_password=False))
        return engine, session_factory(engine)


def run_cli(shop: Shop, *args: str) -> Any:
    root = typer.Typer()

    @root.callback()
    def main(ctx: typer.Context) -> None:
        ctx.obj = CliContext(shop)

    root.add_typer(events_app, name="events")
    return CliRunner().invoke(root, ["events", *args], catch_exceptions=False)


def test_cli_records_a_purchase_and_the_goal_converts(shop: Shop) -> None:
    shop.click("welcome", MONDAY + timedelta(hours=1))
    args = ("add", "purchase", "--email", "karin@example.com", "--product", "sales-audit",
            "--amount", "4900", "--currency", "sek", "--order-id", "INV-1042",
            "--at", "2026-11-30T10:30:00Z")  # fmt: skip
    result = run_cli(shop, *args)
    assert result.exit_code == 0, result.output
    assert "Recorded purchase INV-1042 (sales-audit 4900 SEK) by karin@example.com" in result.stdout
    assert "credited to sales-process/welcome (last click)" in result.stdout
    [row] = shop.purchases()
    assert (row.source, row.order_id, row.amount, row.currency) == (
        "manual", "INV-1042", Decimal("4900"), "SEK",
    )  # fmt: skip
    assert row.occurred_at == datetime(2026, 11, 30, 10, 30, tzinfo=UTC)

    again = run_cli(shop, *args)
    assert again.exit_code == 0
    assert "already recorded" in again.stdout
    assert len(shop.purchases()) == 1
    shop.runtime.dispatcher.dispatch(NOW)
    assert shop.enrollment_status() == "converted"


def test_cli_generates_an_order_id(shop: Shop) -> None:
    args = ("add", "purchase", "--email", "karin@example.com", "--product", "x",
            "--amount", "1.50", "--currency", "EUR")  # fmt: skip
    assert run_cli(shop, *args).exit_code == 0
    assert run_cli(shop, *args).exit_code == 0
    orders = [row.order_id for row in shop.purchases()]
    assert len(set(orders)) == 2 and all(o.startswith("manual-") for o in orders)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("--email", "nobody@example.com"), 1, "no subscriber nobody@example.com"),
        (("--currency", "XYZW"), 1, "is not an ISO 4217 code"),
        (("--amount", "12,50"), 1, "is not a number"),
        (("--at", "yesterday"), 2, "--at:"),
        (("--email", "not an address"), 1, "invalid email address"),
    ],
)
def test_cli_refuses(shop: Shop, args: tuple[str, ...], code: int, message: str) -> None:
    base = {"--email": "karin@example.com", "--product": "p", "--amount": "1", "--currency": "SEK"}
    options = dict(base)
    options.update(dict(zip(args[::2], args[1::2], strict=True)))
    flat = [part for pair in options.items() for part in pair]
    result = run_cli(shop, "add", "purchase", *flat)
    assert result.exit_code == code, result.output
    assert message in result.stderr
    assert shop.nothing_stored()


def test_cli_knows_only_purchases(shop: Shop) -> None:
    result = run_cli(shop, "add", "refund", "--email", "karin@example.com", "--product", "p",
                     "--amount", "1", "--currency", "SEK")  # fmt: skip
    assert result.exit_code == 2
    assert "one of purchase" in result.stderr
