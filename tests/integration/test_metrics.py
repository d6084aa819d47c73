"""``GET /metrics``: Prometheus's text format, read from the database at scrape
time (so every web process agrees), with the pass duration and webhook events
counted in-process, and an optional bearer token."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import Engine

from nurture.app.clock import FixedClock
from nurture.app.runtime import Runtime, build_runtime
from nurture.app.settings import Settings
from nurture.app.worker import Worker
from nurture.audience.subscribers import add_subscriber
from nurture.errors import AmbiguousSendError, PermanentSendError
from nurture.store.db import session_factory
from nurture.testing import MemoryTransport
from nurture.web.app import create_app
from tests.factories import example_workdir

NOW = datetime(2026, 11, 27, 14, 30, tzinfo=UTC)  # Friday 15:30 in Stockholm
TOKEN = "metrics-token-for-tests"

PRIVATE_KEY = ec.generate_private_key(ec.SECP256R1())
PUBLIC_KEY = base64.b64encode(
    PRIVATE_KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode("ascii")


def runtime_for(
    engine: Engine, tmp_path: Path, transport: MemoryTransport, **overrides: object
) -> Runtime:
    settings = example_workdir(tmp_path).model_copy(update=overrides)
    return build_runtime(
        settings, FixedClock(NOW), transport=transport, engine=engine, migrate=False
    )


def enroll(runtime: Runtime, *addresses: str) -> None:
    with session_factory(runtime.engine)() as session:
        for address in addresses:
            add_subscriber(
                session, email=address, tags=("b2b",), consent_source="test", now=NOW,
                sequences=runtime.registry.sequences(),
            )  # fmt: skip
        session.commit()


def scrape(
    client: TestClient, **headers: str
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = client.get("/metrics", headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    values = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def test_ledger_counts_queue_depth_and_heartbeats_come_from_the_database(
    engine: Engine, tmp_path: Path
) -> None:
    transport = MemoryTransport()
    runtime = runtime_for(engine, tmp_path, transport)
    enroll(runtime, "anna@example.com", "bo@example.com", "cecilia@example.com")
    worker = Worker(runtime)  # as `nurture run`: the app with its worker (not started here)
    client = TestClient(create_app(runtime, worker))

    before = scrape(client)
    assert before[("nurture_database_up", ())] == 1
    assert before[("nurture_queue_depth", ())] == 3
    # Every loaded sequence has its series before it sends: 0, not absent, so a
    # rate() or an alert over it has something to read from the first scrape.
    emails = {key: value for key, value in before.items() if key[0].startswith("nurture_emails_")}
    assert emails == {
        (name, (("sequence", "sales-process"),)): 0
        for name in ("nurture_emails_sent_total", "nurture_emails_failed_total",
                     "nurture_emails_unknown")
    }  # fmt: skip

    transport.fail_next(PermanentSendError("rejected"), AmbiguousSendError("timed out"))
    passes = before.get(("nurture_dispatch_pass_seconds_count", ()), 0.0)
    worker.tick()

    # A second app over the same database (another web process) sees the same.
    other = runtime_for(engine, tmp_path / "other", MemoryTransport())
    for values in (scrape(client), scrape(TestClient(create_app(other)))):
        seq = (("sequence", "sales-process"),)
        assert values[("nurture_emails_sent_total", seq)] == 1
        assert values[("nurture_emails_failed_total", seq)] == 1
        assert values[("nurture_emails_unknown", seq)] == 1
        assert values[("nurture_queue_depth", ())] == 0
        assert (
            values[("nurture_worker_heartbeat_age_seconds", (("worker", worker.worker_id),))] == 0
        )
        assert values[("nurture_worker_last_pass_ok", (("worker", worker.worker_id),))] == 1

    # The pass was timed in this process.
    after = scrape(client)
    assert after[("nurture_dispatch_pass_seconds_count", ())] == passes + 1

    # A web process without a worker (`nurture web`) has no pass histogram
    # of its own to show: it would say zero passes however busy the workers are.
    web_only = scrape(TestClient(create_app(runtime)))
    assert ("nurture_dispatch_pass_seconds_count", ()) not in web_only
    assert web_only[("nurture_emails_sent_total", seq)] == 1

    # Later, with no new tick, the heartbeat ages.
    runtime.clock = FixedClock(NOW + timedelta(seconds=90))
    later = TestClient(create_app(runtime))
    aged = scrape(later)
    assert aged[("nurture_worker_heartbeat_age_seconds", (("worker", worker.worker_id),))] == 90


def test_webhook_events_are_counted_by_type(engine: Engine, tmp_path: Path) -> None:
    runtime = runtime_for(
        engine, tmp_path, MemoryTransport(), sendgrid_webhook_public_key=PUBLIC_KEY
    )
    client = TestClient(create_app(runtime))
    key = ("nurture_webhook_events_total", (("provider", "sendgrid"), ("type", "opened")))
    before = scrape(client).get(key, 0.0)
    events = [
        {"email": "x@example.com", "event": "open", "sg_event_id": f"ev-{n}-{tmp_path.name}",
         "timestamp": int(NOW.timestamp())}
        for n in range(2)
    ]  # fmt: skip
    body = json.dumps(events).encode()
    stamp = str(int(NOW.timestamp()))
    signature = PRIVATE_KEY.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    answer = client.post(
        "/webhooks/sendgrid",
        content=body,
        headers={
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
            "Content-Type": "application/json",
        },
    )
    assert answer.status_code == 200, answer.text
    assert scrape(client)[key] == before + 2

    # A post whose signature fails is not counted.
    client.post("/webhooks/sendgrid", content=body, headers={"Content-Type": "application/json"})
    assert scrape(client)[key] == before + 2


def test_a_token_closes_the_endpoint(engine: Engine, tmp_path: Path) -> None:
    runtime = runtime_for(engine, tmp_path, MemoryTransport(), metrics_token=TOKEN)
    client = TestClient(create_app(runtime))
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                    {"Authorization": f"Basic {TOKEN}"}):  # fmt: skip
        answer = client.get("/metrics", headers=headers)
        assert answer.status_code == 401
        assert "nurture_" not in answer.text
        assert answer.headers["www-authenticate"] == "Bearer"
    assert scrape(client, Authorization=f"Bearer {TOKEN}")[("nurture_database_up", ())] == 1


def test_without_a_token_it_is_open(engine: Engine, tmp_path: Path) -> None:
    runtime = runtime_for(engine, tmp_path, MemoryTransport())
    assert isinstance(runtime.settings, Settings)
    assert runtime.settings.metrics_token is None
    assert scrape(TestClient(create_app(runtime)))[("nurture_queue_depth", ())] == 0


def test_a_database_that_does_not_answer_is_a_zero_not_an_error(
    engine: Engine, tmp_path: Path
) -> None:
    from nurture.store.db import make_engine

    broken = make_engine(f"sqlite:///{tmp_path / 'missing-folder' / 'gone.db'}")
    runtime = runtime_for(engine, tmp_path, MemoryTransport())
    runtime.engine = broken
    values = scrape(TestClient(create_app(runtime)))
    assert values[("nurture_database_up", ())] == 0
    assert ("nurture_queue_depth", ()) not in values


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _get(url: str, **headers: str) -> tuple[int, dict[str, str], str]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, dict(answer.headers), answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def test_a_separate_worker_serves_its_pass_durations(engine: Engine, tmp_path: Path) -> None:
    from nurture.ops.metrics import serve_worker_metrics

    port = _free_port()
    runtime = runtime_for(engine, tmp_path, MemoryTransport())
    stop = serve_worker_metrics("127.0.0.1", port)
    try:

        def passes() -> float:
            status, _, text = _get(f"http://127.0.0.1:{port}/metrics")
            assert status == 200, text
            [family] = [
                f for f in text_string_to_metric_families(text)
                if f.name == "nurture_dispatch_pass_seconds"
            ]  # fmt: skip
            [count] = [s.value for s in family.samples if s.name.endswith("_count")]
            return count

        before = passes()
        Worker(runtime).tick()
        assert passes() == before + 1
        # Only /metrics: any other path is a 404, as on the web side.
        for path in ("/", "/favicon.ico", "/metrics/", "/healthz"):
            status, _, text = _get(f"http://127.0.0.1:{port}{path}")
            assert status == 404, (path, status)
            assert "nurture_" not in text
    finally:
        stop()


def test_the_worker_port_wants_the_metrics_token_when_one_is_set() -> None:
    from nurture.ops.metrics import serve_worker_metrics

    port = _free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    stop = serve_worker_metrics("127.0.0.1", port, TOKEN)
    try:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                        {"Authorization": f"Basic {TOKEN}"}):  # fmt: skip
            status, answer_headers, text = _get(url, **headers)
            assert status == 401, headers
            assert answer_headers["WWW-Authenticate"] == "Bearer"
            assert "nurture_" not in text
        status, _, text = _get(url, Authorization=f"Bearer {TOKEN}")
        assert status == 200
        assert "nurture_dispatch_pass_seconds_count" in text
    finally:
        stop()
