"""The pure planner: claimed enrollments in, typed writes out.

Every input is built by hand (no database); rendering is a fake ``compose``
that records what it was asked and fails for one chosen subscriber, and keys
come from a counter, so each test can state the exact writes it expects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from nurture.core.batch import (
    BatchInput,
    BatchPlan,
    ClaimedEnrollment,
    EnrollmentChange,
    LedgerChange,
    LedgerInsert,
    PlannedEmail,
    Recipient,
)
from nurture.core.decisions import Event, LedgerEntry
from nurture.core.loader import LoadedSequence, parse_sequence
from nurture.core.model import Step
from nurture.core.planner import after_send, exit_after, plan_batch, retry_later
from nurture.core.rendering import ComposedEmail, RenderedEmail
from nurture.core.subscriber import Subscriber
from nurture.core.vocabulary import EnrollmentStatus, EventKind, SendStatus

SEQUENCE_YAML = """\
version: 1
id: onboarding
name: Onboarding
sender: {name: Anna, email: anna@example.com}
timezone: UTC
goal: {event: purchased}
steps:
  - id: welcome
    wait: 0
    subject: Hi
    template: welcome.md
  - id: tips
    wait: 1 day
    when: "not clicked('welcome')"
    subject: Tips
    template: tips.md
  - id: offer
    wait: 2 days
    subject: Offer
    template: offer.md
    offer:
      name: Review
      price: 4 900 kr
      checkout_url: https://shop.example.com/checkout/review
