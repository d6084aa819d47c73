"""The simulator: the real decision function driven by a virtual clock.

It is not a second implementation of the timing rules: it loops
:func:`decide_next_step` and moves on with :func:`after_step` exactly as the
dispatcher does, with in-memory state, jumping the clock to the next due time
or the next event, whichever comes first. A ``when`` that fails ends the
timeline with a ``paused`` entry, as the dispatcher pauses the sequence there.
A step due past the end of the calendar (:data:`~nurture.core.timing.NEVER`)
ends it with a ``never`` entry: the dispatcher would wait for it forever.
:func:`simulate` runs it from
enrollment; ``nurture plan`` runs the same loop (:func:`timeline_from`) from a
stored enrollment's next turn. :func:`unknown_step` and
:func:`early_engagement` check the events ``simulate --event`` is given.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal
from zoneinfo import ZoneInfo

from nurture.core.decisions import (
    Complete,
    EnrollmentState,
    Event,
    Exit,
    Hold,
    Send,
    Skip,
    Wait,
    after_step,
    decide_next_step,
    settled,
    subscriber_zone,
)
from nurture.core.model import Sequence, Step
from nurture.core.subscriber import Subscriber
from nurture.core.timing import BEYOND_CALENDAR, NEVER, require_aware
from nurture.core.vocabulary import EventKind, SendStatus
from nurture.errors import TimingError


@dataclass(frozen=True)
class TimelineEntry:
    """One line of a simulated timeline; ``at`` is in the subscriber's zone.

    ``never``: the step is due past the end of the calendar; ``at`` is then
    when the wait for it began (the last moment the timeline reached)."""

    step: str | None
    action: Literal["send", "skip", "paused", "exit", "complete", "never"]
    at: datetime
    reason: str

    def as_json(self) -> dict[str, str | None]:
        return {
            "step": self.step,
            "action": self.action,
            "at": self.at.isoformat(),
            "at_utc": self.at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "reason": self.reason,
        }


def simulate(
    sequence: Sequence,
    subscriber: Subscriber,
    start: datetime,
    events: Iterable[Event] = (),
) -> list[TimelineEntry]:
    """The timeline one subscriber enrolled at ``start`` would get."""
    require_aware(start, "start")
    return timeline_from(sequence, subscriber, EnrollmentState(enrolled_at=start), start, events)


def timeline_from(
    sequence: Sequence,
    subscriber: Subscriber,
    state: EnrollmentState,
    looked_at: datetime,
    events: Iterable[Event] = (),
    *,
    not_before: Mapping[str, datetime] | None = None,
    stop_after_send: bool = False,
) -> list[TimelineEntry]:
    """What happens from ``state`` on when the dispatcher first looks at the
    enrollment at ``looked_at``.

    This is the dispatcher's loop (:func:`nurture.core.planner.plan_batch`):
    decide at the moment it looks; a wait makes it look again at the wait's
    end (or at the next event, whichever comes first); a step whose retry is
    not due yet (``not_before``, by step id) waits for its retry; a send or a
    skip is settled at that moment and the next step decided. ``plan`` starts
    from a stored enrollment at the time it is next due and stops after the
    first send (``stop_after_send``); ``simulate`` starts at enrollment.
    The timeline ends at an exit, at the end of the steps, at a step due
    past the end of the calendar (``never``), or after the first send when
    asked.
    """
    require_aware(looked_at, "looked_at")
    retry_at = dict(not_before or {})
    zone = subscriber_zone(subscriber, sequence)
    pending = sorted(events, key=lambda e: e.at)
    now = looked_at
    timeline: list[TimelineEntry] = []
    # Each pass either records a step or moves the clock forward; the bound only
    # guards against a bug turning into an endless loop.
    action = decide_next_step(sequence, state, subscriber, pending, now)
    for _ in range(10 * len(sequence.steps) + 10 * len(pending) + 10):
        if isinstance(action, Send) and retry_at.get(action.step.id, now) > now:
            # The planner's rule: a step waiting for its retry is not sent before then.
            action = Wait(retry_at[action.step.id], action.step, action.timing, action.extra)
        if now >= NEVER and not isinstance(action, Exit | Complete):
            # A stored enrollment the dispatcher parked past the calendar's end.
            timeline.append(_never(action.step, now, zone))
            return timeline
        if isinstance(action, Wait):
            upcoming = [e.at for e in pending if now < e.at <= action.until]
            if not upcoming and action.until >= NEVER:
                # Due past the calendar's end: the clock cannot jump there.
                timeline.append(_never(action.step, now, zone))
                return timeline
            now = min(upcoming) if upcoming else action.until
            action = decide_next_step(sequence, state, subscriber, pending, now)
        elif isinstance(action, Send):
            reason = "; ".join(action.notes)
            timeline.append(TimelineEntry(action.step.id, "send", _local(now, zone), reason))
            if stop_after_send:
                return timeline
            record = settled(action.step.id, SendStatus.SENT, action.due_at, now)
            state, action = after_step(sequence, state, record, subscriber, pending, now)
        elif isinstance(action, Skip):
            timeline.append(TimelineEntry(action.step.id, "skip", _local(now, zone), action.reason))
            record = settled(action.step.id, SendStatus.SKIPPED, action.due_at, now)
            state, action = after_step(sequence, state, record, subscriber, pending, now)
        elif isinstance(action, Hold):
            # What the dispatcher does: nothing more is sent from the sequence.
            reason = (
                f"{action.reason}: the step is not sent and the sequence is paused "
                f"until the condition is fixed (`nurture resume {sequence.id}`)"
            )
            timeline.append(TimelineEntry(action.step.id, "paused", _local(now, zone), reason))
            return timeline
        elif isinstance(action, Exit):
            timeline.append(TimelineEntry(None, "exit", _local(action.at, zone), action.reason))
            return timeline
        elif isinstance(action, Complete):
            return timeline
    raise TimingError("simulation did not finish: this is a bug, please report it")


def _local(moment: datetime, zone: ZoneInfo) -> datetime:
    """``moment`` in ``zone``, or in UTC when its local time is past the
    calendar's end (9999-12-31 UTC is 10000-01-01 east of Greenwich)."""
    try:
        return moment.astimezone(zone)
    except OverflowError:
        return moment.astimezone(UTC)


