"""``nurture plan``: what the dispatcher will do next, and what an edit changes.

The rule the dispatcher follows (:mod:`nurture.core.decisions`) is the one
this module applies, with the same functions:

* It always uses the sequence file as it is *now*, whatever version a
  subscriber enrolled on; steps are matched by id.
* A subscriber's position is the last step of the current file they already
  passed. The next step is the first one after it they have not passed; steps
  before it that they never passed (inserted by an edit) are never sent. A
  subscriber who has not started has no position: every step of the file lies
  ahead, including one inserted first.
* An enrollment is looked at again at its stored ``next_due_at`` (set when it
  was last decided, from the file as it was then), or at once if that has
  passed; then the current file decides, and a wait it asks for moves the
  time on. So a step inserted right after someone's position goes out when
  their next email was due, not earlier.
* A completed enrollment gets nothing more, not even a step added at the end.

Per sequence it counts subscribers per position and version, lists the step
changes since each version, and groups every active enrollment by *effect*
(the next email and whether it is new, the steps skipped on the way, the steps
they will never get, or that they leave or complete), with the first and last
time it happens and the earliest few subscribers as examples. Enrollments are
streamed from the store in batches and only the groups are kept, so memory
does not grow with the number of subscribers. :func:`subscriber_detail` gives
one person's history and the rest of their timeline.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine

from nurture.core.decisions import passed_over, state_from_ledger, subscriber_zone
from nurture.core.loader import LoadedSequence
from nurture.core.model import Sequence
from nurture.core.simulation import TimelineEntry, timeline_from
from nurture.core.vocabulary import EnrollmentStatus, SubscriberStatus
from nurture.errors import NurtureError
from nurture.store import planning
from nurture.store.planning import LiveEnrollment

ChangeKind = Literal["added", "removed", "changed"]
EffectKind = Literal["send", "held", "exit", "complete", "completed", "waiting"]
StepIs = Literal["new", "changed", "unchanged", "not recorded", ""]

DEFAULT_LIMIT = 3
"""Example subscribers shown per group unless ``--limit`` says otherwise."""


class PlanError(NurtureError):
    """``plan`` was asked about a sequence or subscriber it does not know."""


@dataclass(frozen=True)
class StepChange:
    kind: ChangeKind
    step_id: str
    detail: str = ""


@dataclass(frozen=True, order=True)
class Effect:
    """What the dispatcher does next for an enrollment: subscribers with the
    same effect are one group.

    ``send``: ``step`` is their next email (``step_is`` says whether it is new
    or changed since their version), after skipping ``skipped``; ``held``: the
    ``when`` of ``step`` fails for them (``reason``), so the dispatcher pauses
    the sequence there instead of sending or skipping; ``exit``: they
    leave at their next turn (``reason``); ``complete``: no email is left for
    them; ``completed``: they finished before the edit; ``waiting``: their
    sequence has no file on disk. ``not_received`` lists the steps of the file
    they will never get."""

    kind: EffectKind
    step: str | None = None
    step_is: StepIs = ""
    skipped: tuple[str, ...] = ()
    not_received: tuple[str, ...] = ()
    reason: str = ""


@dataclass(frozen=True)
class Example:
    email: str
    position: str | None
    at: datetime | None
    """When the effect happens, in the subscriber's zone."""


@dataclass
class Group:
    effect: Effect
    count: int = 0
    first: datetime | None = None
    last: datetime | None = None
    examples: list[Example] = field(default_factory=list)
    # The earliest examples so far, as a heap whose top is the latest of them.
    _kept: list[tuple[float, int, Example]] = field(default_factory=list, repr=False)

    def add(self, example: Example, limit: int, order: int) -> None:
        self.count += 1
        at = example.at
        if at is not None:
            if self.first is None or at < self.first:
                self.first = at
            if self.last is None or at > self.last:
                self.last = at
        if limit <= 0:
            return
        key = (-(at.timestamp() if at is not None else float("inf")), -order, example)
        if len(self._kept) < limit:
            heapq.heappush(self._kept, key)
        elif key[:2] > self._kept[0][:2]:
            heapq.heapreplace(self._kept, key)

    def finish(self) -> None:
        self.examples = [kept[2] for kept in sorted(self._kept, key=lambda k: k[:2], reverse=True)]


