"""The fake SendGrid counts mail sends per ``nurture_send_id``: what the crash
test reads to know which emails reached the provider, and how many times."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from nurture.testing.fake_sendgrid import FakeSendGrid
from nurture.testing.fake_sendgrid_http import MAIL_SEND_PATH


def body(send_id: str | None) -> dict[str, Any]:
    mail: dict[str, Any] = {
        "personalizations": [{"to": [{"email": "bo@example.org"}]}],
        "from": {"email": "anna@example.com"},
        "subject": "Hej",
        "content": [{"type": "text/plain", "value": "Hej Bo"}],
    }
    if send_id is not None:
        mail["custom_args"] = {"nurture_send_id": send_id}
    return mail


def post(url: str, payload: dict[str, Any]) -> int:
    request = urllib.request.Request(
        url + MAIL_SEND_PATH,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_mail_sends_are_counted_per_send_id_received_and_accepted() -> None:
    with FakeSendGrid(record=False) as fake:
        fake.enqueue("500")
        assert post(fake.url, body("a")) == 500
        assert post(fake.url, body("a")) == 202
        assert post(fake.url, body("b")) == 202
        assert post(fake.url, body(None)) == 202  # no custom arg: not in the counts
        expected = {"a": {"received": 2, "accepted": 1}, "b": {"received": 1, "accepted": 1}}
        assert fake.send_ids() == expected
        with urllib.request.urlopen(fake.url + "/_fake/send_ids", timeout=5) as response:
            assert json.load(response) == expected
        fake.clear()
        assert fake.send_ids() == {}


def test_a_lost_answer_is_delivered_but_the_client_hears_nothing() -> None:
    with FakeSendGrid(record=False) as fake:
        fake.enqueue("lost-answer")
        try:
            post(fake.url, body("a"))
        except (urllib.error.URLError, ConnectionError) as exc:
            heard: object = exc
        else:
            heard = None
        assert heard is not None, "the client got an answer"
        assert fake.send_ids() == {"a": {"received": 1, "accepted": 1}}
        assert fake.stats()["delivered"] == 1


def test_the_history_of_a_send_id_has_each_answer_and_a_429_s_reset() -> None:
    with FakeSendGrid(record=False) as fake:
        fake.enqueue("429", reset_in=3.0)
        before = time.time()
        assert post(fake.url, body("a")) == 429
        assert post(fake.url, body("a")) == 202
        history = fake.send_history()["a"]
        assert [(h["status"], h["behaviour"]) for h in history] == [(429, "429"), (202, "accept")]
        assert history[0]["reset"] >= before + 3.0
        assert history[1]["reset"] is None
        assert before <= history[0]["at"] <= history[1]["at"]
        with urllib.request.urlopen(fake.url + "/_fake/send_history", timeout=5) as response:
            assert json.load(response) == {"a": history}