def _never(step: Step, now: datetime, zone: ZoneInfo) -> TimelineEntry:
    """The entry that ends a timeline at a step due past the calendar's end."""
    reason = f"never sent: it would be due {BEYOND_CALENDAR}, after a wait of {step.wait}"
    return TimelineEntry(step.id, "never", _local(now, zone), reason)


def unknown_step(sequence: Sequence, event: Event) -> str | None:
    """Why an ``opened``/``clicked`` event cannot be simulated: it names a step
    the sequence does not have (a typo), with the nearest id; else None."""
    if event.kind not in (EventKind.OPENED, EventKind.CLICKED) or event.step is None:
        return None
    ids = [step.id for step in sequence.steps]
    if event.step in ids:
        return None
    near = difflib.get_close_matches(event.step, ids, n=1, cutoff=0.6)
    hint = f"did you mean {near[0]!r}?" if near else f"its steps are {', '.join(ids)}"
    return f"{sequence.id} has no step {event.step!r} ({hint})"


def early_engagement(timeline: Iterable[TimelineEntry], event: Event) -> str | None:
    """Why an ``opened``/``clicked`` event is odd in this ``timeline``: the step
    is only sent after it (or never); else None. The event is still simulated
    as written: ``opened()`` and ``clicked()`` are true from its time on."""
    if event.kind not in (EventKind.OPENED, EventKind.CLICKED) or event.step is None:
        return None
    entries = [entry for entry in timeline if entry.step == event.step]
    sent = next((entry for entry in entries if entry.action == "send"), None)
    verb = "opened" if event.kind == EventKind.OPENED else "clicked"
    at = event.at.astimezone(entries[0].at.tzinfo) if entries else event.at
    when = f"{at:%a %Y-%m-%d %H:%M %Z}"
    if sent is not None:
        if event.at >= sent.at:
            return None
        return (
            f"{event.step!r} is sent on {sent.at:%a %Y-%m-%d %H:%M %Z}, after it is {verb} "
            f"on {when}; the event counts from {when} as written (give a time after the send)"
        )
    skipped = next((entry for entry in entries if entry.action == "skip"), None)
    if skipped is not None:
        return (
            f"{event.step!r} is not sent in this simulation (skipped on "
            f"{skipped.at:%a %Y-%m-%d %H:%M %Z}: {skipped.reason}), yet it is {verb} on {when}"
        )
    return f"{event.step!r} is not sent in this simulation, yet it is {verb} on {when}"