@dataclass
class VersionSummary:
    version: str
    current: bool
    recorded: bool
    active: int = 0
    completed: int = 0
    changes: list[StepChange] = field(default_factory=list)


@dataclass
class SequencePlan:
    sequence_id: str
    current_version: str | None
    """The version of the file on disk; None when there is no file."""
    paused: str | None = None
    steps: tuple[str, ...] = ()
    """The step ids of the file on disk, in order."""
    active: int = 0
    completed: int = 0
    positions: Counter[str | None] = field(default_factory=Counter)
    versions: list[VersionSummary] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)

    def ordered_positions(self) -> list[tuple[str | None, int]]:
        """Subscribers per position: not started first, then in the file's
        order, then positions at steps no longer in the file."""
        order = {step: index for index, step in enumerate((None, *self.steps))}
        return sorted(
            self.positions.items(), key=lambda item: (order.get(item[0], len(order)), item[0] or "")
        )


@dataclass(frozen=True)
class HistoryEntry:
    step: str
    status: str
    due_at: datetime
    settled_at: datetime | None
    next_attempt_at: datetime | None


@dataclass(frozen=True)
class EnrollmentDetail:
    """One subscriber's enrollment: what happened and what happens next."""

    sequence_id: str
    status: str
    version: str
    current_version: str | None
    zone: ZoneInfo
    enrolled_at: datetime
    position: str | None
    history: tuple[HistoryEntry, ...]
    not_received: tuple[str, ...] = ()
    timeline: tuple[tuple[TimelineEntry, StepIs], ...] = ()
    note: str = ""


def diff_steps(old: dict[str, Any] | None, new: Sequence) -> list[StepChange]:
    """Step changes from an old definition (``model_dump(mode="json")``) to ``new``."""
    if old is None:
        return []
    old_steps = {step["id"]: step for step in old.get("steps", [])}
    new_steps = {step.id: step.model_dump(mode="json") for step in new.steps}
    changes: list[StepChange] = []
    new_order = list(new_steps)
    for index, step_id in enumerate(new_order):
        if step_id not in old_steps:
            after = new_order[index - 1] if index else None
            where = f"after {after!r}" if after else "first"
            changes.append(StepChange("added", step_id, where))
        elif old_steps[step_id] != new_steps[step_id]:
            fields = sorted(
                key
                for key in set(old_steps[step_id]) | set(new_steps[step_id])
                if old_steps[step_id].get(key) != new_steps[step_id].get(key)
            )
            changes.append(StepChange("changed", step_id, ", ".join(fields)))
    changes.extend(
        StepChange("removed", step_id) for step_id in old_steps if step_id not in new_steps
    )
    return changes


class _Versions:
    """What each version a subscriber is on says about a step of the current file."""

    def __init__(self, loaded: LoadedSequence, recorded: dict[str, dict[str, Any]]) -> None:
        self.loaded = loaded
        self.recorded = recorded
        self.changes: dict[str, list[StepChange]] = {}

    def changes_since(self, version: str) -> list[StepChange]:
        if version not in self.changes:
            old = self.recorded.get(version)
            current = version == self.loaded.version
            self.changes[version] = [] if current else diff_steps(old, self.loaded.sequence)
        return self.changes[version]

    def step_is(self, version: str, step_id: str) -> StepIs:
        if version == self.loaded.version:
            return "unchanged"
        if version not in self.recorded:
            return "not recorded"
        for change in self.changes_since(version):
            if change.step_id == step_id and change.kind in ("added", "changed"):
                return "new" if change.kind == "added" else "changed"
        return "unchanged"


def _blocked(live: LiveEnrollment) -> str | None:
    """What makes the dispatcher end this enrollment at its next turn (the
    planner's ``blocked_reason``), without the suppression's own wording."""
    if live.subscriber_status != SubscriberStatus.ACTIVE:
        return f"subscriber is {live.subscriber_status}"
    if live.suppressed is not None:
        return "address suppressed"
    return None


