"""The dispatcher: claim -> plan -> send -> confirm, until nothing is due at ``now``.

1. **Claim** due enrollments with a lease (``claim_due_enrollments``: SKIP
   LOCKED on PostgreSQL, a conditional UPDATE on SQLite).
2. **Plan** with the pure planner (:mod:`nurture.core.planner`), which asks
   the core's ``decide_next_step``/``after_step`` (what ``simulate`` uses) and
   renders each email; a render failure fails that email only.
3. **Write** the plan in one transaction, only for enrollments this worker
   still holds: skips, exits, waits, and one ``queued`` ledger row per email;
   suppression, subscriber status and paused sequences are re-checked in it.
   A ``when`` that raised pauses its sequence in the same transaction.
   A DB error is retried on halves of the batch down to one enrollment, so one
   poison row cannot stop the others.
4. **Send** (:class:`~nurture.sending.sender.Sender`): each email is
   ``reserved`` in the moment before its provider call, then confirmed
   (``sent``, ``retry``, ``failed`` or ``unknown``) and its enrollment moves on.

A crash leaves at most ``concurrency`` reserved-and-unanswered rows: the
reconcile job makes them ``unknown`` once their lease expires, and makes the
``queued`` rows of dead workers due again.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError

from nurture.core.batch import (
    BatchPlan,
    EnrollmentChange,
    LedgerChange,
    LedgerInsert,
    PlannedEmail,
    SequencePause,
)
from nurture.core.loader import LoadedSequence
from nurture.core.planner import Compose, after_send, blocked_reason, exit_after, plan_batch
from nurture.core.vocabulary import SendStatus
from nurture.sending.answers import DispatchReport
from nurture.sending.entropy import random_hex
from nurture.sending.pool import PooledSender
from nurture.sending.ratelimit import RateLimiter
from nurture.sending.sender import DispatchHalted, DispatchPolicy, Sender
from nurture.sending.serial import SerialSender
from nurture.sending.unconfirmed import retry_unconfirmed
from nurture.store import batches, funnels, queries, recovery, reservations
from nurture.transports.base import OutgoingEmail, Transport

__all__ = ["Compose", "DispatchHalted", "DispatchPolicy", "DispatchReport", "Dispatcher"]

log = logging.getLogger("nurture.sending.dispatcher")

RETRY_FAILED_BATCH = timedelta(minutes=1)
"""A batch that could not be written at all is not due again before this:
the next pass takes other enrollments first instead of the same ones forever."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def time_ordered_key() -> str:
    """A new ledger key: 32 hex digits, the time in milliseconds (12) then 80
    random bits. Keys made later sort later, so the ledger's unique index on
    ``key`` grows at its end instead of at a random page among millions (a
    tick's inserts then touch a few pages, whatever the ledger's size); the
    random part keeps keys unguessable and unique across workers. It is read
    from the OS a page at a time (:mod:`nurture.sending.entropy`: a read per
    key kept the send pool's threads from the interpreter lock)."""
    return f"{time.time_ns() // 1_000_000:012x}{random_hex(10)}"


