"""What happens next for one enrollment: the single decision function.

``decide_next_step`` is called by ``nurture simulate`` (with a virtual clock and
in-memory state) and by the live dispatcher (with rows from the database). Both
therefore agree by construction. It is pure: the clock is the ``now`` argument.

Steps are matched by id, so a sequence file may be edited while subscribers
are mid-way: the subscriber's position is the last step in the *current* file
that they already passed; the next step is the first one after it that they
have not passed. Removed steps are never sent; steps added after the position
are; steps inserted before it are not.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from nurture.core.conditions import ConditionError, Engagement, compile_condition
from nurture.core.model import Sequence, Step
from nurture.core.places import check_timezone
from nurture.core.subscriber import Subscriber
from nurture.core.timing import Calendar, DueTime, due_at, next_allowed, require_aware
from nurture.core.vocabulary import EnrollmentStatus, EventKind, SendStatus

# The ledger statuses of a step in the history: every one but `retry` and
# `queued` (a step still to be sent). A `reserved` step is in flight: decided,
# never sent again.
StepOutcome = Literal[
    SendStatus.RESERVED, SendStatus.SENT, SendStatus.SKIPPED, SendStatus.FAILED, SendStatus.UNKNOWN
]


@dataclass(frozen=True)
class Event:
    """Something the subscriber did: opened or clicked a step, bought, left."""

    kind: EventKind
    at: datetime
    step: str | None = None
    product: str | None = None
    sequence: str | None = None
    """The sequence an unsubscribe was from (None: from all email)."""


LATE_AFTER = timedelta(minutes=15)
"""An email sent later than this after its due time went out late: the next
wait counts from when it went out (see :attr:`EnrollmentState.anchor`)."""


@dataclass(frozen=True)
class StepRecord:
    """A step already decided for this enrollment: when it was due and when it
    was settled (``sent_at``: the email went out, or the step was skipped,
    failed or became unknown; None while it is in flight).

    The ledger stores the same time in ``send.sent_at`` for every outcome that
    moves the enrollment on, and :func:`state_from_ledger` reads it back, so the
    dispatcher, ``simulate`` and ``plan`` anchor the next wait on one value."""

    step_id: str
    outcome: StepOutcome
    due_at: datetime
    sent_at: datetime | None = None

    @property
    def went_out_late(self) -> bool:  # settled late, whatever the outcome
        """More than :data:`LATE_AFTER` after its due time: a normal tick's delay
        (or a long rate-limited batch) keeps the exact schedule `simulate` shows."""
        return self.sent_at is not None and self.sent_at - self.due_at > LATE_AFTER


@dataclass(frozen=True)
class EnrollmentState:
    """Where a subscriber is in a sequence: when they joined and what was decided."""

    enrolled_at: datetime
    history: tuple[StepRecord, ...] = ()

    @property
    def anchor(self) -> datetime:
        """Waits count from the previous step's due time, or from enrollment.

        When the previous email went out late (the worker was down, or the
        provider asked us to retry later), they count from when it went out:
        an outage delays the rest of the series instead of sending the overdue
        steps to one person all at once.
        """
        if not self.history:
            return self.enrolled_at
        last = self.history[-1]
        return last.sent_at if last.went_out_late and last.sent_at else last.due_at

    def with_record(self, record: StepRecord) -> EnrollmentState:
        return EnrollmentState(self.enrolled_at, (*self.history, record))


@dataclass(frozen=True)
class LedgerEntry:
    """One ledger row as the core reads it (built by the store from ``send``)."""

    key: str
    step_id: str
    status: SendStatus
    due_at: datetime
    settled_at: datetime | None = None
    attempts: int = 0
    next_attempt_at: datetime | None = None

    @property
    def pending(self) -> bool:
        """A step still to be sent (``retry``, or ``queued`` by a worker that
        lost it): not part of the history."""
        return self.status in (SendStatus.RETRY, SendStatus.QUEUED)


def state_from_ledger(enrolled_at: datetime, entries: Iterable[LedgerEntry]) -> EnrollmentState:
    """The enrollment's state from its ledger rows, in decision order."""
    history = tuple(
        StepRecord(e.step_id, e.status, e.due_at, e.settled_at)  # type: ignore[arg-type]
        for e in entries
        if not e.pending
    )
    return EnrollmentState(enrolled_at, history)


