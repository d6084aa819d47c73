"""Sending with a pool: a coordinator thread and ``concurrency`` send threads
(or, for a multiplexed transport, one thread that hands emails to it).

The coordinator reserves in chunks of at most the free send slots, hands
them to the pool and confirms answers as they come (each of its
transactions reserves the next chunk and carries the answers collected so
far: one commit per round; on PostgreSQL the round is one statement when it
can be, :func:`nurture.store.rounds.reserve_and_confirm`). The dispatcher
plans the next batch meanwhile; :meth:`PooledSender.wait_below` keeps it
about one batch ahead.

A :attr:`~nurture.transports.base.BaseTransport.multiplexed` transport (the
pooled SendGrid transport) needs no thread per email in flight: its own thread
waits for every answer. The send threads are then replaced by one launcher,
which takes the rate limit and hands each email to
:meth:`~nurture.transports.base.BaseTransport.submit`; the answer is
classified where it arrives. Up to ``concurrency`` emails are in flight
either way.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from sqlalchemy.engine import Connection

from nurture.core.batch import PlannedEmail
from nurture.sending.answers import Answer, AnswerWrites
from nurture.sending.sender import Sender
from nurture.store import rounds
from nurture.transports.base import BaseTransport, OutgoingEmail, SendResult

log = logging.getLogger("nurture.sending.sender")


class PooledSender(Sender):
    """Sends through a pool of threads; see the module docstring."""

    def _set_up(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._pending: deque[PlannedEmail] = deque()
        self._in_flight = 0
        self._writing = False  # the coordinator holds answers or a chunk not yet written
        self._coordinator: threading.Thread | None = None
        self._closing = False
        # PostgreSQL: a round is one statement when it can be (see
        # _fits_one_statement); SQLite's statements cost no round trips.
        self._one_statement_rounds = self.engine.dialect.name == "postgresql"
        self._multiplexed: BaseTransport[Any, Any] | None = (
            self.transport
            if isinstance(self.transport, BaseTransport) and self.transport.multiplexed
            else None
        )
        self._launches: queue.SimpleQueue[PlannedEmail | None] = queue.SimpleQueue()
        self._launcher: threading.Thread | None = None

    def send(self, emails: list[PlannedEmail]) -> None:
        """Hand a written batch's queued emails to the coordinator."""
        if not emails:
            return
        with self._cond:
            self._raise_failure()
            self._pending.extend(emails)
            self._cond.notify_all()
        self._start_coordinator()

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
        with self._cond:
            while self._busy and self._failure is None:
                self._cond.wait(0.5)
        self._stop_coordinator()
        self._raise_failure()

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
        return left + super().abandon()

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
        if self._launcher is not None:
            self._launches.put(None)
            self._launcher.join()
            self._launcher = None

    def _start_coordinator(self) -> None:
        if self._coordinator is None or not self._coordinator.is_alive():
            if self._multiplexed is not None:
                if self._launcher is None:
                    self._launcher = threading.Thread(
                        target=self._launch, name="nurture-launch", daemon=True
                    )
                    self._launcher.start()
            elif self._pool is None:
                self._pool = ThreadPoolExecutor(
                    self.policy.concurrency, thread_name_prefix="nurture-send"
                )
            self._coordinator = threading.Thread(
                target=self._coordinate, name="nurture-sender", daemon=True
            )
            self._coordinator.start()

    def _coordinate(self) -> None:
        try:
            with self.engine.connect() as conn, self._round_plans(conn):
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

    def _round_plans(self, conn: Connection) -> AbstractContextManager[None]:
        """PostgreSQL: the one-statement round prepared once on this
        connection, on a plan by key (:func:`rounds.keyed_round_plans`)."""
        return rounds.keyed_round_plans(conn) if self._one_statement_rounds else nullcontext()

    def _launch_and_confirm(
        self, conn: Connection, chunk: list[PlannedEmail], answers: list[Answer]
    ) -> None:
        """Reserve the chunk for the free send slots and write the answers that
        came back, in one transaction (one commit per round, not two), then
        hand the chunk to the send threads."""
        held: list[Answer] = []
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
            writes = self._writes(answers) if answers else None
            if self._fits_one_statement(writes):
                reserved = self._round_in_one_statement(conn, wanted, writes)
                report = None if writes is None else writes.report
            else:
                with conn.begin():
                    reserved = self._reserve(conn, wanted) if wanted else []
                    if writes is not None:
                        report = self._write_in(conn, writes)
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
        with self._cond:
            self._answers.extend(held)
            self._in_flight -= len(chunk) - len(reserved)
        if self._multiplexed is not None:
            for email in reserved:
                self._launches.put(email)
        else:
            assert self._pool is not None
            for email in reserved:
                self._pool.submit(self._send_in_pool, email)

    def _fits_one_statement(self, writes: AnswerWrites | None) -> bool:
        """Can this round be PostgreSQL's one statement
        (:func:`rounds.reserve_and_confirm`)? Not when the leases are
        due for renewal, a sequence's failure count is to be saved, or an
        answer writes more than its ledger row and enrollment (an address
        the provider rejected): those rounds take a transaction of several
        statements."""
        return (
            self._one_statement_rounds
            and (writes is None or writes.settles_and_moves_only)
            and not self._renewal_due()
            and self.guard.budget_saved()
        )

    def _round_in_one_statement(
        self, conn: Connection, wanted: list[PlannedEmail], writes: AnswerWrites | None
    ) -> list[PlannedEmail]:
        """Reserve ``wanted`` and write the answers' settles and enrollment
        moves in one statement, its own transaction: one round trip and one
        commit where a transaction of its statements took five round trips."""
        assert self._now is not None
        statement = rounds.round_statement(
            conn.dialect,
            [e.key for e in wanted],
            self.worker_id,
            self.lease_until(),
            self.transport.name,
            [] if writes is None else writes.settles,
            [] if writes is None else writes.changes,
            self._now,
        )
        keys = rounds.reserve_and_confirm(conn, statement)
        return self._kept(wanted, keys)

    def _launch(self) -> None:
        """The launcher thread (multiplexed transports): each reserved email,
        in turn, past the rate limit and to the transport."""
        transport = self._multiplexed
        assert transport is not None
        while (email := self._launches.get()) is not None:
            landed: _Landing | None = None
            try:
                early = self._before_call(email)
                if early is not None:
                    self._answered(early)
                    continue
                outgoing = self._outgoing(email)
                landed = _Landing(functools.partial(self._landed, email, outgoing))
                transport.submit(outgoing, landed)
            except BaseException as exc:
                # A bug (ours or the transport's) before the email was
                # answered: it will never be, so the pass stops.
                if landed is None or not landed.called:
                    self._stop_on(exc)
                if not isinstance(exc, Exception):
                    raise

    def _landed(
        self, email: PlannedEmail, outgoing: OutgoingEmail, outcome: SendResult | Exception
    ) -> None:
        """A multiplexed transport's outcome, in its thread: classified, and
        kept for the coordinator to confirm."""
        try:
            answer = self._after_call(email, outgoing, outcome)
        except BaseException as exc:
            self._stop_on(exc)
            raise
        self._answered(answer)

    def _answered(self, answer: Answer) -> None:
        with self._cond:
            self._answers.append(answer)
            self._in_flight -= 1
            self._cond.notify_all()

    def _stop_on(self, exc: BaseException) -> None:
        """An email in flight that will never be answered: the pass stops
        (its row stays reserved; reconcile settles it)."""
        with self._cond:
            self._in_flight -= 1
            if self._failure is None:
                self._failure = exc
            self._cond.notify_all()

    def _send_in_pool(self, email: PlannedEmail) -> None:
        try:
            answer = self._deliver(email)
        except BaseException as exc:
            # Not an Exception (those are answers, see _deliver): this thread is
            # being torn down mid-send. The email stays reserved (it may have
            # reached the provider: reconcile makes it unknown) and the pass
            # stops, instead of waiting forever for an answer that never comes.
            self._stop_on(exc)
            raise
        self._answered(answer)

    @property
    def _busy(self) -> bool:
        return bool(self._pending or self._in_flight or self._answers or self._writing)


class _Landing:
    """An email's ``done`` for the transport, which knows whether it was called."""

    __slots__ = ("_landed", "called")

    def __init__(self, landed: Callable[[SendResult | Exception], None]) -> None:
        self._landed = landed
        self.called = False

    def __call__(self, outcome: SendResult | Exception) -> None:
        self.called = True
        self._landed(outcome)
