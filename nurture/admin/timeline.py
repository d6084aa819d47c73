"""One enrollment's explain timeline: for every step of the sequence file the
dispatcher runs, what happened or will happen and why, from the ledger and
the core's own functions (see :mod:`nurture.admin.explain`, which reads the
store and puts a subscriber's timelines together). Pure: plain values in,
plain values out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from nurture.core.decisions import (
    Complete,
    EnrollmentState,
    Event,
    Exit,
    Hold,
    LedgerEntry,
    Send,
    Skip,
    Wait,
    calendar_for,
    decide_next_step,
    passed_over,
    state_from_ledger,
    subscriber_zone,
)
from nurture.core.loader import LoadedSequence
from nurture.core.model import Sequence, Step
from nurture.core.simulation import timeline_from
from nurture.core.subscriber import Subscriber
from nurture.core.timing import due_at
from nurture.core.vocabulary import EnrollmentStatus, SendStatus
from nurture.store.explain import EnrollmentRecord, LedgerRecord

__all__ = ["EnrollmentExplain", "StepLine", "explain_enrollment", "wait_text"]

_PENDING = (SendStatus.RETRY, SendStatus.QUEUED)


@dataclass(frozen=True)
class StepLine:
    """One step of the timeline.

    ``state``: sent, skipped, failed, unknown, in flight (decided by the
    ledger); pending, held (the next step, decided now); would send, would
    skip, would pause (a projection); not reached, not sent. ``at`` is when
    it happened or is (would be) due, in UTC.
    """

    step: str
    state: str
    at: datetime | None
    why: str
    timing: str = ""
    projected: bool = False
    subject: str | None = None
    send_id: int | None = None
    in_file: bool = True


@dataclass(frozen=True)
class EnrollmentExplain:
    id: int
    sequence_id: str
    sequence_name: str | None
    version: str
    current_version: str | None
    status: str
    status_reason: str | None
    position: str | None
    enrolled_at: datetime
    next_due_at: datetime | None
    """When the next step is due (the core's answer at ``now``), else the stored time."""
    zone: str
    """The zone the sequence's times are in for this subscriber."""
    steps: tuple[StepLine, ...]
    notes: tuple[str, ...] = ()


def _entry(row: LedgerRecord) -> LedgerEntry:
    return LedgerEntry(
        row.key, row.step_id, SendStatus(row.status), row.due_at, row.sent_at, row.attempts,
        row.next_attempt_at,
    )  # fmt: skip


def _local(moment: datetime, zone: ZoneInfo) -> str:
    return f"{moment.astimezone(zone):%a %Y-%m-%d %H:%M}"


def wait_text(step: Step, state: EnrollmentState, zone: ZoneInfo) -> str:
    """The step's wait and from what it counts, in words."""
    if not state.history:
        since = "enrollment"
    elif state.history[-1].went_out_late:
        since = f"{state.history[-1].step_id!r} went out (late)"
    else:
        since = f"{state.history[-1].step_id!r} was due"
    anchor = _local(state.anchor, zone)
    at = f", at {step.at:%H:%M}" if step.at is not None else ""
    if step.wait.amount == 0:
        return f"no wait{at} after {since} ({anchor})"
    return f"wait {step.wait}{at} after {since} ({anchor})"


def _decided(
    sequence: Sequence | None, row: LedgerRecord, before: EnrollmentState, zone: ZoneInfo
) -> StepLine:
    """A step the ledger holds a decision for."""
    status = row.status
    timing = f"due {_local(row.due_at, zone)} (as recorded)"
    step = _find(sequence, row.step_id)
    if sequence is not None and step is not None:
        due = due_at(step, before.anchor, zone, calendar_for(sequence, step))
        if due.at == row.due_at:
            timing = "; ".join((wait_text(step, before, zone), *due.notes))
        else:
            timing += "; the file's timing for this step has changed since"
    reason = row.reason or ""
    at: datetime | None
    if status == SendStatus.SENT:
        why = reason or "accepted by the provider"
        state, at = "sent", row.sent_at or row.decided_at
    elif status == SendStatus.SKIPPED:
        why, state, at = reason or "skipped (no reason recorded)", "skipped", row.sent_at
    elif status == SendStatus.FAILED:
        why, state, at = reason or "failed (no reason recorded)", "failed", row.sent_at
    elif status == SendStatus.UNKNOWN:
        why = (reason + "; " if reason else "") + (
            "the provider may or may not have it: settle it with `nurture sends resolve`"
        )
        state, at = "unknown", row.sent_at
    else:  # reserved
        why = "handed to the provider; its answer is not recorded yet"
        state, at = "in flight", row.decided_at
    if row.resolution:
        why += f" (resolved: {row.resolution})"
    return StepLine(
        row.step_id, state, at or row.decided_at, why, timing, subject=row.subject,
        send_id=row.id, in_file=step is not None,
    )  # fmt: skip


def _find(sequence: Sequence | None, step_id: str) -> Step | None:
    if sequence is None:
        return None
    for step in sequence.steps:
        if step.id == step_id:
            return step
    return None


def _next_line(
    sequence: Sequence,
    action: Wait | Send | Skip | Hold,
    state: EnrollmentState,
    pending: LedgerRecord | None,
    zone: ZoneInfo,
    now: datetime,
) -> StepLine:
    """The next step, as the decision function answers at ``now``."""
    step = action.step
    base = wait_text(step, state, zone)
    retry = ""
    retry_at = pending.next_attempt_at if pending is not None else None
    if pending is not None and pending.status == SendStatus.RETRY:
        retry = f"; waiting for attempt {pending.attempts + 1}"
        if pending.reason:
            retry += f" after: {pending.reason}"
    if isinstance(action, Wait):
        at = max(action.until, retry_at) if retry_at else action.until
        why = f"the next step: waiting for its due time{retry}"
        return StepLine(step.id, "pending", at, why, "; ".join((base, *action.notes)))
    if isinstance(action, Send):
        at = max(now, retry_at) if retry_at else now
        why = f"pending: due since {_local(action.due_at, zone)}; goes out at the next pass{retry}"
        return StepLine(step.id, "pending", at, why, "; ".join((base, *action.notes)))
    if isinstance(action, Skip):
        why = f"due; skipped at the next pass: {action.reason}"
        return StepLine(step.id, "pending", now, why, base)
    why = (
        f"held: {action.reason}; it is neither sent nor skipped and the sequence is "
        f"paused until the condition is fixed (`nurture resume {sequence.id}`)"
    )
    return StepLine(step.id, "held", now, why, base)


def explain_enrollment(
    record: EnrollmentRecord,
    loaded: LoadedSequence | None,
    view: Subscriber,
    events: Iterable[Event],
    now: datetime,
    *,
    blocked: str | None = None,
    paused: str | None = None,
) -> EnrollmentExplain:
    """One enrollment's timeline (see the module docstring)."""
    events = tuple(events)
    sequence = loaded.sequence if loaded is not None else None
    zone = (
        subscriber_zone(view, sequence)
        if sequence is not None
        else ZoneInfo(view.timezone or "UTC")
        if _zone_ok(view.timezone)
        else ZoneInfo("UTC")
    )
    state = state_from_ledger(record.enrolled_at, [_entry(row) for row in record.ledger])
    rows = {row.step_id: row for row in record.ledger}
    lines: dict[str, StepLine] = {}
    notes: list[str] = []
    for index, done in enumerate(state.history):
        before = EnrollmentState(record.enrolled_at, state.history[:index])
        lines[done.step_id] = _decided(sequence, rows[done.step_id], before, zone)
    pending = {r.step_id: r for r in record.ledger if r.status in _PENDING}
    next_due = record.next_due_at
    rest = "not reached"
    rest_why = ""
    if paused is not None:
        notes.append(f"the sequence is paused ({paused}): nothing is sent until `nurture resume`")
    if sequence is None:
        notes.append("no valid file for this sequence in sequences/: nothing is sent")
        rest_why = "no valid sequence file"
    elif record.status != EnrollmentStatus.ACTIVE:
        next_due = None
        # Why it ended is the enrollment's own line: each step says only that.
        rest_why = f"the enrollment ended first ({record.status})"
        if record.status == EnrollmentStatus.COMPLETED:
            rest_why = "added to the file after the enrollment completed: never sent"
    elif blocked is not None:
        rest_why = f"{blocked}: the dispatcher ends this enrollment at its next turn"
    else:
        action = decide_next_step(sequence, state, view, events, now)
        if isinstance(action, Exit):
            rest_why = f"leaves at the next pass: {action.reason}"
        elif isinstance(action, Complete):
            rest_why = "every step is decided"
        else:
            line = _next_line(sequence, action, state, pending.get(action.step.id), zone, now)
            lines[line.step] = line
            next_due = line.at
            if isinstance(action, Hold):
                rest_why = f"the sequence is held at {action.step.id!r} (see above)"
            else:
                rest_why = _project(sequence, record, view, state, events, now, lines, zone)
    never = set(passed_over(sequence, state)) if sequence is not None else set()
    steps: list[StepLine] = []
    for step in sequence.steps if sequence is not None else ():
        if step.id in lines:
            steps.append(lines.pop(step.id))
        elif step.id in never:
            why = (
                "added to the file before the subscriber's position: the dispatcher never sends it"
            )
            steps.append(StepLine(step.id, "not sent", None, why))
        else:
            steps.append(StepLine(step.id, rest, None, rest_why or "not reached"))
    for row in record.ledger:  # decided steps no longer in the file
        if row.step_id in lines:
            line = lines.pop(row.step_id)
            steps.append(replace(line, in_file=False, why=line.why + " (no longer in the file)"))
    return EnrollmentExplain(
        record.id, record.sequence_id, sequence.name if sequence is not None else None,
        record.version, loaded.version if loaded is not None else None, record.status,
        record.status_reason, record.position, record.enrolled_at, next_due, zone.key,
        tuple(steps), tuple(notes),
    )  # fmt: skip


def _zone_ok(name: str | None) -> bool:
    if not name:
        return False
    try:
        ZoneInfo(name)
    except (ValueError, KeyError, OSError):
        return False
    return True


def _project(
    sequence: Sequence,
    record: EnrollmentRecord,
    view: Subscriber,
    state: EnrollmentState,
    events: tuple[Event, ...],
    now: datetime,
    lines: dict[str, StepLine],
    zone: ZoneInfo,
) -> str:
    """Add the projected lines after the next step; return why the steps after
    the projection's end are not reached."""
    looked_at = max(now, record.next_due_at) if record.next_due_at is not None else now
    retries = {
        row.step_id: row.next_attempt_at
        for row in record.ledger
        if row.status in _PENDING and row.next_attempt_at is not None
    }
    timeline = timeline_from(sequence, view, state, looked_at, events, not_before=retries)
    assumption = "if nothing changes"
    for entry in timeline:
        if entry.step is None:  # an exit
            return f"would leave: {entry.reason}"
        if entry.step in lines:
            continue
        at = entry.at.astimezone(UTC)
        step = sequence.step(entry.step)
        if entry.action == "send":
            timing = "; ".join(part for part in (f"wait {step.wait}", entry.reason) if part)
            why = f"would be sent {assumption} (no new event or edit)"
            lines[entry.step] = StepLine(entry.step, "would send", at, why, timing, projected=True)
        elif entry.action == "skip":
            why = f"would be skipped: {entry.reason} (as the data stands now)"
            lines[entry.step] = StepLine(entry.step, "would skip", at, why, projected=True)
        elif entry.action == "paused":
            lines[entry.step] = StepLine(
                entry.step, "would pause", at, entry.reason, projected=True
            )
            return "the sequence would pause before it"
    return ""