def _project(
    live: LiveEnrollment, sequence: Sequence, now: datetime, *, whole: bool
) -> tuple[list[TimelineEntry], datetime]:
    """What the dispatcher does from this enrollment's next turn on: the
    timeline up to the next email (or all of it), and when that turn is."""
    looked_at = max(now, live.next_due_at) if live.next_due_at is not None else now
    state = state_from_ledger(live.enrolled_at, live.ledger)
    retries = {
        entry.step_id: entry.next_attempt_at
        for entry in live.ledger
        if entry.pending and entry.next_attempt_at is not None
    }
    timeline = timeline_from(
        sequence, live.view, state, looked_at, live.events,
        not_before=retries, stop_after_send=not whole,
    )  # fmt: skip
    return timeline, looked_at


def _effect(
    live: LiveEnrollment, versions: _Versions, now: datetime
) -> tuple[Effect, datetime | None]:
    sequence = versions.loaded.sequence
    zone = subscriber_zone(live.view, sequence)
    blocked = _blocked(live)
    if blocked is not None:
        at = max(now, live.next_due_at) if live.next_due_at is not None else now
        return Effect("exit", reason=blocked), at.astimezone(zone)
    state = state_from_ledger(live.enrolled_at, live.ledger)
    never = passed_over(sequence, state)
    timeline, looked_at = _project(live, sequence, now, whole=False)
    skipped = tuple(entry.step for entry in timeline if entry.action == "skip" and entry.step)
    last = timeline[-1] if timeline else None
    if last is not None and last.action == "send" and last.step is not None:
        step_is = versions.step_is(live.version, last.step)
        return Effect("send", last.step, step_is, skipped, never), last.at
    if last is not None and last.action == "paused" and last.step is not None:
        return Effect("held", last.step, "", skipped, never, last.reason), last.at
    if last is not None and last.action == "exit":
        # The exit is for an event already in; it happens at their next turn.
        at = max(last.at, looked_at).astimezone(zone)
        return Effect("exit", None, "", skipped, never, last.reason), at
    at = last.at if last is not None else looked_at.astimezone(zone)
    return Effect("complete", None, "", skipped, never), at


def plan_changes(
    engine: Engine,
    sequences: dict[str, LoadedSequence],
    now: datetime,
    *,
    sequence_id: str | None = None,
    limit: int = DEFAULT_LIMIT,
) -> list[SequencePlan]:
    """One plan per sequence on disk or with active or completed enrollments
    (only ``sequence_id`` when given), decided at ``now``."""
    if sequence_id is not None:
        sequences = {sid: loaded for sid, loaded in sequences.items() if sid == sequence_id}
    with planning.snapshot(engine) as conn:
        counts = planning.enrollment_counts(conn, sequence_id)
        known = set(sequences) | {count.sequence_id for count in counts}
        if sequence_id is not None and sequence_id not in known:
            raise PlanError(
                f"no sequence {sequence_id!r}: no file in sequences/ and nobody enrolled"
            )
        recorded = planning.recorded_versions(conn, known)
        paused = planning.paused(conn)
        plans = {sid: SequencePlan(sid, None, paused.get(sid)) for sid in sorted(known)}
        for sid, loaded in sequences.items():
            plans[sid].current_version = loaded.version
            plans[sid].steps = tuple(step.id for step in loaded.sequence.steps)
        versions = {
            sid: _Versions(loaded, recorded.get(sid, {})) for sid, loaded in sequences.items()
        }
        _count(plans, versions, recorded, counts)
        groups: dict[str, dict[Effect, Group]] = {sid: {} for sid in plans}
        order = itertools.count()
        for batch in planning.active_enrollments(conn, now, sequence_id=sequence_id):
            for live in batch:
                plans[live.sequence_id].positions[live.position] += 1
                seen = versions.get(live.sequence_id)
                if seen is None:
                    effect: Effect = Effect("waiting", reason="no valid file in sequences/")
                    at = None
                else:
                    effect, at = _effect(live, seen, now)
                group = groups[live.sequence_id].setdefault(effect, Group(effect))
                group.add(Example(live.email, live.position, at), limit, next(order))
        for sid, plan in plans.items():
            for group in groups[sid].values():
                group.finish()
            for summary in plan.versions:
                added = tuple(c.step_id for c in summary.changes if c.kind == "added")
                if summary.completed and added and not summary.current:
                    # Completed enrollments are never looked at again.
                    effect = Effect("completed", not_received=added)
                    group = groups[sid].setdefault(effect, Group(effect))
                    group.count += summary.completed
                    room = limit - len(group.examples)
                    emails = planning.completed_emails(conn, sid, summary.version, room)
                    group.examples.extend(Example(email, None, None) for email in emails)
            plan.groups = sorted(groups[sid].values(), key=_group_order)
    return list(plans.values())


