"""``simulate`` near the end of the calendar: the timeline ends with ``never``.

A step due past 9999-12-31 used to end ``simulate`` in an OverflowError; it is
a step the dispatcher would wait for forever, so the timeline says so (and
why) and stops there.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from nurture.core.decisions import EnrollmentState, Event
from nurture.core.model import MAX_STEPS
from nurture.core.simulation import simulate, timeline_from
from nurture.core.subscriber import Subscriber
from nurture.core.timing import NEVER
from nurture.core.vocabulary import EventKind
from tests.factories import OFFER, make_sequence

KARIN = Subscriber(email="karin@example.com", timezone="Europe/Stockholm")
REASON = "never sent: it would be due beyond the calendar (year 9999), after a wait of 2 days"


def test_a_step_past_the_calendar_ends_the_timeline() -> None:
    start = datetime(9999, 12, 30, 10, 0, tzinfo=UTC)
    timeline = simulate(make_sequence(), KARIN, start)
    assert [(e.step, e.action) for e in timeline] == [("welcome", "send"), ("offer", "never")]
    never = timeline[-1]
    assert never.reason == REASON
    assert never.at == start  # when the wait for it began, in Karin's zone
    assert never.at.tzinfo is not None and str(never.at.tzinfo) == "Europe/Stockholm"
    assert json.dumps([entry.as_json() for entry in timeline])


def test_many_long_waits_end_in_never_not_a_crash() -> None:
    steps = [
        {"id": f"s{i}", "wait": "261 weeks", "subject": "Hi", "template": "welcome.md"}
        for i in range(MAX_STEPS)
    ]
    steps[-1]["offer"] = dict(OFFER)
    sequence = make_sequence(steps=steps)
    # 100 waits of five years each: from 9600 they run past the calendar.
    timeline = simulate(sequence, KARIN, datetime(9600, 11, 27, 9, 0, tzinfo=UTC))
    assert {e.action for e in timeline[:-1]} == {"send"} and len(timeline) < MAX_STEPS
    assert timeline[-1].action == "never"
    assert timeline[-1].at.year > 9990
    assert "beyond the calendar (year 9999)" in timeline[-1].reason


def test_an_event_before_the_end_still_counts() -> None:
    sequence = make_sequence(goal={"event": "purchased"})
    start = datetime(9999, 12, 30, 10, 0, tzinfo=UTC)
    bought = Event(EventKind.PURCHASED, datetime(9999, 12, 31, 12, 0, tzinfo=UTC))
    timeline = simulate(sequence, KARIN, start, [bought])
    assert [(e.step, e.action) for e in timeline] == [("welcome", "send"), (None, "exit")]


def test_an_enrollment_parked_at_never_is_shown_as_never() -> None:
    """What ``plan`` and the admin's timeline see for an enrollment the
    dispatcher parked: its next turn is NEVER, past the calendar in Stockholm."""
    state = EnrollmentState(datetime(9999, 12, 30, 10, 0, tzinfo=UTC))
    timeline = timeline_from(make_sequence(), KARIN, state, NEVER)
    assert [(e.step, e.action) for e in timeline] == [("welcome", "never")]
    assert timeline[0].at == NEVER  # shown in UTC: it has no date in Stockholm
