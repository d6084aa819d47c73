"""The relationship loop over real HTTP, against a real ``nurture run`` on a
loopback port with the outbox transport: sign up on the form, confirm from the
email, get step 1, leave with one click; click an offer, buy, and see the
purchase end the sequence and credit the email that earned it; start a
sequence from an event the customer's own app posts to the ingest API."""

from __future__ import annotations

import email
import email.policy
import hashlib
import hmac
import json
import re
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from nurture.store.db import make_engine
from tests.e2e.folders import enable_example
from tests.e2e.test_cli_engine import NURTURE, env, free_port, run

NOW = "2026-11-27T14:30:00Z"  # Friday 15:30 in Stockholm: inside the example's window
CHECKOUT_SECRET = "whsec-e2e-checkout"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0"
SCANNER = "Mozilla/5.0 (compatible; Barracuda Sentinel)"

QUICK_OFFER = """\
version: 1
id: quick-offer
name: Quick offer
sender:
  name: Anna
  email: anna@example.com
locale: en
timezone: Europe/Stockholm
trigger:
  event: subscribed
  tags: [quick]
goal:
  event: purchased
  product: sales-audit
steps:
  - id: offer
    wait: 0
    subject:
      en: An easy first step
    template: offer.html
    offer:
      name:
        en: Sales process review
      price: "4 900 kr"
      checkout_url: https://shop.example.com/checkout/sales-audit
  - id: last-chance
    wait: 3 days
    subject:
      en: Last chance
    template: offer.html
    offer:
      name:
        en: Sales process review
      price: "4 900 kr"
      checkout_url: https://shop.example.com/checkout/sales-audit
"""


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


OPENER = urllib.request.build_opener(NoRedirect)


def request(
    url: str, *, data: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], str]:
    """(status, headers with lower-case names, body) without following redirects."""
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with OPENER.open(req, timeout=10) as answer:
            head = {k.lower(): v for k, v in answer.headers.items()}
            return answer.status, head, answer.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        head = {k.lower(): v for k, v in error.headers.items()}
        return error.code, head, error.read().decode("utf-8", "replace")


def messages(outbox: Path) -> list[EmailMessage]:
    found = []
    for path in sorted(outbox.glob("*.eml")):
        parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        found.append(parsed)
    return found


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def mail_to(outbox: Path, address: str, subject: str) -> EmailMessage | None:
    for message in messages(outbox):
        to = message["To"].addresses[0].addr_spec
        if to == address and subject in str(message["Subject"]):
            return message
    return None


def html_of(message: EmailMessage) -> str:
    part = message.get_body(("html",))
    assert part is not None
    return str(part.get_content())