_KIND_ORDER = {"send": 0, "held": 1, "exit": 2, "complete": 3, "completed": 4, "waiting": 5}


def _group_order(group: Group) -> tuple[int, int, float, Effect]:
    first = group.first.timestamp() if group.first is not None else float("inf")
    return (_KIND_ORDER[group.effect.kind], -group.count, first, group.effect)


def _count(
    plans: dict[str, SequencePlan],
    versions: dict[str, _Versions],
    recorded: dict[str, dict[str, dict[str, Any]]],
    counts: Iterable[planning.EnrollmentCount],
) -> None:
    summaries: dict[tuple[str, str], VersionSummary] = {}
    for count in counts:
        plan = plans[count.sequence_id]
        key = (count.sequence_id, count.version)
        summary = summaries.get(key)
        if summary is None:
            seen = versions.get(count.sequence_id)
            summary = summaries[key] = VersionSummary(
                count.version,
                current=count.version == plan.current_version,
                recorded=count.version in recorded.get(count.sequence_id, {}),
                changes=seen.changes_since(count.version) if seen is not None else [],
            )
            plan.versions.append(summary)
        if count.status == EnrollmentStatus.ACTIVE:
            summary.active += count.count
            plan.active += count.count
        else:
            summary.completed += count.count
            plan.completed += count.count
    for plan in plans.values():
        plan.versions.sort(key=lambda s: (not s.current, -(s.active + s.completed), s.version))


def subscriber_detail(
    engine: Engine, sequences: dict[str, LoadedSequence], email: str, now: datetime
) -> list[EnrollmentDetail]:
    """Every enrollment of one subscriber: what was decided, and from their
    next turn on what the dispatcher will do, as far as it can tell at ``now``."""
    with planning.snapshot(engine) as conn:
        enrollments = planning.enrollments_of(conn, email, now)
        recorded = planning.recorded_versions(conn, {e.sequence_id for e in enrollments})
    if not enrollments:
        raise PlanError(f"{email} is not enrolled in any sequence (or is not a subscriber)")
    return [_detail(live, sequences.get(live.sequence_id), recorded, now) for live in enrollments]


def _detail(
    live: LiveEnrollment,
    loaded: LoadedSequence | None,
    recorded: dict[str, dict[str, dict[str, Any]]],
    now: datetime,
) -> EnrollmentDetail:
    history = tuple(
        HistoryEntry(e.step_id, e.status, e.due_at, e.settled_at, e.next_attempt_at)
        for e in live.ledger
    )
    if loaded is None:
        zone = ZoneInfo(live.view.timezone) if live.view.timezone else ZoneInfo("UTC")
        return EnrollmentDetail(
            live.sequence_id, live.status, live.version, None, zone, live.enrolled_at,
            live.position, history, note="no valid file in sequences/: nothing is sent",
        )  # fmt: skip
    sequence = loaded.sequence
    state = state_from_ledger(live.enrolled_at, live.ledger)
    detail = EnrollmentDetail(
        live.sequence_id, live.status, live.version, loaded.version,
        subscriber_zone(live.view, sequence), live.enrolled_at, live.position, history,
        not_received=passed_over(sequence, state),
    )  # fmt: skip
    if live.status == EnrollmentStatus.COMPLETED:
        done = {entry.step for entry in history}
        never = tuple(step.id for step in sequence.steps if step.id not in done)
        return replace(detail, not_received=never, note="completed: nothing more is sent")
    if live.status != EnrollmentStatus.ACTIVE:
        return replace(detail, not_received=())
    blocked = _blocked(live)
    if blocked is not None:
        return replace(detail, note=f"{blocked}: the dispatcher ends the enrollment at its turn")
    versions = _Versions(loaded, recorded.get(live.sequence_id, {}))
    timeline, _ = _project(live, sequence, now, whole=True)
    steps: list[tuple[TimelineEntry, StepIs]] = [
        (entry, versions.step_is(live.version, entry.step) if entry.step else "")
        for entry in timeline
    ]
    return replace(detail, timeline=tuple(steps))