def new_worker_id() -> str:
    """``host:pid:random``: which machine and process a claim, a heartbeat or a
    metric is from (``/healthz``, ``/metrics``, the log). The random part keeps it
    new at every start, even for a restarted container whose pid is 1 again, so
    a new process never takes a dead one's claims for its own."""
    host = socket.gethostname().split(".")[0][:40] or "host"
    return f"{host}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Dispatcher:
    """Drives the pure planner over the store. ``now`` (the pass's time) is an
    argument; leases use ``wall_clock``, the worker's real time."""

    def __init__(
        self,
        engine: Engine,
        *,
        sequences: Callable[[], dict[str, LoadedSequence]],
        compose: Compose,
        transport: Transport,
        policy: DispatchPolicy | None = None,
        worker_id: str | None = None,
        rate_limiter: RateLimiter | None = None,
        jitter: Callable[[], float] = random.random,
        before_confirm: Callable[[], None] | None = None,
        after_send: Callable[[OutgoingEmail], None] | None = None,
        wall_clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.engine = engine
        self.sequences = sequences
        self.compose = compose
        self.transport = transport
        self.worker_id = worker_id or new_worker_id()
        policy = policy or DispatchPolicy()
        # One send at a time, or a pool (checked against Sender's signature).
        kind: type[Sender] = PooledSender if policy.concurrency > 1 else SerialSender
        self.sender = kind(
            engine,
            transport,
            policy=policy,
            worker_id=self.worker_id,
            rate_limiter=rate_limiter or RateLimiter(policy.rate_limit),
            jitter=jitter,
            wall_clock=wall_clock,
        )
        self.sender.before_confirm = before_confirm
        self.sender.after_send = after_send
        self._remembered: set[tuple[str, str]] = set()

    def stop(self) -> None:
        """Ask a running pass to stop: the emails with the provider are
        confirmed, those not yet handed over are recorded as not attempted."""
        self.sender.stopping.set()

    def close(self) -> None:
        self.sender.close()

    def dispatch(self, now: datetime) -> DispatchReport:
        """Send everything due at ``now``, follow-up steps included."""
        sender = self.sender
        if not sender.begin(now, self.sequences()):
            return DispatchReport()
        claimed: list[int] = []
        try:
            drained = False
            while sender.open:
                ids, plan = self._claim_and_plan(now)
                if not ids:
                    if drained:
                        break
                    sender.drain()  # follow-ups of what was just sent may be due now
                    drained = True
                    continue
                drained = False
                claimed = ids
                emails = self._write(plan, ids, now)
                sender.send(emails)
                sender.wait_below(sender.policy.batch_size)
            sender.drain()
        except BaseException:
            left = sender.abandon()
            self._give_back(set(claimed) | set(left), now + RETRY_FAILED_BATCH)
            raise
        return sender.end(now)

    def reconcile(self, now: datetime) -> int:
        """Rows of enrollments whose claim expired: ``reserved`` ones become
        ``unknown``, ``queued`` ones due again; with an event webhook, an
        ``unknown`` one no event confirmed is retried once (see
        :mod:`nurture.sending.unconfirmed`). On PostgreSQL the funnel's
        per-process counters are folded as well. Returns how many became
        unknown."""
        with self.engine.begin() as conn:
            unknown, again = recovery.reconcile(conn, now)
        try:
            funnels.fold_all(self.engine)
        except SQLAlchemyError:  # the figures read are right without it; the next one retries
            log.exception(
                "could not fold the funnel's counters", extra={"action": "funnel.fold_failed"}
            )
        window = self.sender.policy.unknown_retry_after
        if window is not None:
            with self.engine.begin() as conn:
                retry_unconfirmed(conn, now, window)
        if unknown:
            log.warning(
                "reconcile: %d send(s) interrupted mid-flight marked unknown",
                unknown,
                extra={"action": "send.unknown"},
            )
        if again:
            log.warning(
                "reconcile: %d queued send(s) of a stopped worker are due again",
                again,
                extra={"action": "reconcile.requeued"},
            )
        return unknown

    # -- claim and plan ------------------------------------------------------

    def _claim_and_plan(self, now: datetime) -> tuple[list[int], BatchPlan]:
        sequences = self.sequences()
        new_versions = {
            (sid, loaded.version): loaded.sequence.model_dump(mode="json")
            for sid, loaded in sequences.items()
            if (sid, loaded.version) not in self._remembered
        }
        with self.engine.begin() as conn:
            if new_versions:
                queries.remember_versions(conn, new_versions, now)
                self._remembered.update(new_versions)
            paused = queries.paused_sequences(conn)
            spent = self.sender.guard.spent
            ids = queries.claim_due_enrollments(
                conn,
                now=now,
                lease_until=self.sender.lease_until(),
                lease_now=self.sender.wall_clock(),
                worker_id=self.worker_id,
                # A disabled sequence (enabled: false) is held like a paused
                # one: its enrollments wait, nothing of it is sent.
                sequence_ids=[
                    sid
                    for sid, loaded in sequences.items()
                    if loaded.sequence.enabled and sid not in paused and sid not in spent
                ],
                limit=self.sender.policy.batch_size,
            )
        if not ids:
            return ids, BatchPlan()
        self.sender.report.batches += 1
        try:
            with self.engine.connect() as conn:
                batch = batches.load_batch(conn, ids, now)
            plan = plan_batch(batch, sequences, now, compose=self.compose, new_key=time_ordered_key)
        except BaseException:
            self._give_back(set(ids), now + RETRY_FAILED_BATCH)
            raise
        return ids, plan

    # -- write, with poison rows isolated ------------------------------------

    def _write(self, plan: BatchPlan, ids: list[int], now: datetime) -> list[PlannedEmail]:
        """Write the plan; on a database error, write halves of it, down to one
        enrollment, whose email then fails with the reason (or, if even that
        cannot be written, whose claim is given back for later)."""
        report = self.sender.report
        report.skipped += plan.skipped
        report.failed += plan.failed
        report.exited += plan.exited
        report.completed += plan.completed
        report.retried += plan.held
        report.not_attempted += plan.held
        report.log.extend(plan.notes)
        return self._write_part(plan, sorted(plan.enrollment_ids), now)

    def _write_part(self, plan: BatchPlan, ids: list[int], now: datetime) -> list[PlannedEmail]:
        part = plan.only(set(ids)) if len(ids) < len(plan.enrollment_ids) else plan
        try:
            with self.engine.begin() as conn:
                mine, _lost = batches.write_plan(
                    conn, part, self.worker_id, self.sender.lease_until(), now
                )
                self._pause(conn, mine.pauses, now)
                return self._recheck(conn, mine.emails, now)
        except SQLAlchemyError as exc:
            if database_unavailable(exc):
                # Not this batch's data: the pass fails, the claims run out,
                # and a later pass writes the same plan again.
                raise
            if len(ids) > 1:
                half = len(ids) // 2
                return self._write_part(plan, ids[:half], now) + self._write_part(
                    plan, ids[half:], now
                )
            self._write_poison(part, exc, now)
            return []

    def _write_poison(self, plan: BatchPlan, exc: SQLAlchemyError, now: datetime) -> None:
        # (Reached only for errors about the data: see database_unavailable.)
        """One enrollment's plan could not be written: its email fails, naming
        the value that could not be stored, and the enrollment moves on."""
        log.error(
            "could not record the plan of enrollment %s: %s",
            plan.enrollment_ids,
            type(getattr(exc, "orig", exc)).__name__,
        )
        failed = BatchPlan(enrollments=list(plan.enrollments))
        new_rows = {row.key for row in plan.inserts}
        for email in plan.emails:
            reason = f"could not record this email: {_poison_reason(email)}"
            if email.key in new_rows:
                failed.inserts.append(
                    LedgerInsert(
                        email.key, email.enrollment_id, email.recipient.id, email.sequence_id,
                        email.loaded.version, email.step.id, SendStatus.FAILED, email.due_at,
                        reason, now,
                    )
                )  # fmt: skip
            else:  # a retry row
                failed.changes.append(
                    LedgerChange(email.key, email.enrollment_id, SendStatus.FAILED, reason, now)
                )
            failed.enrollments.append(after_send(email, SendStatus.FAILED, now)[0])
            self.sender.report.failed += 1
        try:
            with self.engine.begin() as conn:
                batches.write_plan(conn, failed, self.worker_id, self.sender.lease_until(), now)
        except SQLAlchemyError:
            log.exception("could not record the failure either; trying again later")
            self._give_back(plan.enrollment_ids, now + RETRY_FAILED_BATCH)

    def _pause(self, conn: Connection, pauses: list[SequencePause], now: datetime) -> None:
        """A ``when`` failed: pause its sequence, in the transaction that holds
        the step, as a spent error budget would; emails of that sequence still
        queued in this pass are then held back (not attempted)."""
        for pause in pauses:
            if queries.pause_sequence(conn, pause.sequence_id, pause.reason, now):
                log.error(
                    "sequence %s paused at step %s: %s",
                    pause.sequence_id,
                    pause.step_id,
                    pause.reason,
                )
            self.sender.guard.paused.add(pause.sequence_id)

    def _recheck(
        self, conn: Connection, emails: list[PlannedEmail], now: datetime
    ) -> list[PlannedEmail]:
        """Suppression, unsubscription and paused sequences, read again in the
        transaction that queues the emails: someone may have clicked
        "unsubscribe" (or another worker paused a sequence) since the claim."""
        if not emails:
            return emails
        statuses = queries.subscriber_statuses(conn, (e.recipient.id for e in emails))
        suppressed = queries.suppressed_among(conn, (e.recipient.email for e in emails))
        paused = queries.paused_sequences(conn)
        keep: list[PlannedEmail] = []
        skipped: list[reservations.Settle] = []
        exits: list[EnrollmentChange] = []
        for email in emails:
            if email.sequence_id in paused:
                self.sender.guard.paused.add(email.sequence_id)
                keep.append(email)  # held by the sender: not attempted
                continue
            status = statuses.get(email.recipient.id, "missing")
            why = blocked_reason(status, email.recipient.email, suppressed)
            if why is None:
                keep.append(email)
                continue
            reason = f"not sent: {why} (checked just before sending)"
            skipped.append(
                reservations.Settle(
                    email.key,
                    SendStatus.QUEUED,
                    SendStatus.SKIPPED,
                    reason,
                    email.attempts,
                    None,
                    now,
                    None,
                    None,
                )
            )
            exits.append(exit_after(email, why))
            report = self.sender.report
            report.skipped += 1
            report.exited += 1
            report.log.append(
                (email.recipient.email, email.sequence_id, email.step.id, f"skip: {reason}")
            )
        reservations.settle(conn, skipped)
        batches.update_enrollments(conn, self.worker_id, exits, now)
        return keep

    def _give_back(self, ids: set[int], not_before: datetime) -> None:
        """Release claims after a failure, best effort (else the leases expire)."""
        if not ids:
            return
        try:
            with self.engine.begin() as conn:
                batches.release_claims(conn, self.worker_id, ids, due_at=not_before)
        except Exception:
            log.exception("could not release %d claimed enrollment(s)", len(ids))


def _poison_reason(email: PlannedEmail) -> str:
    """Which value could not be stored, without quoting it (personal data)."""
    subject = email.composed.subject
    if "\x00" in subject:
        return "the subject contains a NUL character"
    return "the database refused a value of this email (see the worker log)"


def database_unavailable(exc: SQLAlchemyError) -> bool:
    """The database went away or refused to work (a restart, a cut connection,
    a lock timeout): nothing about the rows being written, so no email may
    fail for it. PostgreSQL's data errors (SQLSTATE classes 22 and 23) arrive
    as ``DataError``/``IntegrityError``; connection and operator-intervention
    errors (08, 57) as ``OperationalError``."""
    return isinstance(exc, OperationalError | InterfaceError) or bool(
        getattr(exc, "connection_invalidated", False)
    )