@contextmanager
def served(work: Path, db_url: str, **settings: str) -> Iterator[str]:
    """``nurture run`` on a free loopback port; yields its base URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    values = env(db_url)
    values.update(NURTURE_NOW=NOW, NURTURE_DISPATCH_INTERVAL="0.3", NURTURE_BASE_URL=base)
    values.update(settings)
    process = subprocess.Popen(
        [*NURTURE, "run", "--host", "127.0.0.1", "--port", str(port)], cwd=work, env=values,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        wait_for("nurture run to answer", lambda: _answers(f"{base}/healthz"))
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
        assert process.returncode == 0, output


def _answers(url: str) -> bool:
    try:
        return request(url)[0] in (200, 503)
    except OSError:
        return False


def scalar(db_url: str, sql: str, **params: Any) -> Any:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()
    finally:
        engine.dispose()


@pytest.fixture
def work(tmp_path: Path, db_url: str) -> Path:
    assert run("init", "work", cwd=tmp_path, db_url=db_url).returncode == 0
    enable_example(tmp_path / "work")
    return tmp_path / "work"


def test_sign_up_confirm_receive_and_leave_with_one_click(work: Path, db_url: str) -> None:
    outbox = work / "outbox"
    address = "nya.kunden@example.com"
    with served(work, db_url) as base:
        form = urllib.parse.urlencode(
            {"email": "Nya.Kunden@Example.com", "name": "Nya Kunden", "tags": "b2b",
             "form": "e2e", "website": ""}
        ).encode()  # fmt: skip
        status, _, page = request(
            f"{base}/subscribe", data=form,
            headers={"Content-Type": "application/x-www-form-urlencoded", "User-Agent": BROWSER},
        )  # fmt: skip
        assert status == 200, page

        confirmation = wait_for("the confirmation email", lambda: _confirmation(outbox, address))
        [confirm_url] = set(re.findall(rf"{re.escape(base)}/confirm/[A-Za-z0-9_.\-]+",
                                       html_of(confirmation)))  # fmt: skip
        assert scalar(db_url, "SELECT status FROM subscriber WHERE email = :e", e=address) == (
            "unconfirmed"
        )
        # A mail scanner follows the link first: that changes nothing.
        status, _, page = request(confirm_url, headers={"User-Agent": SCANNER})
        assert status == 200 and "Confirm my subscription" in page, page
        assert scalar(db_url, "SELECT status FROM subscriber WHERE email = :e", e=address) == (
            "unconfirmed"
        )
        # The person presses the page's one button: a form posting to the link.
        status, _, page = request(confirm_url, headers={"User-Agent": BROWSER})
        assert status == 200 and '<form method="post">' in page, page
        status, _, page = request(
            confirm_url, data=b"",
            headers={"User-Agent": BROWSER, "Content-Type": "application/x-www-form-urlencoded"},
        )  # fmt: skip
        assert status == 200 and "Your subscription is confirmed." in page, page

        welcome = wait_for("step 1", lambda: mail_to(outbox, address, "Välkommen"))
        assert welcome["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        [one_click] = re.findall(r"<(https?://[^>]+)>", str(welcome["List-Unsubscribe"]))
        assert one_click.startswith(f"{base}/unsubscribe/")
        status, headers, _ = request(
            one_click, data=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )  # fmt: skip
        assert status == 200 and "location" not in headers
        assert scalar(db_url, "SELECT status FROM subscriber WHERE email = :e", e=address) == (
            "unsubscribed"
        )

    later = (datetime.fromisoformat(NOW) + timedelta(days=30)).isoformat()
    after = run("--now", later, "dispatch", cwd=work, db_url=db_url)
    assert after.returncode == 0, after.stderr
    assert "sent 0," in after.stdout
    sent = scalar(
        db_url,
        "SELECT count(*) FROM send JOIN subscriber ON subscriber.id = send.subscriber_id"
        " WHERE subscriber.email = :e AND send.status = 'sent'",
        e=address,
    )
    assert sent == 1
    assert len([m for m in messages(outbox) if m["To"].addresses[0].addr_spec == address]) == 2


def _confirmation(outbox: Path, address: str) -> EmailMessage | None:
    for message in messages(outbox):
        if message["To"].addresses[0].addr_spec == address and "/confirm/" in html_of(message):
            return message
    return None


def test_click_the_offer_buy_and_the_purchase_ends_the_sequence(work: Path, db_url: str) -> None:
    (work / "sequences" / "quick-offer.yaml").write_text(QUICK_OFFER, encoding="utf-8")
    address = "buyer@example.com"
    added = run(
        "--now", NOW, "subscribers", "add", address, "--name", "Bo Buyer", "--locale", "en",
        "--tag", "quick", cwd=work, db_url=db_url,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr + added.stdout
    with served(work, db_url, NURTURE_CHECKOUT_WEBHOOK_SECRET=CHECKOUT_SECRET) as base:
        offer = wait_for("the offer", lambda: mail_to(work / "outbox", address, "easy first"))
        tracked = [
            url for url in re.findall(r'href="([^"]+)"', html_of(offer))
            if url.startswith(f"{base}/c/")
        ]  # fmt: skip
        targets = {}
        for url in tracked:
            status, headers, _ = request(url, headers={"User-Agent": BROWSER})
            assert status == 302
            targets[headers["location"]] = url
        [checkout] = [t for t in targets if t.startswith("https://shop.example.com/checkout/")]
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(checkout).query)
        assert query["utm_source"] == ["nurture"]
        [ref] = query["nurture_ref"]

        body = json.dumps(
            {"order_id": "order-1001", "nurture_ref": ref, "product": "sales-audit",
             "amount": "4900.00", "currency": "SEK", "occurred_at": NOW}
        ).encode()  # fmt: skip
        stamp = int(datetime.fromisoformat(NOW).timestamp())
        mac = hmac.new(
            CHECKOUT_SECRET.encode(), f"{stamp}.".encode() + body, hashlib.sha256
        ).hexdigest()
        status, _, answer = request(
            f"{base}/webhooks/checkout", data=body,
            headers={"Content-Type": "application/json",
                     "X-Nurture-Signature": f"t={stamp},v1={mac}"},
        )  # fmt: skip
        assert status == 200, answer
        wait_for(
            "the enrollment to convert",
            lambda: (
                scalar(
                    db_url,
                    "SELECT status FROM enrollment WHERE sequence_id = 'quick-offer'",
                )
                == "converted"
            ),
        )
    assert scalar(db_url, "SELECT step_id FROM purchase WHERE order_id = 'order-1001'") == "offer"
    assert str(scalar(db_url, "SELECT amount FROM purchase")).startswith("4900")
    later = (datetime.fromisoformat(NOW) + timedelta(days=10)).isoformat()
    after = run("--now", later, "dispatch", cwd=work, db_url=db_url)
    assert "sent 0," in after.stdout, after.stdout


TRIAL = """\
version: 1
id: trial
name: Trial
sender:
  name: Anna
  email: anna@example.com
