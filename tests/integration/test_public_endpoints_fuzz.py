"""Generated requests to every public endpoint: never a 5xx, and nothing
changes unless the request was valid.

Hypothesis draws the method's body (random bytes, random JSON, random forms),
its content type, the signature and token headers each endpoint reads, and
path tokens of any text. The app runs with every webhook configured, over a
database with one subscriber who has been sent an email (so there is state
to damage). Before and after each request the whole database is read back:
only ``POST /subscribe`` may change it, and only with a 2xx answer (a
well-formed sign-up creates an unconfirmed subscriber).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.engine import Engine

from nurture.app.clock import FixedClock
from nurture.app.runtime import Runtime, build_runtime
from nurture.audience.tokens import create_token
from nurture.store.db import session_factory
from nurture.store.tables import SQLModel
from nurture.testing import MemoryTransport
from nurture.web.app import create_app
from tests.admin_kit import NOW
from tests.factories import example_workdir

_KEY = ec.generate_private_key(ec.SECP256R1()).public_key()
PUBLIC_KEY = base64.b64encode(
    _KEY.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
).decode("ascii")

ENDPOINTS: list[tuple[str, str]] = [
    ("POST", "/subscribe"),
    ("GET", "/subscribe/{token}"),
    ("GET", "/confirm/{token}"),
    ("HEAD", "/confirm/{token}"),
    ("POST", "/confirm/{token}"),
    ("GET", "/unsubscribe/{token}"),
    ("POST", "/unsubscribe/{token}"),
    ("GET", "/preferences/{token}"),
    ("POST", "/preferences/{token}"),
    ("GET", "/c/{token}"),
    ("HEAD", "/c/{token}"),
    ("GET", "/o/{token}"),
    ("POST", "/webhooks/sendgrid"),
    ("POST", "/webhooks/checkout"),
    ("POST", "/webhooks/stripe"),
    ("POST", "/webhooks/shopify"),
    ("POST", "/webhooks/woocommerce"),
    ("POST", "/api/v1/subscribers"),
    ("POST", "/api/v1/events"),
    ("GET", "/api/v1/subscribers/{token}"),
]

HEADERS = [
    "X-Twilio-Email-Event-Webhook-Signature",
    "X-Twilio-Email-Event-Webhook-Timestamp",
    "X-Nurture-Signature",
    "Stripe-Signature",
    "X-Shopify-Hmac-Sha256",
    "X-Shopify-Topic",
    "X-WC-Webhook-Signature",
    "X-WC-Webhook-Topic",
    "Authorization",
    "Accept-Language",
    "X-Forwarded-For",
    "User-Agent",
]

_header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=120)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=25,
)
_fields = st.sampled_from(
    [
        "email",
        "name",
        "locale",
        "timezone",
        "tags",
        "form",
        "csrf",
        "website",
        "scope",
        "List-Unsubscribe",
        "sequence",
        "all",
        "event",
        "id",
        "properties",
        "confirmed",
        "consent",
    ]
)


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes, str]:
    kind = draw(st.sampled_from(["bytes", "json", "form", "empty"]))
    if kind == "bytes":
        body = draw(st.binary(max_size=600))
    elif kind == "json":
        body = json.dumps(draw(_json)).encode()
    elif kind == "form":
        body = urlencode(draw(st.dictionaries(_fields, st.text(max_size=60), max_size=6))).encode()
    else:
        body = b""
    content_type = draw(
        st.sampled_from(
            [
                "application/json",
                "application/x-www-form-urlencoded",
                "multipart/form-data; boundary=zz",
                "multipart/form-data",
                "text/plain",
                "application/json; charset=utf-16",
                "",
            ]
        )
    )
    return body, content_type


@dataclass
class World:
    client: TestClient
    runtime: Runtime
    engine: Engine
    tables: list[str]

    def state(self) -> str:
        """A digest of every row of every table."""
        digest = hashlib.sha256()
        with self.engine.connect() as conn:
            for table in self.tables:
                rows = conn.execute(text(f"SELECT * FROM {table} ORDER BY 1")).all()
                digest.update(repr((table, rows)).encode())
        return digest.hexdigest()


@pytest.fixture
def world(engine: Engine, tmp_path: Path) -> Iterator[World]:
    base = example_workdir(tmp_path)
    settings_ = base.model_copy(
        update={
            "sendgrid_webhook_public_key": PUBLIC_KEY,
            "checkout_webhook_secret": "checkout-secret-for-tests",
            "stripe_webhook_secret": "whsec_test_secret_for_nurture",
            "shopify_webhook_secret": "shopify-app-secret-for-tests",
            "woocommerce_webhook_secret": "woo-secret-for-tests",
            "outbox_dir": tmp_path / "outbox",
        }
    )
    runtime = build_runtime(
        settings_, FixedClock(NOW), transport=MemoryTransport(), engine=engine, migrate=False
    )
    client = TestClient(create_app(runtime), raise_server_exceptions=False)
    with session_factory(engine)() as session:
        token = create_token(session, "site", "ingest", NOW).token
        session.commit()
    answer = client.post(
        "/api/v1/subscribers",
        content=json.dumps(
            {
                "email": "karin@example.com",
                "name": "Karin",
                "tags": ["b2b"],
                "consent": {"source": "test", "text": "yes"},
                "confirmed": True,
            }
        ),
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 201, answer.text
    runtime.dispatcher.dispatch(NOW)  # the welcome email: a send, links, a ledger row
    tables = sorted(SQLModel.metadata.tables)
    yield World(client, runtime, engine, tables)
    runtime.dispatcher.close()


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    endpoint=st.sampled_from(ENDPOINTS),
    token=st.text(max_size=80),
    body=bodies(),
    headers=st.dictionaries(st.sampled_from(HEADERS), _header_text, max_size=4),
)
def test_no_generated_request_gets_a_5xx_or_changes_state_unless_valid(
    world: World,
    endpoint: tuple[str, str],
    token: str,
    body: tuple[bytes, str],
    headers: dict[str, str],
) -> None:
    method, template = endpoint
    path = template.replace("{token}", quote(token, safe="") or "x")
    content, content_type = body
    sent = dict(headers)
    if content_type:
        sent["Content-Type"] = content_type
    before = world.state()
    answer = world.client.request(method, path, content=content, headers=sent)
    assert answer.status_code < 500, (method, path, answer.status_code, answer.text[:300])
    if (method, template) == ("POST", "/subscribe") and 200 <= answer.status_code < 300:
        return  # a valid sign-up may add an unconfirmed subscriber
    assert world.state() == before, (method, path, answer.status_code)
