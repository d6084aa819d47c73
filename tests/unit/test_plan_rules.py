"""The core rules ``plan`` and ``simulate --event`` apply: which steps an edit
puts out of reach, what the dispatcher does from an enrollment's next turn,
and which simulated events name a step that is not there or not yet sent."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from nurture.core.decisions import EnrollmentState, Event, StepRecord, passed_over
from nurture.core.model import Sequence
from nurture.core.simulation import early_engagement, simulate, timeline_from, unknown_step
from nurture.core.subscriber import Subscriber
from nurture.core.vocabulary import EventKind, SendStatus
from tests.factories import OFFER, make_sequence

STOCKHOLM = ZoneInfo("Europe/Stockholm")
KARIN = Subscriber(email="karin@example.com", name="Karin Lindqvist", timezone="Europe/Stockholm")
WINDOW = {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00", "end": "18:00"}


def t(*args: int) -> datetime:
    return datetime(*args, tzinfo=STOCKHOLM)  # type: ignore[misc]


def steps(*ids: str) -> Sequence:
    """Steps ``ids`` a day apart at 09:30; the last carries the offer."""
    return make_sequence(
        send_window=WINDOW,
        steps=[
            {"id": step, "wait": 0 if n == 0 else "1 day", "at": "09:30", "subject": step,
             "template": "x.md", **({"offer": OFFER} if n == len(ids) - 1 else {})}
            for n, step in enumerate(ids)
        ],
    )  # fmt: skip


def sent(*records: tuple[str, datetime]) -> EnrollmentState:
    return EnrollmentState(
        t(2026, 11, 30, 9, 0),
        tuple(StepRecord(step, SendStatus.SENT, at, at) for step, at in records),
    )


EDITED = steps("intro", "welcome", "three-models", "bonus", "choosing", "offer")


def test_nothing_is_passed_over_before_the_first_step() -> None:
    assert passed_over(EDITED, sent()) == ()


def test_a_step_inserted_before_the_position_is_passed_over() -> None:
    state = sent(("welcome", t(2026, 11, 30, 9, 30)), ("three-models", t(2026, 12, 1, 9, 30)))
    assert passed_over(EDITED, state) == ("intro",)


def test_at_the_end_every_inserted_step_is_passed_over() -> None:
    old = ("welcome", "three-models", "choosing", "offer")
    state = sent(*((step, t(2026, 12, 1 + n, 9, 30)) for n, step in enumerate(old)))
    assert passed_over(EDITED, state) == ("intro", "bonus")


def test_the_timeline_starts_at_the_next_turn_and_stops_after_a_send() -> None:
    state = sent(("welcome", t(2026, 11, 30, 9, 30)), ("three-models", t(2026, 12, 1, 9, 30)))
    # 'bonus' was due Wed 09:30, but the enrollment is next looked at Thu 09:30.
    looked_at = t(2026, 12, 3, 9, 30)
    [first] = timeline_from(EDITED, KARIN, state, looked_at, stop_after_send=True)
    assert (first.step, first.action, first.at) == ("bonus", "send", looked_at)
    whole = timeline_from(EDITED, KARIN, state, looked_at)
    assert [entry.step for entry in whole] == ["bonus", "choosing", "offer"]


def test_a_step_waiting_for_its_retry_is_not_sent_before_the_retry() -> None:
    state = sent(("welcome", t(2026, 11, 30, 9, 30)))
    retry = t(2026, 12, 1, 14, 0)
    [first] = timeline_from(
        EDITED, KARIN, state, t(2026, 12, 1, 9, 30), not_before={"three-models": retry},
        stop_after_send=True,
    )  # fmt: skip
    assert (first.step, first.at) == ("three-models", retry)


def test_unknown_step_suggests_the_nearest_id() -> None:
    clicked = Event(EventKind.CLICKED, t(2026, 12, 1, 10, 0), step="thre-models")
    assert unknown_step(EDITED, clicked) == (
        "test-seq has no step 'thre-models' (did you mean 'three-models'?)"
    )
    far = Event(EventKind.OPENED, t(2026, 12, 1, 10, 0), step="zzz")
    assert "its steps are intro, welcome, three-models" in (unknown_step(EDITED, far) or "")
    assert unknown_step(EDITED, Event(EventKind.PURCHASED, t(2026, 12, 1, 10, 0))) is None
    ok = Event(EventKind.OPENED, t(2026, 12, 1, 10, 0), step="bonus")
    assert unknown_step(EDITED, ok) is None


def test_engagement_before_the_send_is_reported_with_the_send_time() -> None:
    start = t(2026, 11, 30, 9, 0)
    timeline = simulate(EDITED, KARIN, start)
    sends = {entry.step: entry.at for entry in timeline}
    early = Event(EventKind.CLICKED, sends["bonus"] - timedelta(hours=1), step="bonus")
    warning = early_engagement(timeline, early)
    assert warning is not None
    assert f"'bonus' is sent on {sends['bonus']:%a %Y-%m-%d %H:%M %Z}" in warning
    late = Event(EventKind.CLICKED, sends["bonus"] + timedelta(hours=1), step="bonus")
    assert early_engagement(timeline, late) is None
    after_exit = simulate(EDITED, KARIN, start, [Event(EventKind.UNSUBSCRIBED, start)])
    never = Event(EventKind.OPENED, start + timedelta(days=3), step="offer")
    assert "'offer' is not sent in this simulation" in (early_engagement(after_exit, never) or "")
