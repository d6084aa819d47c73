"""The web loop under load, on loopback: one ``nurture web`` process (uvicorn)
over a SQLite file, driven by one keep-alive HTTP client.

Run by hand (not in CI):

    .venv/bin/python benchmarks/web.py                 # defaults below
    .venv/bin/python benchmarks/web.py --count 5000 --batches 10

What it measures, in one run:

* ``dispatch``   the in-memory dispatch rate (emails/s) of the same machine,
                 same run: it sends the emails the events below are about;
* ``events``     signed SendGrid Event Webhook batches of 1,000 events each
                 (delivered, open, click for the emails just sent), events/s;
                 the goal is at least 4x the dispatch rate, since every email
                 yields several events;
* ``subscribe``  ``POST /subscribe`` (JSON) for new addresses, requests/s
                 (each sends a confirmation email through the memory transport);
* ``one-click``  RFC 8058 ``POST /unsubscribe/{token}``, requests/s;
* ``click``      ``GET /c/{token}`` answered with a 302, requests/s.

Requests are sequential (one client, one connection), so the figures are the
server's per-request cost plus loopback latency, not a concurrency test.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import httpx  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from dispatch import NOW, bench_settings, populate  # noqa: E402
from sqlalchemy import select  # noqa: E402

from nurture.app.clock import FixedClock  # noqa: E402
from nurture.app.runtime import build_runtime, freeze_startup_objects  # noqa: E402
from nurture.core.tokens import CLICK, sign  # noqa: E402
from nurture.sending.composer import build_links  # noqa: E402
from nurture.store.db import make_engine  # noqa: E402
from nurture.store.tables import SendRow, SubscriberRow  # noqa: E402

SECRET = "benchmark-secret-not-a-placeholder"
SENDGRID = "/webhooks/sendgrid"


def forwarded(i: int) -> dict[str, str]:
    """A client address of its own for request ``i`` (behind the trusted proxy)."""
    return {"X-Forwarded-For": f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dispatch_rate(url: str, count: int) -> dict[str, Any]:
    """Populate ``count`` due enrollments and send them with the memory transport."""
    from nurture.core.loader import load_sequences
    from nurture.testing import MemoryTransport

    loaded, _ = load_sequences([ROOT / "sequences"])
    populate(url, count, loaded["sales-process"].version)
    runtime = build_runtime(
        bench_settings(url, 1000, 1), FixedClock(NOW), transport=MemoryTransport(record=False),
        engine=make_engine(url), migrate=False,
    )  # fmt: skip
    freeze_startup_objects()
    started = time.perf_counter()
    report = runtime.dispatcher.dispatch(NOW)
    elapsed = time.perf_counter() - started
    runtime.close()
    return {"emails": report.sent, "seconds": round(elapsed, 2),
            "per_second": round(report.sent / elapsed)}  # fmt: skip


def start_server(folder: Path, url: str, port: int, public_key: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    env.update(
        NURTURE_DATABASE_URL=url,
        NURTURE_SECRET_KEY=SECRET,
        NURTURE_BASE_URL=f"http://127.0.0.1:{port}",
        NURTURE_TRANSPORT="memory",
        NURTURE_SEQUENCES_DIR=str(ROOT / "sequences"),
        NURTURE_TEMPLATES_DIR=str(ROOT / "templates"),
        NURTURE_SENDGRID_WEBHOOK_PUBLIC_KEY=public_key,
        # Every subscribe request comes from its own forwarded address, so the
        # per-address rate limit measures the handler, not the limiter.
        NURTURE_TRUSTED_PROXIES='["127.0.0.1"]',
    )
    (folder / "nurture.toml").write_text("", encoding="utf-8")
    # The server's log goes to a file: a pipe nobody reads fills up and blocks it.
    log = (folder / "web.log").open("w", encoding="utf-8")
    process = subprocess.Popen(
        [sys.executable, "-m", "nurture", "web", "--host", "127.0.0.1", "--port", str(port)],
        cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code in (200, 503):
                return process
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit(
        f"nurture web did not start: {process.stderr.read() if process.stderr else ''}"
    )


def signed_batches(
    keys: list[tuple[str, str]], per_batch: int, key: ec.EllipticCurvePrivateKey
) -> list[tuple[bytes, dict[str, str]]]:
    """Event batches of ``per_batch`` (delivered, open, click per send), each signed."""
    events: list[dict[str, Any]] = []
    stamp = int(NOW.timestamp())
    for n, (send_key, address) in enumerate(keys):
        for kind in ("delivered", "open", "click"):
            event: dict[str, Any] = {
                "email": address, "timestamp": stamp + 60, "event": kind,
                "sg_event_id": f"bench-{n}-{kind}", "sg_message_id": f"msg-{n}.filter",
                "nurture_send_id": send_key,
            }  # fmt: skip
            if kind == "click":
                event["url"] = "https://www.example.com/offer"
            if kind == "open":
                event["sg_machine_open"] = False
            events.append(event)
    batches = []
    for start in range(0, len(events), per_batch):
        body = json.dumps(events[start : start + per_batch]).encode()
        timestamp = str(int(time.time()))
        signature = key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        batches.append(
            (
                body,
                {
                    "Content-Type": "application/json",
                    "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
                    "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
                },
            )
        )
    return batches


def timed(label: str, calls: list[Any], expect: int) -> dict[str, Any]:
    started = time.perf_counter()
    bad = 0
    for call in calls:
        response = call()
        if response.status_code != expect:
            bad += 1
            if bad == 1:
                print(f"{label}: unexpected {response.status_code}: {response.text[:300]}")
    elapsed = time.perf_counter() - started
    return {"requests": len(calls), "unexpected": bad, "seconds": round(elapsed, 2),
            "per_second": round(len(calls) / elapsed)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=5000, help="emails dispatched")
    parser.add_argument("--requests", type=int, default=1000, help="per request kind")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="nurture-web-bench-"))
    url = f"sqlite:///{folder / 'bench.db'}"
    results: dict[str, Any] = {"dispatch": dispatch_rate(url, args.count)}

    engine = make_engine(url)
    with engine.connect() as conn:
        sends = [
            (row.key, row.email)
            for row in conn.execute(
                select(SendRow.key, SubscriberRow.email)
                .join(SubscriberRow, SubscriberRow.id == SendRow.subscriber_id)
                .where(SendRow.status == "sent")
            )
        ]
    engine.dispose()

    private = ec.generate_private_key(ec.SECP256R1())
    public_der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    port = free_port()
    server = start_server(folder, url, port, base64.b64encode(public_der).decode())
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=60) as client:
            batches = signed_batches(sends, 1000, private)
            events = timed(
                "events",
                [
                    (
                        lambda b=body, h=headers: client.post(
                            "/webhooks/sendgrid", content=b, headers=h
                        )
                    )
                    for body, headers in batches
                ],
                200,
            )
            total = sum(len(json.loads(body)) for body, _ in batches)
            events["events"] = total
            events["events_per_second"] = round(total / events["seconds"])
            results["events"] = events
            results["events_over_dispatch"] = round(
                events["events_per_second"] / results["dispatch"]["per_second"], 2
            )

            n = args.requests
            results["subscribe"] = timed(
                "subscribe",
                [
                    (lambda i=i: client.post(
                        "/subscribe",
                        json={"email": f"new{i}@example.com", "name": f"New {i}",
                              "tags": ["b2b"], "form": "bench"},
                        headers=forwarded(i),
                    ))
                    for i in range(n)
                ],
                202,
            )  # fmt: skip

            now = datetime.now(UTC)
            clicks = []
            for send_key, _address in sends[:n]:
                token = sign(SECRET, CLICK, {"k": send_key, "u": "https://www.example.com/offer"},
                             now=now)  # fmt: skip
                clicks.append(lambda t=token: client.get(f"/c/{t}", follow_redirects=False))
            results["click"] = timed("click", clicks, 302)

            leaves = []
            for _send_key, address in sends[:n]:
                links = build_links(base, SECRET, address, "sales-process", now=now)
                path = links.unsubscribe_url.removeprefix(base)
                leaves.append(lambda p=path: client.post(
                    p, content=b"List-Unsubscribe=One-Click",
                    headers={"Content-Type": "application/x-www-form-urlencoded"},
                ))  # fmt: skip
            results["one-click"] = timed("one-click", leaves, 200)
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
