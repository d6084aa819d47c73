"""decide_next_step and the simulator built on it: when, skip, goal exit, edits."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from nurture.core.conditions import ConditionError, Engagement, compile_condition
from nurture.core.decisions import (
    Complete,
    EnrollmentState,
    Event,
    Exit,
    Hold,
    Send,
    Skip,
    StepRecord,
    Wait,
    decide_next_step,
    next_step,
)
from nurture.core.loader import content_version
from nurture.core.model import Sequence
from nurture.core.simulation import simulate
from nurture.core.subscriber import Subscriber
from nurture.core.vocabulary import EnrollmentStatus, EventKind, SendStatus
from tests.factories import OFFER, make_sequence

STOCKHOLM = ZoneInfo("Europe/Stockholm")
KARIN = Subscriber(email="karin@example.com", name="Karin Lindqvist", tags=("b2b",))


def t(*args: int) -> datetime:
    return datetime(*args, tzinfo=STOCKHOLM)  # type: ignore[misc]


def three_steps(**overrides: Any) -> Sequence:
    fields: dict[str, Any] = {
        "send_window": {
            "days": ["mon", "tue", "wed", "thu", "fri"],
            "start": "08:00",
            "end": "18:00",
        },
        "goal": {"event": "purchased", "product": "sales-audit"},
    }
    fields.update(overrides)
    return make_sequence(
        steps=[
            {"id": "welcome", "wait": 0, "subject": "Hi", "template": "w.md"},
            {
                "id": "case",
                "wait": "2 days",
                "when": "not clicked('welcome')",
                "subject": "Case",
                "template": "c.md",
            },
            {"id": "offer", "wait": "1 day", "subject": "O", "template": "o.html", "offer": OFFER},
        ],
        **fields,
    )


def test_first_step_is_sent_at_enrollment_inside_window() -> None:
    seq = three_steps()
    state = EnrollmentState(enrolled_at=t(2026, 11, 24, 10, 0))
    action = decide_next_step(seq, state, KARIN, [], t(2026, 11, 24, 10, 0))
    assert isinstance(action, Send)
    assert action.step.id == "welcome"


def test_waits_until_due() -> None:
    seq = three_steps()
    state = EnrollmentState(
        t(2026, 11, 24, 10, 0), (StepRecord("welcome", SendStatus.SENT, t(2026, 11, 24, 10, 0)),)
    )
    action = decide_next_step(seq, state, KARIN, [], t(2026, 11, 24, 11, 0))
    assert isinstance(action, Wait)
    assert action.until == t(2026, 11, 26, 10, 0)
    assert action.step.id == "case"


def test_false_when_skips_with_reason() -> None:
    seq = three_steps()
    state = EnrollmentState(
        t(2026, 11, 24, 10, 0), (StepRecord("welcome", SendStatus.SENT, t(2026, 11, 24, 10, 0)),)
    )
    click = Event(EventKind.CLICKED, t(2026, 11, 24, 12, 0), step="welcome")
    action = decide_next_step(seq, state, KARIN, [click], t(2026, 11, 26, 10, 0))
    assert isinstance(action, Skip)
    assert action.reason == "condition \"not clicked('welcome')\" is false"


def test_events_in_the_future_are_ignored() -> None:
    seq = three_steps()
    state = EnrollmentState(
        t(2026, 11, 24, 10, 0), (StepRecord("welcome", SendStatus.SENT, t(2026, 11, 24, 10, 0)),)
    )
    click = Event(EventKind.CLICKED, t(2026, 11, 27, 12, 0), step="welcome")
    action = decide_next_step(seq, state, KARIN, [click], t(2026, 11, 26, 10, 0))
    assert isinstance(action, Send)


def test_goal_reached_exits_as_converted() -> None:
    seq = three_steps()
    state = EnrollmentState(t(2026, 11, 24, 10, 0))
    purchase = Event(EventKind.PURCHASED, t(2026, 11, 24, 9, 0), product="sales-audit")
    action = decide_next_step(seq, state, KARIN, [purchase], t(2026, 11, 24, 10, 0))
    assert action == Exit(
        "goal reached: purchased sales-audit", EnrollmentStatus.CONVERTED, purchase.at
    )


def test_other_product_does_not_reach_a_product_goal_but_counts_as_converted() -> None:
    seq = make_sequence(
        goal={"product": "sales-audit"},
        steps=[
            {"id": "a", "wait": 0, "when": "converted", "subject": "x", "template": "a.md"},
            {"id": "offer", "wait": 0, "subject": "x", "template": "o.md", "offer": OFFER},
        ],
    )
    state = EnrollmentState(t(2026, 11, 24, 10, 0))
    purchase = Event(EventKind.PURCHASED, t(2026, 11, 24, 9, 0), product="t-shirt")
    action = decide_next_step(seq, state, KARIN, [purchase], t(2026, 11, 24, 10, 0))
    assert isinstance(action, Send)  # `converted` is true; the goal is not reached


def test_goal_without_product_takes_any_purchase() -> None:
    seq = three_steps(goal={"event": "purchased"})
    purchase = Event(EventKind.PURCHASED, t(2026, 11, 24, 9, 0), product="anything")
    action = decide_next_step(
        seq, EnrollmentState(t(2026, 11, 24, 10, 0)), KARIN, [purchase], t(2026, 11, 24, 10, 0)
    )
    assert isinstance(action, Exit) and action.status == EnrollmentStatus.CONVERTED


@pytest.mark.parametrize("spelling", ["purchase", "purchased"])
def test_goal_event_keeps_its_old_spelling(spelling: str) -> None:
    # Files written before event kinds had one vocabulary say `purchase`:
    # they load as `purchased`, with the same content version.
    seq = three_steps(goal={"event": spelling})
    assert seq.goal is not None and seq.goal.event == EventKind.PURCHASED
    canonical = three_steps(goal={"event": "purchased"})
    assert content_version(seq) == content_version(canonical)


def test_goal_event_is_still_checked() -> None:
    with pytest.raises(ValueError, match="purchased"):
        three_steps(goal={"event": "clicked"})


def test_unsubscribe_exits() -> None:
    seq = three_steps()
    leave = Event(EventKind.UNSUBSCRIBED, t(2026, 11, 24, 10, 0))
    action = decide_next_step(
        seq, EnrollmentState(t(2026, 11, 24, 9, 0)), KARIN, [leave], t(2026, 11, 24, 11, 0)
    )
    assert action == Exit("unsubscribed", EnrollmentStatus.EXITED, leave.at)


@pytest.mark.parametrize(
    ("sequence", "at", "exits"),
    [
        (None, t(2026, 11, 24, 10, 0), True),  # from all email
        ("test-seq", t(2026, 11, 24, 10, 0), True),  # from this series
        ("tips", t(2026, 11, 24, 10, 0), False),  # from another series only
        (None, t(2026, 11, 24, 8, 0), False),  # before this enrollment began
        ("test-seq", t(2026, 11, 24, 8, 0), False),  # left before, enrolled again since
    ],
)
def test_an_unsubscribe_ends_only_what_it_was_from_and_only_since(
    sequence: str | None, at: datetime, exits: bool
) -> None:
    seq = three_steps()
    assert seq.id == "test-seq"
    leave = Event(EventKind.UNSUBSCRIBED, at, sequence=sequence)
    state = EnrollmentState(t(2026, 11, 24, 9, 0))
    action = decide_next_step(seq, state, KARIN, [leave], t(2026, 11, 24, 11, 0))
    if exits:
        assert action == Exit("unsubscribed", EnrollmentStatus.EXITED, at)
    else:
        assert isinstance(action, Send), action


def test_complete_after_last_step() -> None:
    seq = three_steps()
    history = tuple(StepRecord(s.id, SendStatus.SENT, t(2026, 11, 24, 10, 0)) for s in seq.steps)
    action = decide_next_step(
        seq, EnrollmentState(t(2026, 11, 24, 10, 0), history), KARIN, [], t(2026, 12, 1, 10, 0)
    )
    assert action == Complete()


def test_late_work_waits_for_the_window() -> None:
    # Due Thursday 10:00, worker back on Thursday 20:00: Friday 08:00, not now.
    seq = three_steps()
    state = EnrollmentState(
        t(2026, 11, 24, 10, 0), (StepRecord("welcome", SendStatus.SENT, t(2026, 11, 24, 10, 0)),)
    )
    action = decide_next_step(seq, state, KARIN, [], t(2026, 11, 26, 20, 0))
    assert isinstance(action, Wait)
    assert action.until == t(2026, 11, 27, 8, 0)
    late = decide_next_step(seq, state, KARIN, [], t(2026, 11, 27, 8, 0))
    assert isinstance(late, Send)
    assert late.due_at == t(2026, 11, 26, 10, 0)  # the schedule keeps its anchor


def test_after_a_late_email_the_next_wait_counts_from_when_it_went_out() -> None:
    # "case" was due Thursday 10:00 but went out the next Tuesday at 08:00
    # (the worker was down): "offer" (1 day later) follows on Wednesday, not at
    # once, so an outage never sends one person the overdue steps in a burst.
    seq = three_steps()
    history = (
        StepRecord("welcome", SendStatus.SENT, t(2026, 11, 24, 10, 0), t(2026, 11, 24, 10, 0)),
        StepRecord("case", SendStatus.SENT, t(2026, 11, 26, 10, 0), t(2026, 12, 1, 8, 0)),
    )
    state = EnrollmentState(t(2026, 11, 24, 10, 0), history)
    action = decide_next_step(seq, state, KARIN, [], t(2026, 12, 1, 8, 0))
    assert isinstance(action, Wait)
    assert action.until == t(2026, 12, 2, 8, 0)
    assert action.notes == ("counted from when 'case' went out late (Tue 2026-12-01 08:00)",)
    send = decide_next_step(seq, state, KARIN, [], t(2026, 12, 2, 8, 0))
    assert isinstance(send, Send)
    assert send.due_at == t(2026, 12, 2, 8, 0)


@pytest.mark.parametrize("minutes", [0, 1, 15])
def test_an_email_sent_within_a_quarter_hour_keeps_the_schedule(minutes: int) -> None:
    # A tick's delay (or a long rate-limited batch) is not an outage: the next
    # step stays where simulate put it, with no note.
    seq = three_steps()
    sent = t(2026, 11, 24, 10, minutes)
    on_time = StepRecord("welcome", SendStatus.SENT, t(2026, 11, 24, 10, 0), sent)
    action = decide_next_step(
        seq, EnrollmentState(t(2026, 11, 24, 10, 0), (on_time,)), KARIN, [], t(2026, 11, 24, 11)
    )
    assert isinstance(action, Wait)
    assert action.until == t(2026, 11, 26, 10, 0)
    assert action.notes == ()


def test_sixteen_minutes_late_moves_the_next_step() -> None:
    seq = three_steps()
    late = StepRecord("welcome", SendStatus.SENT, t(2026, 11, 24, 10, 0), t(2026, 11, 24, 10, 16))
    action = decide_next_step(
        seq, EnrollmentState(t(2026, 11, 24, 10, 0), (late,)), KARIN, [], t(2026, 11, 24, 11)
    )
    assert isinstance(action, Wait)
    assert action.until == t(2026, 11, 26, 10, 16)


def test_failing_condition_holds_the_step_with_the_error() -> None:
    seq = make_sequence(
        steps=[
            {
                "id": "a",
                "wait": 0,
                "when": "subscriber.attributes.plan == 'pro'",
                "subject": "x",
                "template": "a.md",
            },
            {"id": "offer", "wait": 0, "subject": "x", "template": "o.md", "offer": OFFER},
        ]
    )
    action = decide_next_step(
        seq, EnrollmentState(t(2026, 11, 24, 10, 0)), KARIN, [], t(2026, 11, 24, 10, 0)
    )
    # Not "false": the step is held (the dispatcher pauses the sequence).
    assert isinstance(action, Hold)
    assert action.step.id == "a"
    assert "failed" in action.reason and "subscriber.attributes has no 'plan'" in action.reason


def test_steps_matched_by_id_after_an_edit() -> None:
    seq = make_sequence(
        steps=[
            {"id": "inserted", "wait": 0, "subject": "x", "template": "a.md"},
            {"id": "welcome", "wait": 0, "subject": "x", "template": "a.md"},
            {"id": "new-after", "wait": 0, "subject": "x", "template": "a.md"},
            {"id": "offer", "wait": 0, "subject": "x", "template": "o.md", "offer": OFFER},
        ]
    )
    moment = t(2026, 11, 24, 10, 0)
    state = EnrollmentState(moment, (StepRecord("welcome", SendStatus.SENT, moment),))
    step = next_step(seq, state)
    assert step is not None and step.id == "new-after"  # not the one inserted before
    removed = EnrollmentState(
        moment,
        (
            StepRecord("welcome", SendStatus.SENT, moment),
            StepRecord("gone", SendStatus.SENT, moment),
        ),
    )
    step = next_step(seq, removed)
    assert step is not None and step.id == "new-after"


def test_naive_now_rejected() -> None:
    with pytest.raises(Exception, match="naive"):
        decide_next_step(
            three_steps(),
            EnrollmentState(t(2026, 11, 24, 10, 0)),
            KARIN,
            [],
            datetime(2026, 11, 24),
        )


class TestSimulate:
    def test_friday_afternoon_stockholm(self) -> None:
        seq = three_steps()
        timeline = simulate(seq, KARIN, t(2026, 11, 27, 16, 30))
        assert [(e.step, e.action, e.at.replace(tzinfo=None)) for e in timeline] == [
            ("welcome", "send", datetime(2026, 11, 27, 16, 30)),
            ("case", "send", datetime(2026, 11, 30, 8, 0)),
            ("offer", "send", datetime(2026, 12, 1, 8, 0)),
        ]

    def test_click_skips_and_purchase_exits_at_purchase_time(self) -> None:
        seq = three_steps()
        events = [
            Event(EventKind.CLICKED, t(2026, 11, 27, 17, 0), step="welcome"),
            Event(EventKind.PURCHASED, t(2026, 11, 30, 12, 0), product="sales-audit"),
        ]
        timeline = simulate(seq, KARIN, t(2026, 11, 27, 16, 30), events)
        assert [(e.step, e.action) for e in timeline] == [
            ("welcome", "send"),
            ("case", "skip"),
            (None, "exit"),
        ]
        assert timeline[-1].reason == "goal reached: purchased sales-audit"
        assert timeline[-1].at == t(2026, 11, 30, 12, 0)

    def test_times_are_in_the_subscriber_zone(self) -> None:
        seq = three_steps()
        jamie = Subscriber(email="j@example.com", timezone="America/New_York")
        timeline = simulate(seq, jamie, datetime(2026, 11, 27, 15, 0, tzinfo=UTC))
        assert timeline[0].at.utcoffset() is not None
        assert str(timeline[0].at.tzinfo) == "America/New_York"
        assert timeline[0].as_json()["at_utc"] == "2026-11-27T15:00:00Z"


class TestConditions:
    def test_sandbox_blocks_internals(self) -> None:
        condition = compile_condition("subscriber.__class__.__mro__")
        with pytest.raises(ConditionError, match="unsafe"):
            condition.evaluate({}, Engagement())

    def test_strict_undefined(self) -> None:
        with pytest.raises(ConditionError, match="subscriber has no field 'nope'"):
            compile_condition("subscriber.nope").evaluate({}, Engagement())

    def test_functions(self) -> None:
        condition = compile_condition("opened('a') and not clicked('b') and not converted")
        assert condition.referenced_steps == ("a", "b")
        assert condition.evaluate({}, Engagement(opened=frozenset({"a"})))
        assert not condition.evaluate({}, Engagement(opened=frozenset({"a"}), converted=True))