"""

# A Tuesday; the sequence has no send window, so every time is inside it.
T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
DAY = timedelta(days=1)
SKIP_REASON = "condition \"not clicked('welcome')\" is false"


def _load() -> LoadedSequence:
    loaded, problems = parse_sequence(SEQUENCE_YAML, "onboarding.yaml")
    assert problems == [] and loaded is not None
    return loaded


LOADED = _load()
VERSION = LOADED.version


def recipient(rid: int, name: str, *, status: str = "active") -> Recipient:
    email = f"{name.lower()}@example.com"
    return Recipient(rid, email, status, Subscriber(email=email, name=name))


KARIN = recipient(10, "Karin")
JAMIE = recipient(20, "Jamie")


def enrollment(eid: int, who: Recipient, position: str | None = None) -> ClaimedEnrollment:
    return ClaimedEnrollment(eid, who.id, "onboarding", position, T0)


@dataclass
class FakeCompose:
    """Renders ``"<subject> <first name>"``; raises for ``fail_for`` addresses."""

    fail_for: Mapping[str, Exception] = field(default_factory=dict)
    calls: list[tuple[str, str, str, datetime]] = field(default_factory=list)

    def __call__(
        self, loaded: LoadedSequence, step: Step, subscriber: Subscriber, key: str, now: datetime
    ) -> ComposedEmail:
        self.calls.append((step.id, subscriber.email, key, now))
        error = self.fail_for.get(subscriber.email)
        if error is not None:
            raise error
        rendered = RenderedEmail(
            subject=f"{step.subject} {subscriber.first_name}",
            preheader="",
            html="<p>hello</p>",
            text="hello",
            headers={},
        )
        return ComposedEmail(
            rendered=rendered,
            sender_name="Anna",
            sender_email="anna@example.com",
            reply_to=None,
            to_email=subscriber.email,
            to_name=subscriber.name,
            message_id=f"<{key}@nurture.test>",
            date=now,
        )


def keys() -> Callable[[], str]:
    """k1, k2, ... in the order the planner asks."""
    numbers: Iterator[int] = iter(range(1, 1000))
    return lambda: f"k{next(numbers)}"


def no_new_key() -> str:
    raise AssertionError("no new ledger row was expected")


def plan(
    enrollments: Sequence[ClaimedEnrollment],
    now: datetime,
    *,
    ledgers: Mapping[int, Sequence[LedgerEntry]] | None = None,
    events: Mapping[int, Sequence[Event]] | None = None,
    suppressed: Mapping[str, str] | None = None,
    recipients: Sequence[Recipient] = (KARIN, JAMIE),
    compose: FakeCompose | None = None,
    new_key: Callable[[], str] | None = None,
    loaded: LoadedSequence = LOADED,
) -> BatchPlan:
    batch = BatchInput(
        enrollments=list(enrollments),
        recipients={r.id: r for r in recipients},
        ledgers=dict(ledgers or {}),
        events=dict(events or {}),
        suppressed=dict(suppressed or {}),
    )
    return plan_batch(
        batch,
        {"onboarding": loaded},
        now,
        compose=compose or FakeCompose(),
        new_key=new_key or keys(),
    )


def sent(key: str, step: str, due: datetime, at: datetime | None = None) -> LedgerEntry:
    return LedgerEntry(key, step, SendStatus.SENT, due, at or due, attempts=1)


def queued(
    key: str, eid: int, who: Recipient, step: str, due: datetime, subject: str
) -> LedgerInsert:
    return LedgerInsert(
        key, eid, who.id, "onboarding", VERSION, step, SendStatus.QUEUED, due, subject=subject
    )


def wait(eid: int, until: datetime, position: str | None) -> EnrollmentChange:
    return EnrollmentChange(eid, EnrollmentStatus.ACTIVE, None, until, position, VERSION)


# --------------------------------------------------------------------------- a step due


def test_a_due_step_becomes_a_queued_row_and_an_email() -> None:
    compose = FakeCompose()
    result = plan([enrollment(1, KARIN)], T0, compose=compose)

    assert result.inserts == [queued("k1", 1, KARIN, "welcome", T0, "Hi Karin")]
    assert result.changes == []
    # The enrollment moves on only once the email is answered (after_send).
    assert result.enrollments == []
    assert compose.calls == [("welcome", "karin@example.com", "k1", T0)]
    [email] = result.emails
    assert isinstance(email, PlannedEmail)
    assert (email.enrollment_id, email.recipient, email.step.id, email.due_at) == (
        1, KARIN, "welcome", T0,
    )  # fmt: skip
    assert (email.key, email.attempts, email.position, email.sequence_id) == (
        "k1", 0, None, "onboarding",
    )  # fmt: skip
    assert email.composed.message_id == "<k1@nurture.test>"
    assert (result.skipped, result.failed, result.exited, result.completed) == (0, 0, 0, 0)


def test_a_step_not_yet_due_only_sets_when_the_enrollment_is_due() -> None:
    ledger = {1: [sent("s1", "welcome", T0)]}
    compose = FakeCompose()
    result = plan([enrollment(1, KARIN, "welcome")], T0 + DAY / 2, ledgers=ledger, compose=compose)

    assert result.inserts == [] and result.changes == [] and result.emails == []
    assert result.enrollments == [wait(1, T0 + DAY, "welcome")]
    assert compose.calls == []


# --------------------------------------------------------------------------- when false


def test_a_false_when_is_a_skipped_row_with_its_reason_and_the_enrollment_moves_on() -> None:
    ledger = {1: [sent("s1", "welcome", T0)]}
    clicked = {KARIN.id: [Event(EventKind.CLICKED, T0 + timedelta(hours=1), "welcome")]}
    now = T0 + DAY
    compose = FakeCompose()
    result = plan(
        [enrollment(1, KARIN, "welcome")], now, ledgers=ledger, events=clicked, compose=compose
    )

    assert result.inserts == [
        LedgerInsert(
            "k1", 1, KARIN.id, "onboarding", VERSION, "tips", SendStatus.SKIPPED, now,
            SKIP_REASON, now,
        )
    ]  # fmt: skip
    assert result.changes == [] and result.emails == []
    # The offer's two days count from the skipped step's due time.
    assert result.enrollments == [wait(1, now + 2 * DAY, "tips")]
    assert result.skipped == 1
    assert result.notes == [("karin@example.com", "onboarding", "tips", f"skip: {SKIP_REASON}")]
    assert compose.calls == []


def test_a_skip_and_the_step_due_after_it_are_planned_in_one_go() -> None:
    # Three days late: tips is skipped, and the offer's wait counts from when
    # the skip was settled (late), so the offer waits its two days.
    ledger = {1: [sent("s1", "welcome", T0)]}
    clicked = {KARIN.id: [Event(EventKind.CLICKED, T0 + timedelta(hours=1), "welcome")]}
    now = T0 + 3 * DAY
    result = plan([enrollment(1, KARIN, "welcome")], now, ledgers=ledger, events=clicked)

    assert [(w.step_id, w.status, w.due_at, w.settled_at) for w in result.inserts] == [
        ("tips", SendStatus.SKIPPED, T0 + DAY, now)
    ]
    assert result.enrollments == [wait(1, now + 2 * DAY, "tips")]


# --------------------------------------------------------------------------- pending rows


@pytest.mark.parametrize("status", [SendStatus.RETRY, SendStatus.QUEUED])
def test_a_pending_row_that_is_due_is_taken_over_not_inserted_again(status: SendStatus) -> None:
    now = T0 + timedelta(minutes=5)
    ledger = {1: [LedgerEntry("r1", "welcome", status, T0, None, 2, now - timedelta(minutes=1))]}
    result = plan([enrollment(1, KARIN)], now, ledgers=ledger, new_key=no_new_key)

    assert result.inserts == []
    assert result.changes == [LedgerChange("r1", 1, SendStatus.QUEUED, None, None, "Hi Karin")]
    [email] = result.emails
    assert (email.key, email.attempts, email.due_at) == ("r1", 2, T0)
    assert result.enrollments == []


def test_a_retry_not_yet_due_writes_nothing_but_the_enrollment_due_time() -> None:
    retry_at = T0 + timedelta(minutes=30)
    ledger = {1: [LedgerEntry("r1", "welcome", SendStatus.RETRY, T0, None, 1, retry_at)]}
    compose = FakeCompose()
    result = plan(
        [enrollment(1, KARIN)], T0 + timedelta(minutes=5), ledgers=ledger, compose=compose,
        new_key=no_new_key,
    )  # fmt: skip

    assert result.inserts == [] and result.changes == [] and result.emails == []
    assert result.enrollments == [wait(1, retry_at, None)]
    assert compose.calls == []


def test_a_failed_render_of_a_retry_row_changes_that_row() -> None:
    now = T0 + timedelta(minutes=5)
    ledger = {1: [LedgerEntry("r1", "welcome", SendStatus.RETRY, T0, None, 1, now)]}
    compose = FakeCompose({"karin@example.com": ValueError("no such attribute")})
    result = plan([enrollment(1, KARIN)], now, ledgers=ledger, compose=compose, new_key=no_new_key)

    reason = "could not render: no such attribute"
    assert result.inserts == []
    assert result.changes == [LedgerChange("r1", 1, SendStatus.FAILED, reason, now)]
    assert result.enrollments == [wait(1, T0 + DAY, "welcome")]


# --------------------------------------------------------------------------- leaving


@pytest.mark.parametrize(
    ("status", "suppressed", "reason"),
    [
        ("unsubscribed", {}, "subscriber is unsubscribed"),
        ("bounced", {}, "subscriber is bounced"),
        ("active", {"karin@example.com": "complained"}, "address suppressed: complained"),
    ],
)
def test_a_subscriber_who_may_not_be_mailed_exits_with_the_reason(
    status: str, suppressed: dict[str, str], reason: str
) -> None:
    who = recipient(10, "Karin", status=status)
    compose = FakeCompose()
    result = plan(
        [enrollment(1, who)], T0, suppressed=suppressed, recipients=[who], compose=compose,
        new_key=no_new_key,
    )  # fmt: skip

    assert result.enrollments == [
        EnrollmentChange(1, EnrollmentStatus.EXITED, reason, None, None, VERSION)
    ]
    assert result.inserts == [] and result.changes == [] and result.emails == []
    assert result.exited == 1
    assert compose.calls == []


def test_a_purchase_reaches_the_goal_and_converts() -> None:
    ledger = {1: [sent("s1", "welcome", T0)]}
    bought = {KARIN.id: [Event(EventKind.PURCHASED, T0 + DAY / 2, product="review")]}
    result = plan(
        [enrollment(1, KARIN, "welcome")], T0 + DAY, ledgers=ledger, events=bought,
        new_key=no_new_key,
    )  # fmt: skip

    assert result.enrollments == [
        EnrollmentChange(
            1, EnrollmentStatus.CONVERTED, "goal reached: purchased review", None, "welcome",
            VERSION,
        )
    ]  # fmt: skip
    assert result.inserts == [] and result.emails == []
    assert result.exited == 1


# --------------------------------------------------------------------------- poison rows


def test_a_render_error_fails_that_email_only() -> None:
    compose = FakeCompose({"karin@example.com": ValueError("attribute 'company' is too long")})
    result = plan([enrollment(1, KARIN), enrollment(2, JAMIE)], T0, compose=compose)

    reason = "could not render: attribute 'company' is too long"
    assert result.inserts == [
        LedgerInsert(
            "k1", 1, KARIN.id, "onboarding", VERSION, "welcome", SendStatus.FAILED, T0,
            reason, T0,
        ),
        queued("k2", 2, JAMIE, "welcome", T0, "Hi Jamie"),
    ]  # fmt: skip
    # Karin's enrollment moves on to the next step; Jamie's email goes out.
    assert result.enrollments == [wait(1, T0 + DAY, "welcome")]
    assert [(e.enrollment_id, e.key) for e in result.emails] == [(2, "k2")]
    assert result.failed == 1
    assert result.notes == [("karin@example.com", "onboarding", "welcome", f"failed: {reason}")]


def test_an_error_without_a_message_still_gives_a_reason() -> None:
    compose = FakeCompose({"karin@example.com": RecursionError()})
    result = plan([enrollment(1, KARIN)], T0, compose=compose)

    assert [(w.status, w.reason) for w in result.inserts] == [
        (SendStatus.FAILED, "could not render: RecursionError()")
    ]


# --------------------------------------------------------------------------- completing


def _all_decided(tips: SendStatus) -> list[LedgerEntry]:
    return [
        sent("s1", "welcome", T0),
        LedgerEntry("s2", "tips", tips, T0 + DAY, T0 + DAY, 1),
        sent("s3", "offer", T0 + 3 * DAY),
    ]


def test_completion_says_every_step_was_decided() -> None:
    result = plan(
        [enrollment(1, KARIN, "offer")], T0 + 4 * DAY,
        ledgers={1: _all_decided(SendStatus.SENT)}, new_key=no_new_key,
    )  # fmt: skip

    assert result.enrollments == [
        EnrollmentChange(
            1, EnrollmentStatus.COMPLETED, "every step decided", None, "offer", VERSION
        )
    ]
    assert result.completed == 1


def test_completion_past_an_unknown_step_says_so() -> None:
    result = plan(
        [enrollment(1, KARIN, "offer")], T0 + 4 * DAY,
        ledgers={1: _all_decided(SendStatus.UNKNOWN)}, new_key=no_new_key,
    )  # fmt: skip

    reason = "every step decided; the outcome of 'tips' is unknown (see `nurture sends resolve`)"
    assert result.enrollments == [
        EnrollmentChange(1, EnrollmentStatus.COMPLETED, reason, None, "offer", VERSION)
    ]


def test_an_unknown_last_email_completes_saying_so() -> None:
    # The dispatcher's path: the offer's answer was ambiguous (after_send).
    ledger = {1: [sent("s1", "welcome", T0), sent("s2", "tips", T0 + DAY)]}
    now = T0 + 3 * DAY
    result = plan([enrollment(1, KARIN, "tips")], now, ledgers=ledger)
    [email] = result.emails
    assert email.step.id == "offer"

    change, completed = after_send(email, SendStatus.UNKNOWN, now)

    reason = "every step decided; the outcome of 'offer' is unknown (see `nurture sends resolve`)"
    assert completed
    assert change == EnrollmentChange(1, EnrollmentStatus.COMPLETED, reason, None, "offer", VERSION)


def test_an_answered_email_records_the_version_it_was_planned_on() -> None:
    """The enrollment's ``sequence_version`` is the version the dispatcher last
    decided it under. An email planned on an edited sequence moves its
    enrollment on by that version's waits, so its answer records that version
    too, whatever the enrollment was on before (it kept the old one, and a
    later edit back to it read the new wait as the old version's)."""
    edited = parse_sequence(SEQUENCE_YAML.replace("wait: 2 days", "wait: 3 hours"), "s.yaml")[0]
    assert edited is not None and edited.version != VERSION
    ledger = {1: [sent("s1", "welcome", T0)]}
    now = T0 + DAY
    result = plan([enrollment(1, KARIN, "welcome")], now, ledgers=ledger, loaded=edited)
    [email] = result.emails
    assert email.step.id == "tips"

    sent_change, _ = after_send(email, SendStatus.SENT, now)
    assert sent_change == EnrollmentChange(
        1, EnrollmentStatus.ACTIVE, None, now + timedelta(hours=3), "tips", edited.version
    )
    for change in (
        retry_later(email, now + timedelta(minutes=5)),
        exit_after(email, "invalid address"),
    ):
        assert change.sequence_version == edited.version


# --------------------------------------------------------------------------- keys


def test_every_new_row_takes_its_key_from_new_key_in_order() -> None:
    ledger = {2: [sent("s1", "welcome", T0)]}
    clicked = {JAMIE.id: [Event(EventKind.CLICKED, T0 + timedelta(hours=1), "welcome")]}
    asked: list[str] = []
    counter = keys()

    def new_key() -> str:
        asked.append(counter())
        return asked[-1]

    compose = FakeCompose()
    third = recipient(30, "Lena")
    result = plan(
        [enrollment(1, KARIN), enrollment(2, JAMIE, "welcome"), enrollment(3, third)],
        T0 + DAY,
        ledgers=ledger,
        events=clicked,
        recipients=[KARIN, JAMIE, third],
        compose=compose,
        new_key=new_key,
    )

    assert asked == ["k1", "k2", "k3"]
    assert [(w.enrollment_id, w.step_id, w.status, w.key) for w in result.inserts] == [
        (1, "welcome", SendStatus.QUEUED, "k1"),
        (2, "tips", SendStatus.SKIPPED, "k2"),
        (3, "welcome", SendStatus.QUEUED, "k3"),
    ]
    # The key the email is rendered with (its Message-ID) is its row's key.
    assert [(e.key, e.composed.message_id) for e in result.emails] == [
        ("k1", "<k1@nurture.test>"),
        ("k3", "<k3@nurture.test>"),
    ]
    assert [call[2] for call in compose.calls] == ["k1", "k3"]


# --------------------------------------------------------------------------- when fails


def test_a_when_that_fails_holds_the_step_and_asks_for_a_pause() -> None:
    failing = SEQUENCE_YAML.replace("not clicked('welcome')", "subscriber.attributes.plan == 'pro'")
    loaded, problems = parse_sequence(failing, "onboarding.yaml")
    assert loaded is not None and problems == []
    now = T0 + DAY
    batch = BatchInput(
        enrollments=[enrollment(1, KARIN, "welcome")],
        recipients={KARIN.id: KARIN},
        ledgers={1: [sent("s1", "welcome", T0)]},
        events={},
        suppressed={},
    )
    result = plan_batch(batch, {"onboarding": loaded}, now, compose=FakeCompose(), new_key=keys())

    # Not skipped: the row waits as `retry` (no attempt spent) with the reason,
    # and the enrollment stays at its position, due again once resumed.
    [row] = result.inserts
    assert (row.key, row.step_id, row.status, row.settled_at) == (
        "k1", "tips", SendStatus.RETRY, None,
    )  # fmt: skip
    assert row.reason is not None and row.reason.startswith(
        "held: condition \"subscriber.attributes.plan == 'pro'\" failed: "
        "subscriber.attributes has no 'plan' for this subscriber"
    )
    assert row.reason.endswith("`nurture resume onboarding`")
    assert result.enrollments == [
        EnrollmentChange(1, EnrollmentStatus.ACTIVE, None, now, "welcome", loaded.version)
    ]
    assert result.emails == [] and result.skipped == 0 and result.held == 1
    [pause] = result.pauses
    assert (pause.enrollment_id, pause.sequence_id, pause.step_id) == (1, "onboarding", "tips")
    assert result.only({1}).pauses == [pause] and result.only({2}).pauses == []
