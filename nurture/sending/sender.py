"""The sender: queued emails in, confirmed ledger rows out.

It owns the rate limiter, the per-pass :class:`PassGuard`, the
:class:`OutageBreaker` and the **reservation window**: an email's ledger row
turns ``queued`` -> ``reserved`` in the moment before its provider call, so at
any instant at most ``concurrency`` rows are reserved and not yet answered.
A crash therefore leaves at most that many rows whose fate is unknown; every
other planned email is still ``queued`` and the reconcile job makes it due
again.

This module is what every sender does: a pass's life (:meth:`Sender.begin`,
:meth:`Sender.end`), reserving, one provider call and its answer, and
confirming answers (what they write is :mod:`nurture.sending.answers`). How
the calls are scheduled is a subclass's, chosen by the dispatcher from the
policy's ``concurrency``:

* 1: :class:`~nurture.sending.serial.SerialSender`, everything in the
  caller's thread, with a commit or a journal line per email;
* more: :class:`~nurture.sending.pool.PooledSender`, a coordinator thread
  reserving for a pool of send threads.

Leases are renewed from the worker's wall clock at most every third of the
lease, inside these transactions.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.engine import Connection, Engine

from nurture.core.batch import PlannedEmail
from nurture.errors import NurtureError
from nurture.sending.answers import (
    Answer,
    AnswerWrites,
    DispatchReport,
    answer_writes,
    save_budget,
    settle_row,
    write_answer_writes,
)
from nurture.sending.guard import OUTAGE_AFTER, OutageBreaker, PassGuard
from nurture.sending.outcomes import NotAttempted, SendOutcome, classify
from nurture.sending.ratelimit import RateLimiter
from nurture.store import journal, queries, reservations
from nurture.transports.base import OutgoingEmail, Transport

log = logging.getLogger("nurture.sending.sender")

INTERNAL_ERROR = NotAttempted("not attempted: internal error (see the worker log)")


@dataclass(frozen=True)
class DispatchPolicy:
    """The knobs of dispatching (from Settings, read at the edge)."""

    batch_size: int = 500
    rate_limit: float = 50.0  # emails per second, across the batch
    concurrency: int = 1  # parallel transport calls (HTTP providers want many)
    lease: timedelta = timedelta(minutes=5)
    max_attempts: int = 20  # with the backoff below: retried for 1.5 to 3 days
    retry_base: timedelta = timedelta(minutes=1)
    retry_max: timedelta = timedelta(hours=6)
    error_budget: int = 20  # failures in a row that pause a sequence
    # How long an ``unknown`` send waits for a provider event before reconcile
    # retries it once; None (no event webhook configured): never.
    unknown_retry_after: timedelta | None = None


class DispatchHalted(NurtureError):
    """Dispatching must stop (the provider refused our credentials)."""


class Sender:
    """What every sender does (see the module docstring); a subclass schedules
    the provider calls: :meth:`send`, :meth:`drain` and, for a pool,
    :meth:`wait_below` and :meth:`close`."""

    def __init__(
        self,
        engine: Engine,
        transport: Transport,
        *,
        policy: DispatchPolicy,
        worker_id: str,
        rate_limiter: RateLimiter,
        jitter: Callable[[], float],
        wall_clock: Callable[[], datetime],
    ) -> None:
        self.engine = engine
        self.transport = transport
        self.policy = policy
        self.worker_id = worker_id
        self.rate_limiter = rate_limiter
        self.jitter = jitter
        self.wall_clock = wall_clock
        # Test seams: after the provider's answer is counted (send thread);
        # before a confirm commits.
        self.after_send: Callable[[OutgoingEmail], None] | None = None
        self.before_confirm: Callable[[], None] | None = None
        self.stopping = threading.Event()
        self.breaker = OutageBreaker()
        self.guard = PassGuard(policy.error_budget)
        self.report = DispatchReport()
        self._now: datetime | None = None
        self._renewed: datetime | None = None
        self._cond = threading.Condition()
        self._answers: list[Answer] = []
        self._failure: BaseException | None = None
        self._set_up()

    def _set_up(self) -> None:
        """A kind of sender's own state, made at the end of ``__init__``
        (so that each kind takes exactly the base's typed arguments)."""

    # -- one pass ----------------------------------------------------------

    def begin(self, now: datetime, sequence_ids: Iterable[str]) -> bool:
        """Start a pass at ``now``; False while the outage breaker holds."""
        if self.breaker.holds(now):
            log.info(
                "the provider looked down: no new sends before %s",
                self.breaker.resume_at,
                extra={"action": "send.held"},
            )
            return False
        self._now, self._renewed, self._failure = now, None, None
        self.guard = PassGuard(self.policy.error_budget)
        self.report = DispatchReport()
        with self.engine.connect() as conn:
            self.guard.start_from(queries.failure_counters(conn, sequence_ids))
        return True

    @property
    def open(self) -> bool:
        """May the pass claim more?"""
        return self.guard.open and not self.stopping.is_set() and self._failure is None

    def lease_until(self) -> datetime:
        return self.wall_clock() + self.policy.lease

    def send(self, emails: list[PlannedEmail]) -> None:
        """Send a written batch's queued emails."""
        raise NotImplementedError

    def wait_below(self, backlog: int) -> None:
        """Block until fewer than ``backlog`` emails wait for a send slot (a
        sender without a pool has sent them all when :meth:`send` returns)."""

    def drain(self) -> None:
        """Block until every email handed over is sent and confirmed."""
        raise NotImplementedError

    def end(self, now: datetime) -> DispatchReport:
        """Finish the pass: the breaker learns from it; a refused key halts."""
        pause = self.breaker.after(self.guard, now)
        if pause is not None:
            log.warning(
                "the provider failed %d times in a row: the emails not yet attempted stay "
                "queued; no new sends for %ds",
                OUTAGE_AFTER,
                pause.total_seconds(),
                extra={"action": "send.outage"},
            )
        if self.guard.refusal is not None:
            raise DispatchHalted(
                f"dispatching stopped: {self.guard.refusal} Fix the API key "
                "(NURTURE_SENDGRID_API_KEY) and restart; nothing was lost, "
                "the emails are queued."
            ) from self.guard.refusal
        return self.report

    def abandon(self) -> list[int]:
        """After an error: stop handing out emails and wait for those with the
        provider (their answers are confirmed if the database lets us).
        Returns the enrollments whose emails were never reserved."""
        try:
            self._confirm(self._take_answers())
        except Exception:
            log.exception("could not confirm the answers of an interrupted pass")
        return []

    def close(self) -> None:
        """Let go of what the sender holds between passes."""

    # -- reserving ---------------------------------------------------------

    def _held(self, email: PlannedEmail) -> NotAttempted | None:
        return self.guard.hold(email.sequence_id, stopping=self.stopping.is_set())

    def _reserve(self, conn: Connection, emails: list[PlannedEmail]) -> list[PlannedEmail]:
        """In the caller's transaction: renew leases if due, reserve ``emails``.
        Returns those reserved; the others were lost to another worker."""
        lease = self._maybe_renew(conn)
        keys = reservations.reserve(
            conn, [e.key for e in emails], self.worker_id, lease, self.transport.name
        )
        return self._kept(emails, keys)

    def _kept(self, emails: list[PlannedEmail], keys: set[str]) -> list[PlannedEmail]:
        """The emails whose keys were reserved (a warning for the others)."""
        if len(keys) == len(emails):
            return emails
        lost = [e for e in emails if e.key not in keys]
        log.warning(
            "%d email(s) not sent: another worker took their enrollment (lease expired)",
            len(lost),
        )
        return [e for e in emails if e.key in keys]

    def _renewal_due(self) -> bool:
        return self._renewed is None or self.wall_clock() - self._renewed >= self.policy.lease / 3

    def _maybe_renew(self, conn: Connection) -> datetime:
        wall = self.wall_clock()
        lease = wall + self.policy.lease
        if self._renewed is None or wall - self._renewed >= self.policy.lease / 3:
            reservations.renew_leases(conn, self.worker_id, lease)
            self._renewed = wall
        return lease

    # -- one send ----------------------------------------------------------

    def _deliver(self, email: PlannedEmail) -> Answer:
        """The provider call for a reserved email, classified once."""
        outgoing = self._outgoing(email)
        early = self._before_call(email)
        if early is not None:
            return early
        outcome: SendOutcome
        try:
            outcome = self.transport.send(outgoing)
        except Exception as exc:  # classified below; a bug here must not lose the row
            outcome = exc
        return self._after_call(email, outgoing, outcome)

    def _outgoing(self, email: PlannedEmail) -> OutgoingEmail:
        return OutgoingEmail(
            message=email.composed,
            send_id=email.key,
            sequence_id=email.sequence_id,
            step_id=email.step.id,
            to_email=email.recipient.email,
        )

    def _before_call(self, email: PlannedEmail) -> Answer | None:
        """Wait for the rate limit; the answer if the email is not to be sent after all."""
        try:
            self.rate_limiter.acquire()
            # Asked again after the rate limiter, which may have slept.
            held = self._held(email)
            if held is not None:
                return self._answer(email, held, reserved=True)
        except Exception:
            # A bug on our side before the provider call: the email never left.
            log.exception("internal error before sending %s", email.key)
            return self._answer(email, INTERNAL_ERROR, reserved=True)
        return None

    def _after_call(
        self, email: PlannedEmail, outgoing: OutgoingEmail, outcome: SendOutcome
    ) -> Answer:
        """The provider's outcome classified, and counted by the guard."""
        answer = self._answer(email, outcome, reserved=True)
        self.guard.record(outcome, answer.verdict, sequence_id=email.sequence_id)
        if self.after_send is not None:
            self.after_send(outgoing)
        return answer

    def _answer(self, email: PlannedEmail, outcome: SendOutcome, *, reserved: bool) -> Answer:
        assert self._now is not None
        verdict = classify(
            outcome,
            attempts=email.attempts + 1,
            now=self._now,
            policy=self.policy,
            jitter=self.jitter,
        )
        return Answer(email, outcome, verdict, reserved)

    def _take_answers(self) -> list[Answer]:
        answers, self._answers = self._answers, []
        return answers

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise RuntimeError("the sender stopped") from self._failure

    # -- confirming --------------------------------------------------------

    def _confirm(
        self,
        answers: list[Answer],
        conn: Connection | None = None,
        *,
        give_back: list[str] | None = None,
        fence: journal.SendJournal | None = None,
    ) -> None:
        if not answers and not give_back:
            return
        if answers and self.before_confirm is not None:
            self.before_confirm()
        if conn is None:
            with self.engine.connect() as own:
                self._write_answers(own, answers, give_back, fence)
        else:
            self._write_answers(conn, answers, give_back, fence)

    def _write_answers(
        self,
        conn: Connection,
        answers: list[Answer],
        give_back: list[str] | None = None,
        fence: journal.SendJournal | None = None,
    ) -> None:
        with conn.begin():
            report = self._write_answers_in(conn, answers)
            if give_back:
                reservations.give_back(conn, give_back)
            if fence is not None and fence.overtaken():
                raise journal.Fenced(str(fence.path))  # rolls the writes back
        with self._cond:
            self.report.merge(report)

    def _write_answers_in(self, conn: Connection, answers: list[Answer]) -> DispatchReport:
        """Settle ``answers`` in the caller's transaction (and renew the leases
        if due); what they add to the report."""
        return self._write_in(conn, self._writes(answers))

    def _writes(self, answers: list[Answer]) -> AnswerWrites:
        assert self._now is not None
        return answer_writes(answers, now=self._now, transport=self.transport.name)

    def _write_in(self, conn: Connection, writes: AnswerWrites) -> DispatchReport:
        """:meth:`_write_answers_in` of answers' writes already worked out."""
        assert self._now is not None
        self._maybe_renew(conn)
        write_answer_writes(conn, writes, now=self._now, worker_id=self.worker_id)
        save_budget(conn, self.guard, self._now)
        return writes.report

    def _settle_row(self, answer: Answer) -> reservations.Settle:
        assert self._now is not None
        return settle_row(answer, now=self._now, transport=self.transport.name)
