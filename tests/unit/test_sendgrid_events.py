"""SendGrid's Event Webhook words become our EventKind at the boundary."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from nurture.core.vocabulary import EventKind
from nurture.transports.sendgrid_events import kind_of, read_event, read_events

EVENTS: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent.parent / "data" / "sendgrid" / "events.json").read_text("utf-8")
)


def _sample(event: str, **match: Any) -> dict[str, Any]:
    found = [
        item
        for item in EVENTS
        if item["event"] == event and all(item.get(k) == v for k, v in match.items())
    ]
    assert len(found) == 1, (event, match)
    return found[0]


def test_every_sample_reads_in_our_words() -> None:
    kinds = [
        (item["event"], item.get("type"), event.kind)
        for item, event in zip(EVENTS, read_events(EVENTS), strict=True)
    ]
    assert kinds == [
        ("processed", None, EventKind.QUEUED),
        ("delivered", None, EventKind.DELIVERED),
        ("deferred", None, EventKind.DEFERRED),
        ("bounce", "bounce", EventKind.BOUNCED),
        ("bounce", "blocked", EventKind.FAILED),  # the server, not the address
        ("dropped", None, EventKind.REJECTED),
        ("open", None, EventKind.OPENED),
        ("open", None, EventKind.OPENED),
        ("click", None, EventKind.CLICKED),
        ("spamreport", None, EventKind.COMPLAINED),
        ("unsubscribe", None, EventKind.UNSUBSCRIBED),
        ("group_unsubscribe", None, EventKind.UNSUBSCRIBED),
        ("group_resubscribe", None, EventKind.SUBSCRIBED),
        ("account_status_change", "compliance_suspend", EventKind.UNKNOWN),
    ]


def test_a_click_carries_everything_the_webhook_route_needs() -> None:
    payload = _sample("click")
    event = read_event(payload)
    assert event.kind is EventKind.CLICKED
    assert event.occurred_at == datetime(2025, 12, 1, 11, 1, tzinfo=UTC)
    assert event.occurred_at.tzinfo is UTC
    assert event.provider_event_id == payload["sg_event_id"]
    # The ledger keeps the Mail Send API's X-Message-Id: the part before the dot.
    assert event.message_id == "W8t5r2kXQ0ucA3pZkB6yVg"
    assert event.email == "karin@example.com"
    assert event.send_id == "5f0c1a9e2b7d4c3f8a6e1d2c3b4a5f60"
    assert (event.sequence_id, event.step_id) == ("sales-process", "welcome")
    assert event.url == "https://example.com/three-models?utm_source=nurture"
    assert event.machine is False
    assert event.provider_event == "click"


def test_the_raw_payload_is_kept_untouched() -> None:
    payload = _sample("bounce", type="bounce")
    before = copy.deepcopy(payload)
    event = read_event(payload)
    assert event.payload is payload
    assert payload == before


def test_machine_opens_are_flagged() -> None:
    person = read_event(_sample("open", sg_machine_open=False))
    machine = read_event(_sample("open", sg_machine_open=True))
    assert (person.kind, person.machine) == (EventKind.OPENED, False)
    assert (machine.kind, machine.machine) == (EventKind.OPENED, True)
    assert machine.url is None


def test_an_unknown_event_type_is_unknown_not_an_error() -> None:
    payload = _sample("account_status_change")
    event = read_event(payload)
    assert event.kind is EventKind.UNKNOWN
    assert event.provider_event == "account_status_change"
    assert (event.email, event.send_id, event.message_id) == (None, None, None)
    assert event.payload == payload


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"event": None},
        {"event": 7},
        {"event": "Open"},  # SendGrid's words are lowercase; no guessing
        {"event": "bounce", "type": "something-new"},
    ],
)
def test_odd_event_objects_still_read(payload: dict[str, Any]) -> None:
    event = read_event(payload)
    expected = EventKind.BOUNCED if payload.get("event") == "bounce" else EventKind.UNKNOWN
    assert event.kind is expected
    assert kind_of(payload) is expected
    assert event.occurred_at is None


@pytest.mark.parametrize("stamp", [None, "1764583200", True, 10**20])
def test_a_timestamp_that_is_no_time_is_none(stamp: Any) -> None:
    assert read_event({"event": "open", "timestamp": stamp}).occurred_at is None


def test_a_post_must_be_an_array_of_objects() -> None:
    with pytest.raises(TypeError, match="array"):
        read_events({"event": "open"})
    with pytest.raises(TypeError, match="object"):
        read_events(["open"])