def settled(step_id: str, outcome: StepOutcome, due_at: datetime, at: datetime) -> StepRecord:
    """The record of a step settled at ``at`` (sent, skipped, failed or unknown)."""
    return StepRecord(step_id, outcome, due_at, at)


@dataclass(frozen=True)
class Wait:
    """Nothing to do until ``until``; ``step`` is what is due then."""

    until: datetime
    step: Step
    timing: DueTime | None = None
    extra: tuple[str, ...] = ()

    @property
    def notes(self) -> tuple[str, ...]:
        """Why the time is what it is (formatted on demand)."""
        return (*(self.timing.notes if self.timing else ()), *self.extra)


@dataclass(frozen=True)
class Send:
    """Send ``step`` now. ``due_at`` is its scheduled time."""

    step: Step
    due_at: datetime
    timing: DueTime | None = None
    extra: tuple[str, ...] = ()

    @property
    def notes(self) -> tuple[str, ...]:
        return (*(self.timing.notes if self.timing else ()), *self.extra)


@dataclass(frozen=True)
class Skip:
    """Do not send ``step``; record why and go on."""

    step: Step
    due_at: datetime
    reason: str


@dataclass(frozen=True)
class Hold:
    """``step``'s ``when`` raised instead of answering: neither send nor skip.

    A condition that fails is a mistake in the sequence, not "false": skipping
    would quietly drop the step for everyone it fails for. The step stays due
    (it does not join the history) and the dispatcher pauses the sequence, as
    when its error budget runs out, until someone fixes it and runs
    ``nurture resume``.
    """

    step: Step
    due_at: datetime
    reason: str


@dataclass(frozen=True)
class Exit:
    """Leave the sequence: ``status`` is converted (goal reached) or exited."""

    reason: str
    status: Literal[EnrollmentStatus.CONVERTED, EnrollmentStatus.EXITED]
    at: datetime


@dataclass(frozen=True)
class Complete:
    """Every step has been decided."""


Action = Wait | Send | Skip | Hold | Exit | Complete


_CALENDARS: dict[tuple[int, int], tuple[object, object, Calendar]] = {}


def calendar_for(sequence: Sequence, step: Step) -> Calendar:
    """The step's calendar, reused across calls so its per-day answers are too.

    Keyed by the identity of the window and skip-date objects; the entry keeps
    them alive, so an id cannot be reused for another object while cached.
    """
    window, skips = sequence.window_for(step), sequence.skip_dates_for(step)
    key = (id(window), id(skips))
    cached = _CALENDARS.get(key)
    if cached is not None and cached[0] is window and cached[1] is skips:
        return cached[2]
    if len(_CALENDARS) > 1024:
        _CALENDARS.clear()
    calendar = Calendar(window, skips)
    _CALENDARS[key] = (window, skips, calendar)
    return calendar


def subscriber_zone(subscriber: Subscriber, sequence: Sequence) -> ZoneInfo:
    """The subscriber's zone, falling back to the sequence's when unset or unknown."""
    if subscriber.timezone:
        try:
            # check_timezone: "localtime" in a row written before the one zone
            # check existed must fall back too, not follow the server's clock.
            return ZoneInfo(check_timezone(subscriber.timezone))
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return ZoneInfo(sequence.timezone)


def _position(sequence: Sequence, done: set[str]) -> int:
    """The index of the last step in ``sequence`` already passed; -1 before the first."""
    position = -1
    for index, step in enumerate(sequence.steps):
        if step.id in done:
            position = index
    return position


def next_step(sequence: Sequence, state: EnrollmentState) -> Step | None:
    """The first step after the subscriber's position that they have not passed."""
    done = {record.step_id for record in state.history}
    for step in sequence.steps[_position(sequence, done) + 1 :]:
        if step.id not in done:
            return step
    return None


def passed_over(sequence: Sequence, state: EnrollmentState) -> tuple[str, ...]:
    """Steps before the subscriber's position that they have not passed: the
    ones :func:`next_step` never returns (inserted by an edit before where
    they are). Empty for a subscriber who has not started: every step of the
    file lies ahead of them."""
    done = {record.step_id for record in state.history}
    ahead = _position(sequence, done)
    return tuple(step.id for step in sequence.steps[: max(ahead, 0)] if step.id not in done)


