"""Answers: what each provider call came back with, and what it writes.

An :class:`Answer` is one email's outcome with its verdict (see
:mod:`nurture.sending.outcomes`). The sender collects answers as they come
and decides *when* they are confirmed and in which transaction; this module
is *what* a batch of answers writes there: each ledger row settled, the
provider's message ids, each enrollment moved on (next step, retry later,
exit, done), the addresses the provider rejected, and a sequence's run of
failures (which pauses it once its budget is spent). It also tallies the
pass's :class:`DispatchReport`. No threads and no state of its own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.engine import Connection

from nurture.core.batch import EnrollmentChange, PlannedEmail
from nurture.core.planner import after_send, exit_after, retry_later
from nurture.core.vocabulary import SendStatus, SubscriberStatus
from nurture.sending.guard import PassGuard
from nurture.sending.outcomes import NotAttempted, SendOutcome, Verdict
from nurture.store import batches, queries, reservations
from nurture.transports.base import SendResult

log = logging.getLogger("nurture.sending.sender")
"""The sender's logger: these lines are the sender's, wherever the code lives."""


@dataclass
class DispatchReport:
    """What one pass did, for logs, the CLI and the demo's live view."""

    sent: int = 0
    skipped: int = 0
    failed: int = 0
    unknown: int = 0
    retried: int = 0
    not_attempted: int = 0
    """Of ``retried``, those never handed to the provider (the worker stopping,
    dispatching halted, the sequence paused): held for a later pass, not failed."""
    exited: int = 0
    completed: int = 0
    batches: int = 0
    log: list[tuple[str, str, str, str]] = field(default_factory=list)
    """(email, sequence, step or '-', what happened) per decision, in order."""

    def summary(self) -> str:
        """One line for logs and the CLI."""
        retry = f"retry later {self.retried}"
        if self.not_attempted:
            retry += f" ({self.not_attempted} not attempted)"
        return (
            f"sent {self.sent}, skipped {self.skipped}, failed {self.failed}, "
            f"unknown {self.unknown}, {retry}, exited {self.exited}, "
            f"completed {self.completed}"
        )

    def merge(self, other: DispatchReport) -> None:
        for name in (
            "sent", "skipped", "failed", "unknown", "retried", "not_attempted", "exited",
            "completed", "batches",
        ):  # fmt: skip
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.log.extend(other.log)


@dataclass
class Answer:
    """One email's provider answer (or why it was not attempted), classified once."""

    email: PlannedEmail
    outcome: SendOutcome
    verdict: Verdict
    reserved: bool
    written: bool = False  # its ledger row is settled already (serial sending)
    id_written: bool = False  # with the provider's message id (serial, PostgreSQL)


def write_answers(
    conn: Connection,
    answers: list[Answer],
    *,
    now: datetime,
    worker_id: str,
    transport: str,
) -> DispatchReport:
    """Settle ``answers`` in the caller's transaction (``transport``: the name
    recorded for an answer that is not a provider's); what they add to the
    report."""
    writes = answer_writes(answers, now=now, transport=transport)
    write_answer_writes(conn, writes, now=now, worker_id=worker_id)
    return writes.report


def write_answer_writes(
    conn: Connection, writes: AnswerWrites, *, now: datetime, worker_id: str
) -> None:
    """The writes of :func:`answer_writes`, in the caller's transaction."""
    reservations.settle(conn, writes.settles)
    reservations.record_message_ids(conn, writes.message_ids)
    batches.update_enrollments(conn, worker_id, writes.changes, now)
    if writes.invalid:
        queries.mark_subscribers(
            conn,
            writes.invalid,
            SubscriberStatus.INVALID,
            "the provider rejected the address",
            now,
        )


