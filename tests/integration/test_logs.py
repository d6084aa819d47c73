"""Logs at DEBUG, in JSON, over a real dispatch through the fake SendGrid server
and a few web requests: every record is one JSON object with a stable
``action``, and no secret or email body is ever in the output."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from nurture.app.clock import FixedClock
from nurture.app.runtime import build_runtime
from nurture.app.worker import Worker
from nurture.audience.subscribers import add_subscriber
from nurture.ops.logs import configure_logging
from nurture.store.db import session_factory
from nurture.testing import FakeSendGrid
from nurture.web.app import create_app
from tests.factories import example_workdir

NOW = datetime(2026, 11, 27, 14, 30, tzinfo=UTC)
API_KEY = "SG.log-test-key-id.l0g-t3st-S3cret-part"
SECRET_KEY = "secret-key-that-must-not-be-logged-4b1f"
CHECKOUT_SECRET = "checkout-hmac-secret-never-logged-77"
STRIPE_SECRET = "whsec_stripe-secret-never-logged-88"
METRICS_TOKEN = "metrics-token-never-logged-99"
NAME_MARKER = "Zqxmarker"
BODY_MARKER = "helt enkelt inte"  # words of the (Swedish) welcome email's body
SECRETS = (API_KEY, "l0g-t3st-S3cret-part", SECRET_KEY, CHECKOUT_SECRET, STRIPE_SECRET)

PRIVATE_KEY = ec.generate_private_key(ec.SECP256R1())
PUBLIC_KEY = base64.b64encode(
    PRIVATE_KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode("ascii")


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Logging configured as ``nurture --log-format json -v`` does, into a buffer;
    the previous configuration restored afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    named = {name: logging.getLogger(name).level for name in logging.root.manager.loggerDict}
    buffer = io.StringIO()
    configure_logging("json", verbose=True, stream=buffer)
    try:
        yield buffer
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
        for name, old in named.items():
            logging.getLogger(name).setLevel(old)


def test_debug_json_logs_of_a_dispatch_and_web_requests_hold_no_secret(
    engine: Engine, tmp_path: Path, captured: io.StringIO, capfd: pytest.CaptureFixture[str]
) -> None:
    with FakeSendGrid(api_key=API_KEY) as fake:
        settings = example_workdir(tmp_path).model_copy(
            update={
                "transport": "sendgrid",
                "sendgrid_api_key": API_KEY,
                "sendgrid_api_host": fake.url,
                "secret_key": SECRET_KEY,
                "base_url": "https://mail.example.com",
                "checkout_webhook_secret": CHECKOUT_SECRET,
                "stripe_webhook_secret": STRIPE_SECRET,
                "sendgrid_webhook_public_key": PUBLIC_KEY,
                "metrics_token": METRICS_TOKEN,
            }
        )
        runtime = build_runtime(settings, FixedClock(NOW), engine=engine, migrate=False)
        try:
            with session_factory(engine)() as session:
                for address in ("karin@example.com", "bo@example.com"):
                    add_subscriber(
                        session, email=address, name=f"{NAME_MARKER} Lindqvist", tags=("b2b",),
                        consent_source="test", now=NOW, sequences=runtime.registry.sequences(),
                    )  # fmt: skip
                session.commit()
            # One email is refused by a provider that echoes the key in its error.
            fake.enqueue("400", message=f"invalid request with key {API_KEY}")
            Worker(runtime).tick()
            delivered = fake.delivered
            # The log is tested against what really went out.
            assert len(delivered) == 1
            sent_body = json.dumps(delivered[0], ensure_ascii=False)
            assert BODY_MARKER in sent_body and NAME_MARKER in sent_body

            # HTTP libraries logging a request's headers at DEBUG (as python_http_client
            # does), even when someone turned them up again.
            for name in ("python_http_client.client", "urllib3.connectionpool", "httpx"):
                logging.getLogger(name).setLevel(logging.DEBUG)
                logging.getLogger(name).debug(
                    "POST %s\nHeaders: %s", fake.url, {"Authorization": f"Bearer {API_KEY}"}
                )
            logging.getLogger("httpx").debug("authorization: %s", API_KEY)

            client = TestClient(create_app(runtime))
            assert client.get("/healthz").status_code == 200
            metrics = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
            assert metrics.status_code == 200
            send_id = delivered[0]["custom_args"]["nurture_send_id"]
            body = json.dumps(
                [{"email": "karin@example.com", "event": "delivered", "sg_event_id": "ev-1",
                  "nurture_send_id": send_id, "timestamp": int(NOW.timestamp())}]
            ).encode()  # fmt: skip
            stamp = str(int(NOW.timestamp()))
            signature = PRIVATE_KEY.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
            answer = client.post(
                "/webhooks/sendgrid",
                content=body,
                headers={
                    "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
                    "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
                },
            )
            assert answer.status_code == 200, answer.text
        finally:
            runtime.close()

    streams = capfd.readouterr()
    output = captured.getvalue() + streams.out + streams.err
    for secret in (*SECRETS, METRICS_TOKEN):
        assert secret not in output
    assert BODY_MARKER not in output
    assert NAME_MARKER not in output

    records = [json.loads(line) for line in captured.getvalue().splitlines()]
    assert records
    for record in records:
        assert {"time", "level", "logger", "action", "message"} <= set(record)
    actions = {record["action"] for record in records}
    assert {"worker.tick", "dispatch.pass", "send.failed", "webhook.received"} <= actions
    assert any(r["level"] == "DEBUG" for r in records)  # DEBUG really was on
    assert any("[redacted]" in r["message"] for r in records)  # the library's header line


def test_the_access_log_hides_the_tokens_of_subscribers_links(captured: io.StringIO) -> None:
    access = logging.getLogger("uvicorn.access")
    tokens = {
        path: f"eyJzIjoxfQ.{path.strip('/').replace('/', '')}-s1gnatur3_x"
        for path in ("/confirm/", "/unsubscribe/", "/preferences/", "/c/", "/o/")
    }
    for path, token in tokens.items():
        # As uvicorn logs a request line (the confirm link's button posts to it).
        for method in ("GET", "HEAD", "POST"):
            access.info(
                '%s - "%s %s HTTP/%s" %d', "203.0.113.9:5123", method, path + token, "1.1", 200
            )
    output = captured.getvalue()
    for path, token in tokens.items():
        assert token not in output
        assert f"{path}[redacted]" in output
    assert "/subscribe/newsletter" not in captured.getvalue()  # a form's name is no secret
    access.info(
        '%s - "%s %s HTTP/%s" %d', "203.0.113.9:5123", "GET", "/subscribe/newsletter", "1.1", 200
    )
    assert "/subscribe/newsletter" in captured.getvalue()


def test_a_client_that_goes_away_mid_body_is_no_error(
    engine: Engine, tmp_path: Path, captured: io.StringIO
) -> None:
    runtime = build_runtime(
        example_workdir(tmp_path), FixedClock(NOW), engine=engine, migrate=False
    )
    app = create_app(runtime)
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.disconnect"}  # the connection closed before the body came

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/subscribe", "raw_path": b"/subscribe", "query_string": b"",
        "root_path": "", "client": ("203.0.113.9", 5123), "server": ("testserver", 80),
        "headers": [(b"host", b"testserver"), (b"content-type", b"application/json"),
                    (b"content-length", b"100")],
    }  # fmt: skip
    try:
        # In a thread of its own: the browser tests' Playwright (sync API) keeps
        # an event loop marked running in this one for the whole session.
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, app(scope, receive, send)).result()  # raises if let through
    finally:
        runtime.close()
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 400
    records = [json.loads(line) for line in captured.getvalue().splitlines()]
    web = [r for r in records if r["logger"].startswith(("nurture.web", "uvicorn", "starlette"))]
    assert not [r for r in web if r["level"] in ("ERROR", "CRITICAL")], web
    assert any(r["action"] == "web.client_gone" for r in records)