def engagement_from(events: Iterable[Event]) -> Engagement:
    opened: set[str] = set()
    clicked: set[str] = set()
    converted = False
    for event in events:
        if event.kind == EventKind.CLICKED and event.step:
            clicked.add(event.step)
            opened.add(event.step)  # a click implies the email was opened
        elif event.kind == EventKind.OPENED and event.step:
            opened.add(event.step)
        elif event.kind == EventKind.PURCHASED:
            converted = True
    return Engagement(frozenset(opened), frozenset(clicked), converted)


def leaves(event: Event, sequence_id: str, enrolled_at: datetime) -> bool:
    """Whether ``event`` is an unsubscribe that ends an enrollment in
    ``sequence_id`` that began at ``enrolled_at``: one from all email or from
    this sequence, made since. Leaving another series ends only that one, and an
    unsubscribe from before (the subscriber came back and was enrolled again)
    ends nothing now."""
    return (
        event.kind == EventKind.UNSUBSCRIBED
        and event.sequence in (None, sequence_id)
        and event.at >= enrolled_at
    )


def _exit_for(sequence: Sequence, state: EnrollmentState, events: list[Event]) -> Exit | None:
    for event in sorted(events, key=lambda e: e.at):
        if leaves(event, sequence.id, state.enrolled_at):
            return Exit("unsubscribed", EnrollmentStatus.EXITED, event.at)
        if event.kind == EventKind.PURCHASED and sequence.goal is not None:
            wanted = sequence.goal.product
            if wanted is None or event.product == wanted:
                what = event.product or "a product"
                return Exit(f"goal reached: purchased {what}", EnrollmentStatus.CONVERTED, event.at)
    return None


def decide_next_step(
    sequence: Sequence,
    state: EnrollmentState,
    subscriber: Subscriber,
    events: Iterable[Event],
    now: datetime,
) -> Action:
    """Decide what to do for one enrollment at ``now``. Events after ``now`` are ignored."""
    require_aware(now, "now")
    seen = [e for e in events if require_aware(e.at, "event time") <= now]
    leave = _exit_for(sequence, state, seen)
    if leave is not None:
        return leave
    step = next_step(sequence, state)
    if step is None:
        return Complete()
    zone = subscriber_zone(subscriber, sequence)
    calendar = calendar_for(sequence, step)
    due = due_at(step, state.anchor, zone, calendar)
    shifted = _shifted(state, zone)
    if due.at > now:
        return Wait(due.at, step, due, shifted)
    if not calendar.contains(now, zone):
        # Late (the worker was down): still only inside the window.
        late = next_allowed(now, zone, calendar)
        return Wait(late.at, step, due, (*shifted, "late: waiting for the window to open"))
    if step.when is not None:
        context = subscriber.template_context(sequence.locale, sequence.timezone)
        try:
            passed = compile_condition(step.when).evaluate(
                context, engagement_from(seen), subscriber.trigger_context()
            )
        except ConditionError as exc:
            return Hold(step, due.at, f"condition {step.when!r} failed: {exc}")
        if not passed:
            return Skip(step, due.at, f"condition {step.when!r} is false")
    return Send(step, due.at, due, shifted)


def after_step(
    sequence: Sequence,
    state: EnrollmentState,
    record: StepRecord,
    subscriber: Subscriber,
    events: Iterable[Event],
    now: datetime,
) -> tuple[EnrollmentState, Action]:
    """The one way an enrollment moves on once a step is settled: the record
    joins the history and the next action is decided at ``now``.

    The dispatcher (after a send is confirmed, or a skip/failure is planned),
    ``simulate`` and ``plan`` all go through here, so a step settled late
    anchors the next wait the same way everywhere.
    """
    moved = state.with_record(record)
    return moved, decide_next_step(sequence, moved, subscriber, events, now)


def completion_reason(state: EnrollmentState) -> str:
    """Why an enrollment completed; it names the steps whose outcome is unknown,
    so nobody reads "completed" as "every email arrived"."""
    unknown = [r.step_id for r in state.history if r.outcome == SendStatus.UNKNOWN]
    if not unknown:
        return "every step decided"
    steps = ", ".join(repr(step) for step in unknown)
    return f"every step decided; the outcome of {steps} is unknown (see `nurture sends resolve`)"


def _shifted(state: EnrollmentState, zone: ZoneInfo) -> tuple[str, ...]:
    last = state.history[-1] if state.history else None
    if last is None or not last.went_out_late or last.sent_at is None:
        return ()
    went = last.sent_at.astimezone(zone)
    return (f"counted from when {last.step_id!r} went out late ({went:%a %Y-%m-%d %H:%M})",)