@dataclass
class AnswerWrites:
    """What a batch of answers writes (see :func:`answer_writes`)."""

    report: DispatchReport
    settles: list[reservations.Settle]
    changes: list[EnrollmentChange]
    invalid: list[int]  # subscribers whose address the provider rejected
    message_ids: list[tuple[str, str, SendStatus]]  # of answers settled already

    @property
    def settles_and_moves_only(self) -> bool:
        """Only ledger rows settled and enrollments moved on (what a send
        pool's round statement writes, :func:`nurture.store.rounds.reserve_and_confirm`)."""
        return not self.invalid and not self.message_ids


def answer_writes(answers: list[Answer], *, now: datetime, transport: str) -> AnswerWrites:
    """The writes of ``answers`` and what they add to the report (the
    transport's unexpected errors are logged here, once)."""
    report = DispatchReport()
    rows: list[reservations.Settle] = []
    changes: list[EnrollmentChange] = []
    invalid: list[int] = []
    message_ids: list[tuple[str, str, SendStatus]] = []
    for answer in answers:
        email, outcome, verdict = answer.email, answer.outcome, answer.verdict
        if not answer.written:
            rows.append(settle_row(answer, now=now, transport=transport))
        elif not answer.id_written and isinstance(outcome, SendResult) and outcome.message_id:
            message_ids.append((email.key, outcome.message_id, verdict.status))
        if verdict.unexpected and isinstance(outcome, BaseException):
            log.error(
                "unexpected error from transport %s",
                transport,
                exc_info=outcome,
                extra={"action": "send.failed"},
            )
        if verdict.status == SendStatus.SENT:
            report.sent += 1
        elif verdict.status == SendStatus.RETRY:
            report.retried += 1
            report.not_attempted += isinstance(outcome, NotAttempted)
        elif verdict.status == SendStatus.FAILED:
            report.failed += 1
        else:
            report.unknown += 1
        what = verdict.status if verdict.reason is None else f"{verdict.status}: {verdict.reason}"
        report.log.append((email.recipient.email, email.sequence_id, email.step.id, what))
        if verdict.status == SendStatus.RETRY:
            assert verdict.next_attempt_at is not None
            changes.append(retry_later(email, verdict.next_attempt_at))
        elif verdict.invalid_address:
            invalid.append(email.recipient.id)
            changes.append(exit_after(email, "invalid address"))
        else:
            change, completed = after_send(email, verdict.status, now)  # type: ignore[arg-type]
            report.completed += completed
            changes.append(change)
    return AnswerWrites(report, rows, changes, invalid, message_ids)


def settle_row(answer: Answer, *, now: datetime, transport: str) -> reservations.Settle:
    """The ledger write of one answer."""
    outcome, verdict = answer.outcome, answer.verdict
    sent = isinstance(outcome, SendResult)
    return reservations.Settle(
        key=answer.email.key,
        expected=SendStatus.RESERVED if answer.reserved else SendStatus.QUEUED,
        status=verdict.status,
        reason=verdict.reason,
        attempts=verdict.attempts,
        next_attempt_at=verdict.next_attempt_at,
        sent_at=now if verdict.status != SendStatus.RETRY else None,
        provider_message_id=outcome.message_id if sent else None,  # type: ignore[union-attr]
        transport=outcome.provider if sent else transport,  # type: ignore[union-attr]
    )


def save_budget(conn: Connection, guard: PassGuard, now: datetime) -> None:
    """Store the failures in a row the pass counted; pause a sequence whose
    budget ran out (even if a later send succeeded)."""
    for seq_id, count, spent_at in guard.unsaved_budget():
        reason = None
        if spent_at is not None:
            reason = (
                f"paused after {spent_at} failed send{'' if spent_at == 1 else 's'} "
                f"in a row; last error: {guard.last_error.get(seq_id)}. "
                f"Fix the cause, then `nurture resume {seq_id}`."
            )
            log.error("sequence %s %s", seq_id, reason, extra={"action": "sequence.paused"})
        queries.save_sequence_state(
            conn,
            seq_id,
            consecutive_failures=count,
            paused=True if spent_at is not None else None,
            reason=reason,
            now=now,
        )