locale: en
timezone: Europe/Stockholm
trigger:
  event: trial_started
steps:
  - id: started
    wait: 0
    subject:
      en: "Your {{ trigger.properties.plan }} trial"
    template: trial-welcome.md
  - id: upgrade
    wait: 10 days
    subject:
      en: Keep going
    template: offer.html
    offer:
      name:
        en: Sales process review
      price: "4 900 kr"
      checkout_url: https://shop.example.com/checkout/sales-audit
"""

TRIAL_SAMPLE = """\
- name: Sam Sample
  locale: en
  trigger:
    event: trial_started
    properties: {plan: pro}
"""


def test_an_event_from_the_customers_app_starts_a_sequence(work: Path, db_url: str) -> None:
    (work / "sequences" / "trial.yaml").write_text(TRIAL, encoding="utf-8")
    (work / "sequences" / "trial.sample.yaml").write_text(TRIAL_SAMPLE, encoding="utf-8")
    (work / "templates" / "en" / "trial-welcome.md").write_text(
        "Hi {{ subscriber.first_name }},\n\n"
        "Your {{ trigger.properties.plan }} trial has started.\n",
        encoding="utf-8",
    )
    created = run("tokens", "create", "site", cwd=work, db_url=db_url)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    address = "karin@example.com"
    added = run(
        "--now", NOW, "subscribers", "add", address, "--name", "Karin Lindqvist", "--locale", "en",
        cwd=work, db_url=db_url,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    with served(work, db_url) as base:
        event = json.dumps(
            {"email": address, "name": "trial_started", "id": "evt_8431",
             "properties": {"plan": "pro"}, "occurred_at": NOW}
        ).encode()  # fmt: skip
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        status, _, answer = request(f"{base}/api/v1/events", data=event, headers=headers)
        assert status == 201, answer
        assert json.loads(answer)["enrolled_in"] == ["trial"]

        started = wait_for("the trial email", lambda: mail_to(work / "outbox", address, "trial"))
        assert started["Subject"] == "Your pro trial"
        body = started.get_body(("plain",))
        assert body is not None and "Your pro trial has started." in body.get_content()

        status, _, answer = request(f"{base}/api/v1/events", data=event, headers=headers)
        assert status == 200 and json.loads(answer)["replay"] is True
        wrong = {**headers, "Authorization": "Bearer nrt_not-a-token"}
        status, _, _ = request(f"{base}/api/v1/events", data=event, headers=wrong)
        assert status == 401
        time.sleep(1.0)  # a few worker ticks: nothing more may go out
    trial_mail = [m for m in messages(work / "outbox") if "trial" in str(m["Subject"])]
    assert len(trial_mail) == 1
