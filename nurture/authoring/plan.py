"""``nurture plan``: what the sequence files on disk would do to live enrollments.

Steps are matched by id (see :mod:`nurture.core.decisions`): a removed step is
not sent, a step added after a subscriber's position is, a step inserted before
it is not. This module shows that impact *before* the worker picks up an edit:
per sequence, how many subscribers sit at each step, what changed since the
version they enrolled on, and for each subscriber on an older version which
step comes next and whether it is new or changed. It returns that as data; the
CLI (:mod:`nurture.cli.plan`) prints it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy.engine import Engine

from nurture.core.decisions import (
    Exit,
    Hold,
    Send,
    Skip,
    Wait,
    decide_next_step,
    next_step,
    subscriber_zone,
)
from nurture.core.loader import LoadedSequence
from nurture.core.model import Sequence
from nurture.core.subscriber import Subscriber
from nurture.store import batches, queries
from nurture.store.planning import read_active_enrollments

ChangeKind = Literal["added", "removed", "changed"]


@dataclass(frozen=True)
class StepChange:
    kind: ChangeKind
    step_id: str
    detail: str = ""


@dataclass(frozen=True)
class Impact:
    """One subscriber on an older version: what the current file does next."""

    email: str
    version: str
    position: str | None
    next_step: str | None
    next_kind: str  # "new", "changed", "unchanged" or "-"
    action: str  # what decide says at `now`: "due ...", "send now", "skip: ...", "exit: ..."
    not_received: tuple[str, ...]  # steps inserted before their position


@dataclass
class SequencePlan:
    sequence_id: str
    current_version: str
    on_disk: bool
    active: int = 0
    by_version: Counter[str] = field(default_factory=Counter)
    by_position: Counter[str] = field(default_factory=Counter)
    changes: dict[str, list[StepChange]] = field(default_factory=dict)
    impacts: list[Impact] = field(default_factory=list)


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


def _describe(action: object, zone: Any) -> str:
    if isinstance(action, Wait):
        return f"due {action.until.astimezone(zone):%a %Y-%m-%d %H:%M %Z}"
    if isinstance(action, Send):
        return "send at the next tick"
    if isinstance(action, Skip):
        return f"skip: {action.reason}"
    if isinstance(action, Hold):
        return f"held, the sequence pauses: {action.reason}"
    if isinstance(action, Exit):
        return f"exit: {action.reason}"
    return "complete"


def plan_changes(
    engine: Engine, sequences: dict[str, LoadedSequence], now: datetime
) -> list[SequencePlan]:
    """One plan per sequence on disk or with active enrollments, decided at ``now``."""
    snapshot = read_active_enrollments(engine, now)
    rows, ledgers, events = snapshot.enrollments, snapshot.ledgers, snapshot.events
    versions = snapshot.versions
    plans: dict[str, SequencePlan] = {
        sid: SequencePlan(sid, loaded.version, True) for sid, loaded in sorted(sequences.items())
    }
    for row in rows:
        plan = plans.get(row.sequence_id)
        if plan is None:
            plan = plans[row.sequence_id] = SequencePlan(row.sequence_id, "-", False)
        plan.active += 1
        plan.by_version[row.sequence_version] += 1
        plan.by_position[row.position or "(not started)"] += 1
        loaded = sequences.get(row.sequence_id)
        if loaded is None or row.sequence_version == loaded.version:
            continue
        old = versions.get(row.sequence_id, {}).get(row.sequence_version)
        if row.sequence_version not in plan.changes:
            plan.changes[row.sequence_version] = diff_steps(old, loaded.sequence)
        changed = {c.step_id for c in plan.changes[row.sequence_version] if c.kind == "changed"}
        old_ids = {step["id"] for step in old["steps"]} if old else None
        # The same reading of the ledger the dispatcher's planner does.
        state = batches.state_of(row.enrolled_at, ledgers.get(row.id, []))
        history = state.history
        upcoming = next_step(loaded.sequence, state)
        kind = "-"
        if upcoming is not None:
            if old_ids is not None and upcoming.id not in old_ids:
                kind = "new"
            elif upcoming.id in changed:
                kind = "changed"
            elif old_ids is not None:
                kind = "unchanged"
            else:
                kind = "unknown (old version not recorded)"
        ids = [step.id for step in loaded.sequence.steps]
        done = {record.step_id for record in history}
        position_index = max((ids.index(s) for s in done if s in ids), default=-1)
        not_received = tuple(
            step_id
            for step_id in ids[:position_index]
            if step_id not in done and old_ids is not None and step_id not in old_ids
        )
        view = Subscriber.of(row)
        seen = queries.events_of(events.get(row.subscriber_id, []))
        action = decide_next_step(loaded.sequence, state, view, seen, now)
        zone = subscriber_zone(view, loaded.sequence)
        plan.impacts.append(
            Impact(
                row.email,
                row.sequence_version,
                row.position,
                upcoming.id if upcoming else None,
                kind,
                _describe(action, zone),
                not_received,
            )
        )
    return list(plans.values())
