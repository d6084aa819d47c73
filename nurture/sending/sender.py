"""The sender: queued emails in, confirmed ledger rows out.

It owns the send pool, the rate limiter, the per-pass :class:`PassGuard`, the
:class:`OutageBreaker` and the **reservation window**: an email's ledger row
turns ``queued`` -> ``reserved`` in the moment before its provider call, so at
any instant at most ``concurrency`` rows are reserved and not yet answered.
A crash therefore leaves at most that many rows whose fate is unknown; every
other planned email is still ``queued`` and the reconcile job makes it due
again.

* **concurrency 1**: everything runs in the caller's thread. One small
  transaction per email (:class:`~nurture.store.reservations.SerialLedger`)
  reserves it and settles the previous email's answer, so no answer waits
  unwritten while the next email goes out. On a SQLite file the batch is
  reserved in one commit instead and each call's start and answer go to a
  send journal (:mod:`nurture.store.journal`), which a reconciler fences and
  reads back if the worker dies. Enrollments move on in one
  transaction per batch, or every :data:`CONFIRM_EVERY` answers or
  :data:`CONFIRM_AFTER` seconds, whichever comes first (the planner reads the
  ledger, so a crash before that loses nothing).
* **a pool**: a coordinator thread reserves in chunks of at most the free
  send slots, hands them to the pool and confirms answers as they come (each
  of its transactions carries the answers collected so far). The dispatcher
  plans the next batch meanwhile; :meth:`Sender.wait_below` keeps it about
  one batch ahead.

Leases are renewed from the worker's wall clock at most every third of the
lease, inside these transactions.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy.engine import Connection, Engine

from nurture.core.planner import EnrollmentChange, PlannedEmail, after_send, exit_after, retry_later
from nurture.core.vocabulary import SendStatus, SubscriberStatus
from nurture.errors import NurtureError
from nurture.sending.guard import OUTAGE_AFTER, OutageBreaker, PassGuard
from nurture.sending.outcomes import NotAttempted, SendOutcome, Verdict, classify
from nurture.sending.ratelimit import RateLimiter
from nurture.store import batches, journal, queries, reservations
from nurture.transports.base import OutgoingEmail, SendResult, Transport

log = logging.getLogger("nurture.sending.sender")

CONFIRM_EVERY = 200
"""Answers confirmed in one transaction at most (and at the end of a batch)."""

CONFIRM_AFTER = 0.5
"""Seconds: answers are confirmed at least this often as well. With a pool, an
answer not yet written is an email that did reach the provider but that a
crash would leave ``unknown``; this keeps them to a few."""

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


@dataclass
class DispatchReport:
    """What one pass did, for logs, the CLI and the demo's live view."""

    sent: int = 0
    skipped: int = 0
    failed: int = 0
    unknown: int = 0
    retried: int = 0
    exited: int = 0
    completed: int = 0
    batches: int = 0
    log: list[tuple[str, str, str, str]] = field(default_factory=list)
    """(email, sequence, step or '-', what happened) per decision, in order."""

    def summary(self) -> str:
        """One line for logs and the CLI."""
        return (
            f"sent {self.sent}, skipped {self.skipped}, failed {self.failed}, "
            f"unknown {self.unknown}, retry later {self.retried}, exited {self.exited}, "
            f"completed {self.completed}"
        )

    def merge(self, other: DispatchReport) -> None:
        for name in (
            "sent", "skipped", "failed", "unknown", "retried", "exited", "completed", "batches",
        ):  # fmt: skip
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.log.extend(other.log)


class DispatchHalted(NurtureError):
    """Dispatching must stop (the provider refused our credentials)."""


@dataclass
class _Answer:
    email: PlannedEmail
    outcome: SendOutcome
    verdict: Verdict
    reserved: bool
    written: bool = False  # its ledger row is settled already (serial sending)
    id_written: bool = False  # with the provider's message id (serial, PostgreSQL)


