"""The dispatcher's planner: claimed enrollments in, typed writes out.

Pure (no database, clock or settings): the store builds the inputs
(:class:`ClaimedEnrollment`, :class:`Recipient`, the ledger as
:class:`~nurture.core.decisions.LedgerEntry` rows, events, suppressions) and
writes the :class:`BatchPlan` this module returns; the dispatcher sends the
:class:`PlannedEmail` items. Every decision goes through
:func:`~nurture.core.decisions.decide_next_step` and
:func:`~nurture.core.decisions.after_step`, the functions ``simulate`` uses.

Rendering is injected (``compose``) because an email's key is in its
Message-ID; a render that raises fails that one email (``failed``, with the
reason) and the enrollment moves on: one subscriber's bad data never fails the
batch.

A ``when`` that raises (:class:`~nurture.core.decisions.Hold`) is different: it
is a mistake in the sequence, so the step is not skipped. Its row is left
``retry`` with the reason (the log shows it), the enrollment stays at that
step, and the plan asks for the sequence to be paused
(:class:`SequencePause`) until someone fixes it and runs ``nurture resume``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Literal

from nurture.core.batch import (
    BatchInput,
    BatchPlan,
    ClaimedEnrollment,
    EnrollmentChange,
    LedgerChange,
    LedgerInsert,
    PlannedEmail,
    Recipient,
    SequencePause,
)
from nurture.core.decisions import (
    Action,
    Complete,
    EnrollmentState,
    Event,
    Exit,
    Hold,
    LedgerEntry,
    Send,
    Skip,
    StepOutcome,
    Wait,
    after_step,
    completion_reason,
    decide_next_step,
    settled,
    state_from_ledger,
)
from nurture.core.loader import LoadedSequence
from nurture.core.model import Step
from nurture.core.rendering import ComposedEmail
from nurture.core.subscriber import Subscriber
from nurture.core.vocabulary import EnrollmentStatus, SendStatus, SubscriberStatus

Compose = Callable[[LoadedSequence, Step, Subscriber, str, datetime], ComposedEmail]
"""Builds the email: (sequence, step, subscriber, send key, now) -> ComposedEmail."""

# A decision loop per enrollment ends at a send, a wait or an exit; skips go on.
MAX_DECISIONS = 100


def blocked_reason(status: str, email: str, suppressed: Mapping[str, str]) -> str | None:
    """Why nothing may be sent to this subscriber, if something stops it."""
    if status != SubscriberStatus.ACTIVE:
        return f"subscriber is {status}"
    if email in suppressed:
        return f"address suppressed: {suppressed[email]}"
    return None


def plan_batch(
    batch: BatchInput,
    sequences: Mapping[str, LoadedSequence],
    now: datetime,
    *,
    compose: Compose,
    new_key: Callable[[], str],
) -> BatchPlan:
    """Decide for every claimed enrollment until it must wait, send or leave."""
    plan = BatchPlan()
    for enrollment in batch.enrollments:
        recipient = batch.recipients[enrollment.subscriber_id]
        if enrollment.trigger_properties:
            # The view is one enrollment's: its trigger's properties with it.
            view = replace(recipient.view, trigger_properties=dict(enrollment.trigger_properties))
            recipient = replace(recipient, view=view)
        _plan_one(
            plan,
            enrollment,
            recipient,
            sequences[enrollment.sequence_id],
            batch.ledgers.get(enrollment.id, ()),
            tuple(batch.events.get(recipient.id, ())),
            batch.suppressed,
            now,
            compose,
            new_key,
        )
    return plan


def _plan_one(
    plan: BatchPlan,
    enrollment: ClaimedEnrollment,
    recipient: Recipient,
    loaded: LoadedSequence,
    ledger: Sequence[LedgerEntry],
    events: tuple[Event, ...],
    suppressed: Mapping[str, str],
    now: datetime,
    compose: Compose,
    new_key: Callable[[], str],
) -> None:
    seq_id, email = loaded.sequence.id, recipient.email
    position = enrollment.position

    def leave(status: EnrollmentStatus, reason: str, step: str = "-") -> None:
        plan.enrollments.append(
            EnrollmentChange(enrollment.id, status, reason, None, position, loaded.version)
        )

    blocked = blocked_reason(recipient.status, email, suppressed)
    if blocked is not None:
        leave(EnrollmentStatus.EXITED, blocked)
        plan.exited += 1
        plan.notes.append((email, seq_id, "-", f"exit: {blocked}"))
        return
    state = state_from_ledger(enrollment.enrolled_at, ledger)
    pending = {entry.step_id: entry for entry in ledger if entry.pending}
    action: Action = decide_next_step(loaded.sequence, state, recipient.view, events, now)
    for _ in range(MAX_DECISIONS):
        if isinstance(action, Wait | Send):
            waiting = pending.get(action.step.id)
            # A step waiting for its retry is not due before the retry time.
            not_before = waiting.next_attempt_at if waiting is not None else None
            if isinstance(action, Wait) or (not_before is not None and not_before > now):
                until = action.until if isinstance(action, Wait) else now
                due = max(until, not_before) if not_before is not None else until
                plan.enrollments.append(
                    EnrollmentChange(
                        enrollment.id, EnrollmentStatus.ACTIVE, None, due, position, loaded.version
                    )
                )
                return
            key = waiting.key if waiting is not None else new_key()
            try:
                composed = compose(loaded, action.step, recipient.view, key, now)
            except Exception as exc:  # one subscriber's data: fail this email only
                reason = f"could not render: {exc}" if str(exc) else f"could not render: {exc!r}"
            else:
                _add_email(plan, enrollment, recipient, loaded, action, waiting, key, composed,
                           position, state, events)  # fmt: skip
                return
            _settle_now(plan, enrollment, recipient, loaded, action, waiting, key,
                        SendStatus.FAILED, reason, now)  # fmt: skip
            plan.failed += 1
            plan.notes.append((email, seq_id, action.step.id, f"failed: {reason}"))
            outcome: StepOutcome = SendStatus.FAILED
        elif isinstance(action, Skip):
            waiting = pending.get(action.step.id)
            key = waiting.key if waiting is not None else new_key()
            _settle_now(plan, enrollment, recipient, loaded, action, waiting, key,
                        SendStatus.SKIPPED, action.reason, now)  # fmt: skip
            plan.skipped += 1
            plan.notes.append((email, seq_id, action.step.id, f"skip: {action.reason}"))
            outcome = SendStatus.SKIPPED
        elif isinstance(action, Hold):
            _hold(plan, enrollment, recipient, loaded, action, pending.get(action.step.id),
                  new_key, position, now)  # fmt: skip
            return
        elif isinstance(action, Exit):
            leave(action.status, action.reason)
            plan.exited += 1
            plan.notes.append((email, seq_id, "-", f"exit: {action.reason}"))
            return
        else:  # Complete
            leave(EnrollmentStatus.COMPLETED, completion_reason(state))
            plan.completed += 1
            return
        position = action.step.id
        record = settled(action.step.id, outcome, action.due_at, now)
        state, action = after_step(loaded.sequence, state, record, recipient.view, events, now)
    # A bug guard: leave the enrollment due, never loop forever.
    plan.enrollments.append(
        EnrollmentChange(
            enrollment.id, EnrollmentStatus.ACTIVE, None, now, position, loaded.version
        )
    )


def _hold(
    plan: BatchPlan,
    enrollment: ClaimedEnrollment,
    recipient: Recipient,
    loaded: LoadedSequence,
    action: Hold,
    waiting: LedgerEntry | None,
    new_key: Callable[[], str],
    position: str | None,
    now: datetime,
) -> None:
    """The step's condition failed: its row waits as ``retry`` (no attempt
    spent), the enrollment stays due at this step, the sequence is paused."""
    seq_id = loaded.sequence.id
    reason = (
        f"held: {action.reason}. The sequence is paused: fix the condition, "
        f"then `nurture resume {seq_id}`"
    )
    key = waiting.key if waiting is not None else new_key()
    if waiting is not None:
        plan.changes.append(LedgerChange(key, enrollment.id, SendStatus.RETRY, reason))
    else:
        plan.inserts.append(
            LedgerInsert(
                key, enrollment.id, recipient.id, seq_id, loaded.version,
                action.step.id, SendStatus.RETRY, action.due_at, reason,
            )
        )  # fmt: skip
    plan.enrollments.append(
        EnrollmentChange(
            enrollment.id, EnrollmentStatus.ACTIVE, None, now, position, loaded.version
        )
    )
    plan.pauses.append(SequencePause(enrollment.id, seq_id, action.step.id, reason))
    plan.held += 1
    plan.notes.append((recipient.email, seq_id, action.step.id, f"held: {action.reason}"))


def _settle_now(
    plan: BatchPlan,
    enrollment: ClaimedEnrollment,
    recipient: Recipient,
    loaded: LoadedSequence,
    action: Send | Skip,
    waiting: LedgerEntry | None,
    key: str,
    status: Literal[SendStatus.FAILED, SendStatus.SKIPPED],
    reason: str,
    now: datetime,
) -> None:
    if waiting is not None:
        plan.changes.append(LedgerChange(key, enrollment.id, status, reason, now))
    else:
        plan.inserts.append(
            LedgerInsert(
                key, enrollment.id, recipient.id, loaded.sequence.id, loaded.version,
                action.step.id, status, action.due_at, reason, now,
            )
        )  # fmt: skip


def _add_email(
    plan: BatchPlan,
    enrollment: ClaimedEnrollment,
    recipient: Recipient,
    loaded: LoadedSequence,
    action: Send,
    waiting: LedgerEntry | None,
    key: str,
    composed: ComposedEmail,
    position: str | None,
    state: EnrollmentState,
    events: tuple[Event, ...],
) -> None:
    subject = composed.subject
    if waiting is not None:
        plan.changes.append(
            LedgerChange(key, enrollment.id, SendStatus.QUEUED, None, None, subject)
        )
    else:
        plan.inserts.append(
            LedgerInsert(
                key, enrollment.id, recipient.id, loaded.sequence.id, loaded.version,
                action.step.id, SendStatus.QUEUED, action.due_at, subject=subject,
            )
        )  # fmt: skip
    plan.emails.append(
        PlannedEmail(
            enrollment.id, recipient, loaded, action.step, action.due_at, key,
            waiting.attempts if waiting is not None else 0, position, state, events, composed,
        )
    )  # fmt: skip


def after_send(
    email: PlannedEmail, outcome: StepOutcome, now: datetime
) -> tuple[EnrollmentChange, bool]:
    """Where the enrollment goes once its email is settled at ``now``; the core
    is asked right away (pure and cheap) instead of claiming the row again.
    Returns the change and whether the enrollment completed."""
    record = settled(email.step.id, outcome, email.due_at, now)
    state, action = after_step(
        email.loaded.sequence, email.state, record, email.recipient.view, email.events, now
    )
    if isinstance(action, Wait):
        due: datetime | None = action.until
    elif isinstance(action, Complete):
        reason = completion_reason(state)
        change = EnrollmentChange(
            email.enrollment_id,
            EnrollmentStatus.COMPLETED,
            reason,
            None,
            email.step.id,
            email.loaded.version,
        )
        return change, True
    else:  # Send, Skip, Hold or Exit due now: the next claim in this pass decides it
        due = now
    change = EnrollmentChange(
        email.enrollment_id, EnrollmentStatus.ACTIVE, None, due, email.step.id, email.loaded.version
    )
    return change, False


# Every change below names the version its email was planned on, as the
# planner's own changes do: the enrollment's ``sequence_version`` is the last
# version the dispatcher decided it under (``nurture plan`` compares it, and
# the next step's wait was worked out on it).


def retry_later(email: PlannedEmail, until: datetime) -> EnrollmentChange:
    """The email waits for its retry: the enrollment is due again then."""
    return EnrollmentChange(
        email.enrollment_id, EnrollmentStatus.ACTIVE, None, until, email.position,
        email.loaded.version,
    )  # fmt: skip


def exit_after(email: PlannedEmail, why: str) -> EnrollmentChange:
    return EnrollmentChange(
        email.enrollment_id, EnrollmentStatus.EXITED, why, None, email.step.id,
        email.loaded.version,
    )  # fmt: skip
