"""The simulator: the real decision function driven by a virtual clock.

It is not a second implementation of the timing rules: it loops
:func:`decide_next_step` and moves on with :func:`after_step` exactly as the
dispatcher does, with in-memory state, jumping the clock to the next due time
or the next event, whichever comes first. A ``when`` that fails ends the
timeline with a ``paused`` entry, as the dispatcher pauses the sequence there.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

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
from nurture.core.model import Sequence
from nurture.core.subscriber import Subscriber
from nurture.core.timing import require_aware
from nurture.core.vocabulary import SendStatus
from nurture.errors import TimingError


@dataclass(frozen=True)
class TimelineEntry:
    """One line of a simulated timeline; ``at`` is in the subscriber's zone."""

    step: str | None
    action: Literal["send", "skip", "paused", "exit", "complete"]
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
    zone = subscriber_zone(subscriber, sequence)
    pending = sorted(events, key=lambda e: e.at)
    state = EnrollmentState(enrolled_at=start)
    now = start
    timeline: list[TimelineEntry] = []
    # Each pass either records a step or moves the clock forward; the bound only
    # guards against a bug turning into an endless loop.
    action = decide_next_step(sequence, state, subscriber, pending, now)
    for _ in range(10 * len(sequence.steps) + 10 * len(pending) + 10):
        if isinstance(action, Wait):
            upcoming = [e.at for e in pending if now < e.at <= action.until]
            now = min(upcoming) if upcoming else action.until
            action = decide_next_step(sequence, state, subscriber, pending, now)
        elif isinstance(action, Send):
            reason = "; ".join(action.notes)
            timeline.append(TimelineEntry(action.step.id, "send", now.astimezone(zone), reason))
            record = settled(action.step.id, SendStatus.SENT, action.due_at, now)
            state, action = after_step(sequence, state, record, subscriber, pending, now)
        elif isinstance(action, Skip):
            timeline.append(
                TimelineEntry(action.step.id, "skip", now.astimezone(zone), action.reason)
            )
            record = settled(action.step.id, SendStatus.SKIPPED, action.due_at, now)
            state, action = after_step(sequence, state, record, subscriber, pending, now)
        elif isinstance(action, Hold):
            # What the dispatcher does: nothing more is sent from the sequence.
            reason = (
                f"{action.reason}: the step is not sent and the sequence is paused "
                f"until the condition is fixed (`nurture resume {sequence.id}`)"
            )
            timeline.append(TimelineEntry(action.step.id, "paused", now.astimezone(zone), reason))
            return timeline
        elif isinstance(action, Exit):
            timeline.append(TimelineEntry(None, "exit", action.at.astimezone(zone), action.reason))
            return timeline
        elif isinstance(action, Complete):
            return timeline
    raise TimingError("simulation did not finish: this is a bug, please report it")