class Sender:
    """Sends queued emails for one dispatcher; see the module docstring."""

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
        self._pool: ThreadPoolExecutor | None = None
        self._now: datetime | None = None
        self._renewed: datetime | None = None
        self._cond = threading.Condition()
        self._pending: deque[PlannedEmail] = deque()
        self._answers: list[_Answer] = []
        self._in_flight = 0
        self._writing = False  # the coordinator holds answers or a chunk not yet written
        self._coordinator: threading.Thread | None = None
        self._failure: BaseException | None = None
        self._closing = False
        self._journal_dir = journal.directory_for(engine)
        self._journal_ok: bool | None = None

    # -- one pass ----------------------------------------------------------

    @property
    def pooled(self) -> bool:
        return self.policy.concurrency > 1

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
        """Send a written batch's queued emails (serially, or via the pool)."""
        if not emails:
            return
        if self.pooled:
            with self._cond:
                self._raise_failure()
                self._pending.extend(emails)
                self._cond.notify_all()
            self._start_coordinator()
        else:
            self._send_serially(emails)

    def wait_below(self, backlog: int) -> None:
        """Block until fewer than ``backlog`` emails wait for a send slot."""
        with self._cond:
            # Also while the coordinator is reserving: the claim of the next
            # batch waits for the chunk in hand to reach the send threads.
            while (len(self._pending) >= backlog or self._writing) and self._failure is None:
                self._cond.wait(0.5)
            self._raise_failure()

    def drain(self) -> None:
        """Block until every email handed over is sent and confirmed."""
        if self.pooled:
            with self._cond:
                while self._busy and self._failure is None:
                    self._cond.wait(0.5)
            self._stop_coordinator()
            self._raise_failure()
        else:
            self._confirm(self._take_answers())

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
        with self._cond:
            left = [email.enrollment_id for email in self._pending]
            self._pending.clear()
            self._cond.notify_all()
            while (self._in_flight or self._writing) and self._failure is None:
                self._cond.wait(0.5)
        self._stop_coordinator()
        try:
            self._confirm(self._take_answers())
        except Exception:
            log.exception("could not confirm the answers of an interrupted pass")
        return left

    def _stop_coordinator(self) -> None:
        """The coordinator lives for one pass (it holds a connection)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._coordinator is not None:
            self._coordinator.join()
            self._coordinator = None
        self._closing = False

    def close(self) -> None:
        self._stop_coordinator()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

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

    def _deliver(self, email: PlannedEmail) -> _Answer:
        """The provider call for a reserved email, classified once."""
        assert self._now is not None
        outgoing = OutgoingEmail(
            message=email.composed,
            send_id=email.key,
            sequence_id=email.sequence_id,
            step_id=email.step.id,
            to_email=email.recipient.email,
        )
        outcome: SendOutcome
        try:
            # Asked again after the rate limiter, which may have slept.
            self.rate_limiter.acquire()
            held = self._held(email)
            if held is not None:
                return self._answer(email, held, reserved=True)
            try:
                outcome = self.transport.send(outgoing)
            except Exception as exc:  # classified below; a bug here must not lose the row
                outcome = exc
        except Exception:
            # A bug on our side before the provider call: the email never left.
            log.exception("internal error before sending %s", email.key)
            return self._answer(email, INTERNAL_ERROR, reserved=True)
        answer = self._answer(email, outcome, reserved=True)
        self.guard.record(outcome, answer.verdict, sequence_id=email.sequence_id)
        if self.after_send is not None:
            self.after_send(outgoing)
        return answer

    def _answer(self, email: PlannedEmail, outcome: SendOutcome, *, reserved: bool) -> _Answer:
        assert self._now is not None
        verdict = classify(
            outcome,
            attempts=email.attempts + 1,
            now=self._now,
            policy=self.policy,
            jitter=self.jitter,
        )
        return _Answer(email, outcome, verdict, reserved)

    # -- concurrency 1 -----------------------------------------------------

    def _held_else_renew(self, email: PlannedEmail, conn: Connection, *, reserved: bool) -> bool:
        """Before a serial send: True if the guard holds ``email`` back (its
        not-attempted answer is recorded); else renew the leases if due."""
        held = self._held(email)
        if held is not None:
            self._answers.append(self._answer(email, held, reserved=reserved))
            return True
        if self._renewal_due():
            with conn.begin():
                self._maybe_renew(conn)
        return False

    def _send_serially(self, emails: list[PlannedEmail]) -> None:
        if self._journal_dir is not None and self._journal_usable(self._journal_dir):
            self._send_journaled(emails, self._journal_dir)
            return
        with (
            reservations.SerialLedger(self.engine, self.worker_id, self.transport.name) as ledger,
            self.engine.connect() as conn,
        ):
            confirmed = time.monotonic()
            # The last answer, written with the next reservation (one commit)
            # unless a confirm comes first.
            unwritten: _Answer | None = None
            for email in emails:
                if self._held_else_renew(email, conn, reserved=False):
                    continue
                settle = None if unwritten is None else self._settle_row(unwritten)
                reserved = ledger.step(settle, email.key, self.lease_until())
                if unwritten is not None:
                    unwritten.written, unwritten.id_written = True, ledger.writes_message_ids
                    unwritten = None
                if not reserved:
                    log.warning(
                        "email %s not sent: another worker took its enrollment (lease expired)",
                        email.key,
                    )
                    continue
                unwritten = self._deliver(email)
                self._answers.append(unwritten)
                if len(self._answers) >= CONFIRM_EVERY or (
                    time.monotonic() - confirmed >= CONFIRM_AFTER
                ):
                    self._confirm(self._take_answers(), conn)
                    unwritten, confirmed = None, time.monotonic()
            self._confirm(self._take_answers(), conn)

    def _journal_usable(self, directory: Path) -> bool:
        """Can journals be written there? If not (a read-only folder), the
        serial path commits per email instead, and says so once."""
        if self._journal_ok is None:
            try:
                directory.mkdir(mode=0o700, exist_ok=True)
                self._journal_ok = os.access(directory, os.W_OK | os.X_OK)
            except OSError:
                self._journal_ok = False
            if not self._journal_ok:
                log.warning("cannot write send journals in %s: one commit per email", directory)
        return self._journal_ok

    def _send_journaled(self, emails: list[PlannedEmail], directory: Path) -> None:
        """Concurrency 1 on a SQLite file: the batch is reserved in one commit
        and each call's start and answer go to a send journal (see
        :mod:`nurture.store.journal`) instead of a commit per email."""
        wanted: list[PlannedEmail] = []
        for email in emails:
            held = self._held(email)
            if held is not None:
                self._answers.append(self._answer(email, held, reserved=False))
            else:
                wanted.append(email)
        if not wanted:
            self._confirm(self._take_answers())
            return
        book = journal.SendJournal(directory, self.worker_id)
        pending: deque[PlannedEmail] = deque()
        committed = False
        try:
            with self.engine.connect() as conn:
                try:
                    book.reserving(e.key for e in wanted)
                    with conn.begin():
                        pending.extend(self._reserve(conn, wanted))
                    self._send_pending(book, pending, conn)
                finally:
                    # Also after an error: what was never attempted goes back
                    # to queued, the answers are confirmed. Once fenced, all of
                    # it is the reconciler's.
                    if not book.fenced:
                        self._confirm_journaled(book, conn, [e.key for e in pending])
                        committed = True
        finally:
            # Kept unless all of it is committed: the reconciler reads it once
            # the lease has run out.
            book.close(remove=committed)

    def _send_pending(
        self, book: journal.SendJournal, pending: deque[PlannedEmail], conn: Connection
    ) -> None:
        confirmed = time.monotonic()
        unjournaled: _Answer | None = None  # the last answer, journaled with the next call
        while pending:
            email = pending[0]
            if self._held_else_renew(email, conn, reserved=True):
                pending.popleft()
                continue
            last = None if unjournaled is None else self._journal_values(unjournaled)
            try:
                book.record(last, email.key)
            except journal.Fenced:
                break
            pending.popleft()
            unjournaled = self._deliver(email)
            self._answers.append(unjournaled)
            if len(self._answers) >= CONFIRM_EVERY or (
                time.monotonic() - confirmed >= CONFIRM_AFTER
            ):
                if not self._confirm_journaled(book, conn, []):
                    break
                unjournaled, confirmed = None, time.monotonic()
        if unjournaled is not None:
            with contextlib.suppress(journal.Fenced):
                book.record(self._journal_values(unjournaled), None)
        if book.fenced:
            log.warning(
                "this batch was taken over (its lease ran out): %d email(s) left to the "
                "worker that reconciled it",
                len(pending),
            )
            self._answers.clear()

    def _confirm_journaled(
        self, book: journal.SendJournal, conn: Connection, give_back: list[str]
    ) -> bool:
        """Confirm the answers and give back ``give_back`` in one transaction
        that commits only if no reconciler fenced the journal first (checked
        after the writes, when this transaction holds SQLite's write lock: a
        reconciler commits before it, and so fenced before it, or after it).
        False if fenced (nothing written)."""
        answers = self._take_answers()
        try:
            self._confirm(answers, conn, give_back=give_back, fence=book)
        except journal.Fenced:
            return False
        return True

    def _journal_values(self, answer: _Answer) -> dict[str, object]:
        return reservations.settle_values_for_journal(self._settle_row(answer))

    # -- a pool ------------------------------------------------------------

    def _start_coordinator(self) -> None:
        if self._coordinator is None or not self._coordinator.is_alive():
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    self.policy.concurrency, thread_name_prefix="nurture-send"
                )
            self._coordinator = threading.Thread(
                target=self._coordinate, name="nurture-sender", daemon=True
            )
            self._coordinator.start()

    def _coordinate(self) -> None:
        try:
            with self.engine.connect() as conn:
                while True:
                    with self._cond:
                        while not (
                            self._closing
                            or self._answers
                            or (self._pending and self._in_flight < self.policy.concurrency)
                        ):
                            self._cond.wait(0.5)
                        if self._closing and not (self._pending or self._answers):
                            return
                        answers = self._take_answers()
                        self._writing = True
                        chunk: list[PlannedEmail] = []
                        free = self.policy.concurrency - self._in_flight
                        while self._pending and len(chunk) < free:
                            chunk.append(self._pending.popleft())
                        self._in_flight += len(chunk)
                    try:
                        self._launch_and_confirm(conn, chunk, answers)
                    finally:
                        with self._cond:
                            self._writing = False
                            self._cond.notify_all()
        except BaseException as exc:
            log.exception("the sender stopped")
            with self._cond:
                # _in_flight stays as it is: the send threads still running
                # each take theirs off when they answer. (Set to 0 here, their
                # answers took it below 0, and the next pass's drain waited
                # for a count that never came back to 0: a hung worker.)
                self._failure = exc
                self._writing = False
                self._cond.notify_all()

    def _launch_and_confirm(
        self, conn: Connection, chunk: list[PlannedEmail], answers: list[_Answer]
    ) -> None:
        """Reserve the chunk for the free send slots and write the answers that
        came back, in one transaction (one commit per round, not two), then
        hand the chunk to the send threads."""
        held: list[_Answer] = []
        wanted: list[PlannedEmail] = []
        for email in chunk:
            hold = self._held(email)
            if hold is not None:
                held.append(self._answer(email, hold, reserved=False))
            else:
                wanted.append(email)
        report = None
        try:
            if answers and self.before_confirm is not None:
                self.before_confirm()
            with conn.begin():
                reserved = self._reserve(conn, wanted) if wanted else []
                if answers:
                    report = self._write_answers_in(conn, answers)
        except BaseException:
            # Nothing of the chunk reached the send threads, and the answers
            # were not written: keep them for abandon() (or the next pass)
            # to confirm, and free the chunk's slots. The emails already with
            # the send threads still count until they answer.
            with self._cond:
                self._answers[:0] = [*answers, *held]
                self._in_flight -= len(chunk)
            raise
        if report is not None:
            with self._cond:
                self.report.merge(report)
        assert self._pool is not None
        with self._cond:
            self._answers.extend(held)
            self._in_flight -= len(chunk) - len(reserved)
        for email in reserved:
            self._pool.submit(self._send_in_pool, email)

    def _send_in_pool(self, email: PlannedEmail) -> None:
        try:
            answer = self._deliver(email)
        except BaseException as exc:
            # Not an Exception (those are answers, see _deliver): this thread is
            # being torn down mid-send. The email stays reserved (it may have
            # reached the provider: reconcile makes it unknown) and the pass
            # stops, instead of waiting forever for an answer that never comes.
            with self._cond:
                self._in_flight -= 1
                if self._failure is None:
                    self._failure = exc
                self._cond.notify_all()
            raise
        with self._cond:
            self._answers.append(answer)
            self._in_flight -= 1
            self._cond.notify_all()

    @property
    def _busy(self) -> bool:
        return bool(self._pending or self._in_flight or self._answers or self._writing)

    def _take_answers(self) -> list[_Answer]:
        answers, self._answers = self._answers, []
        return answers

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise RuntimeError("the sender stopped") from self._failure

    # -- confirming --------------------------------------------------------

    def _confirm(
        self,
        answers: list[_Answer],
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
        answers: list[_Answer],
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

    def _write_answers_in(self, conn: Connection, answers: list[_Answer]) -> DispatchReport:
        """Settle ``answers`` in the caller's transaction; what they add to the report."""
        assert self._now is not None
        now, report = self._now, DispatchReport()
        rows: list[reservations.Settle] = []
        changes: list[EnrollmentChange] = []
        invalid: list[int] = []
        message_ids: list[tuple[str, str, SendStatus]] = []
        for answer in answers:
            email, outcome, verdict = answer.email, answer.outcome, answer.verdict
            if not answer.written:
                rows.append(self._settle_row(answer))
            elif not answer.id_written and isinstance(outcome, SendResult) and outcome.message_id:
                message_ids.append((email.key, outcome.message_id, verdict.status))
            if verdict.unexpected and isinstance(outcome, BaseException):
                log.error(
                    "unexpected error from transport %s",
                    self.transport.name,
                    exc_info=outcome,
                    extra={"action": "send.failed"},
                )
            if verdict.status == SendStatus.SENT:
                report.sent += 1
            elif verdict.status == SendStatus.RETRY:
                report.retried += 1
            elif verdict.status == SendStatus.FAILED:
                report.failed += 1
            else:
                report.unknown += 1
            what = (
                verdict.status if verdict.reason is None else f"{verdict.status}: {verdict.reason}"
            )
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
        self._maybe_renew(conn)
        reservations.settle(conn, rows)
        reservations.record_message_ids(conn, message_ids)
        batches.update_enrollments(conn, self.worker_id, changes, now)
        if invalid:
            queries.mark_subscribers(
                conn,
                invalid,
                SubscriberStatus.INVALID,
                "the provider rejected the address",
                now,
            )
        self._save_budget(conn, now)
        return report

    def _settle_row(self, answer: _Answer) -> reservations.Settle:
        """The ledger write of one answer."""
        assert self._now is not None
        outcome, verdict = answer.outcome, answer.verdict
        sent = isinstance(outcome, SendResult)
        return reservations.Settle(
            key=answer.email.key,
            expected=SendStatus.RESERVED if answer.reserved else SendStatus.QUEUED,
            status=verdict.status,
            reason=verdict.reason,
            attempts=verdict.attempts,
            next_attempt_at=verdict.next_attempt_at,
            sent_at=self._now if verdict.status != SendStatus.RETRY else None,
            provider_message_id=outcome.message_id if sent else None,  # type: ignore[union-attr]
            transport=outcome.provider if sent else self.transport.name,  # type: ignore[union-attr]
        )

    def _save_budget(self, conn: Connection, now: datetime) -> None:
        """Store the failures in a row the pass counted; pause a sequence whose
        budget ran out (even if a later send succeeded)."""
        guard = self.guard
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
