"""Due times past the end of the calendar (9999-12-31) are NEVER, not an OverflowError.

The dispatcher plans a whole batch at once and gives the batch back when
planning raises, so one subscriber's due time past year 9999 (a clock set
there, or a sequence of many five-year waits) must come back as a value the
decision function already handles: a time later than any other, a wait that
never ends.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from nurture.core.batch import BatchInput, ClaimedEnrollment, Recipient
from nurture.core.decisions import LedgerEntry, Wait, decide_next_step, state_from_ledger
from nurture.core.loader import parse_sequence
from nurture.core.model import Step
from nurture.core.planner import plan_batch
from nurture.core.rendering import ComposedEmail, RenderedEmail
from nurture.core.schedule import SendWindow, SkipDates
from nurture.core.subscriber import Subscriber
from nurture.core.timing import (
    NEVER,
    Calendar,
    DueTime,
    due_at,
    earliest_after_wait,
    next_allowed,
)
from nurture.core.vocabulary import EnrollmentStatus, SendStatus
from tests.factories import make_sequence

STOCKHOLM = ZoneInfo("Europe/Stockholm")
NEW_YORK = ZoneInfo("America/New_York")
TOKYO = ZoneInfo("Asia/Tokyo")
LAST_DAY = datetime(9999, 12, 31, 10, 0, tzinfo=UTC)


def step(wait: object, at: str | None = None) -> Step:
    return Step.model_validate(
        {"id": "s", "wait": wait, "at": at, "subject": "x", "template": "x.md"}
    )


@pytest.mark.parametrize("zone", [STOCKHOLM, NEW_YORK, TOKYO, ZoneInfo("UTC")])
@pytest.mark.parametrize(
    ("wait", "at"),
    [("2 days", None), ("2 days", "09:30"), ("261 weeks", None), ("4 hours", None),
     ("0", "09:00"), ("30 hours", "08:00")],
)  # fmt: skip
def test_a_due_time_past_the_calendar_is_never(zone: ZoneInfo, wait: str, at: str | None) -> None:
    anchor = datetime(9999, 12, 31, 20, 0, tzinfo=UTC)
    due = due_at(step(wait, at), anchor, zone, Calendar())
    assert due == DueTime(NEVER)
    assert due.never and due.notes == ()
    assert earliest_after_wait(step(wait, at), anchor, zone) == NEVER


def test_a_due_time_just_inside_the_calendar_is_kept() -> None:
    anchor = datetime(9999, 12, 29, 10, 0, tzinfo=UTC)
    due = due_at(step("1 day"), anchor, STOCKHOLM, Calendar())
    assert due.at == datetime(9999, 12, 30, 10, 0, tzinfo=UTC)
    assert not due.never


def test_a_window_that_pushes_past_the_calendar_is_never() -> None:
    # 9999-12-31 is a Friday: a weekend-only window has no day left after it.
    assert date(9999, 12, 31).weekday() == 4
    weekend = Calendar(SendWindow(days=["sat", "sun"], start="08:00", end="18:00"))
    assert next_allowed(LAST_DAY, STOCKHOLM, weekend) == DueTime(NEVER)
    skipped = Calendar(skip_dates=SkipDates(dates=[date(9999, 12, 31)]))
    assert due_at(step("1 day", "09:30"), LAST_DAY - timedelta(days=1), TOKYO, skipped).never


def test_never_stays_never_and_is_outside_every_calendar() -> None:
    assert next_allowed(NEVER, STOCKHOLM, Calendar()) == DueTime(NEVER)
    assert earliest_after_wait(step("0"), NEVER, STOCKHOLM) == NEVER
    # 9999-12-31 23:59 UTC is already the year 10000 in Stockholm.
    assert not Calendar().contains(NEVER, STOCKHOLM)


def test_the_decision_is_a_wait_that_never_ends() -> None:
    sequence = make_sequence()  # welcome (no wait), then offer two days later
    state = state_from_ledger(LAST_DAY, [_sent("welcome", LAST_DAY)])
    subscriber = Subscriber(email="a@example.com")
    action = decide_next_step(sequence, state, subscriber, (), LAST_DAY)
    assert isinstance(action, Wait) and action.step.id == "offer"
    assert action.until == NEVER and action.notes == ()


def _sent(step_id: str, at: datetime) -> LedgerEntry:
    return LedgerEntry("k0", step_id, SendStatus.SENT, at, at, attempts=1)


def _compose(*args: object) -> ComposedEmail:
    subscriber = args[2]
    assert isinstance(subscriber, Subscriber)
    rendered = RenderedEmail(subject="Hi", preheader="", html="<p>hi</p>", text="hi", headers={})
    return ComposedEmail(
        rendered=rendered,
        sender_name="Anna",
        sender_email="anna@example.com",
        reply_to=None,
        to_email=subscriber.email,
        to_name=subscriber.name,
        message_id=f"<{args[3]}@nurture.test>",
        date=LAST_DAY,
    )


def test_the_planner_parks_one_enrollment_and_plans_the_others() -> None:
    text = (
        "version: 1\nid: seq\nname: Seq\nsender: {name: Anna, email: anna@example.com}\n"
        "timezone: Europe/Stockholm\nsteps:\n"
        "  - {id: welcome, wait: 0, subject: Hi, template: welcome.md}\n"
        "  - id: offer\n    wait: 2 days\n    subject: Offer\n    template: offer.md\n"
        "    offer: {name: Review, price: 1 kr, checkout_url: 'https://shop.example.com/c'}\n"
    )
    loaded, problems = parse_sequence(text, "seq.yaml")
    assert problems == [] and loaded is not None
    people = [
        Recipient(rid, f"p{rid}@example.com", "active", Subscriber(email=f"p{rid}@example.com"))
        for rid in (1, 2)
    ]
    batch = BatchInput(
        enrollments=[
            ClaimedEnrollment(10, 1, "seq", "welcome", LAST_DAY),  # welcome sent: offer next
            ClaimedEnrollment(20, 2, "seq", None, LAST_DAY),  # welcome due now
        ],
        recipients={r.id: r for r in people},
        ledgers={10: [_sent("welcome", LAST_DAY)]},
        events={},
        suppressed={},
    )
    numbers = iter(range(1, 100))
    plan = plan_batch(
        batch, {"seq": loaded}, LAST_DAY, compose=_compose, new_key=lambda: f"k{next(numbers)}"
    )
    parked = [change for change in plan.enrollments if change.id == 10]
    assert len(parked) == 1
    assert parked[0].status == EnrollmentStatus.ACTIVE
    assert parked[0].next_due_at == NEVER
    assert [email.enrollment_id for email in plan.emails] == [20]
