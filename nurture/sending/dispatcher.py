"""The dispatcher: claim due enrollments, ask the core, record, send, confirm.

One pass (:meth:`Dispatcher.dispatch`) runs batches until nothing is due at
``now``. Per batch:

1. **Claim** due enrollments (``claim_due_enrollments``: SKIP LOCKED on
   PostgreSQL, a conditional UPDATE on SQLite), with a lease.
2. **Decide** with the pure core (``decide_next_step``), the same function
   ``nurture simulate`` uses, and render the emails. Nothing is written yet.
3. **Reserve**: in one transaction, the batch's decisions are recorded (skips,
   exits, waits) with a ledger row per email, status ``reserved``, and
   suppressions, subscriber status and paused sequences are **re-checked**;
   it commits *before* the provider is called. The unique (enrollment, step)
   constraint makes a second send of the same step impossible.
4. **Send** through the transport (a thread pool for HTTP providers), under
   the send-rate limit.
5. **Confirm**: ``sent`` with the provider's message id; transient failures
   become ``retry`` with exponential backoff and jitter (a 429's reset time is
   honoured); ambiguous ones (timeout after the request went out) ``unknown``,
   never resent blindly; permanent ones ``failed``. 401/403 stops dispatching.

With a thread pool the batches overlap: while one batch's requests are in
flight, the next is claimed, decided, rendered, reserved and queued behind it
(at most two batches at a time), so a slow provider keeps the pool full
instead of idling while the CPU renders. If reserving a batch fails, its
claims are released and nothing of it was recorded.

A crash between 3 and 5 leaves ``reserved`` rows; the reconcile job turns
them into ``unknown`` once their lease expires. They are never sent again.
"""

from __future__ import annotations

import logging
import random
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine, Row

from nurture.core.decisions import (
    Complete,
    EnrollmentState,
    Event,
    Exit,
    Send,
    Skip,
    StepOutcome,
    StepRecord,
    Wait,
    decide_next_step,
)
from nurture.core.loader import LoadedSequence
from nurture.core.model import Step
from nurture.core.rendering import ComposedEmail
from nurture.core.subscriber import Subscriber
from nurture.core.vocabulary import EnrollmentStatus, SendStatus, SubscriberStatus
from nurture.errors import (
    NurtureError,
    RenderError,
)
from nurture.sending.guard import OUTAGE_AFTER, PAUSED, OutageBreaker, PassGuard
from nurture.sending.outcomes import NotAttempted, SendOutcome, Verdict, classify
from nurture.sending.ratelimit import RateLimiter
from nurture.store import queries
from nurture.transports.base import OutgoingEmail, SendResult, Transport

log = logging.getLogger("nurture.sending.dispatcher")

Compose = Callable[[LoadedSequence, Step, Subscriber, str, datetime], ComposedEmail]
"""Builds the email: (sequence, step, subscriber, send key, now) -> ComposedEmail."""

# A decision loop per enrollment ends at a send, a wait or an exit; skips go on.
_MAX_DECISIONS_PER_PASS = 100


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
            "sent",
            "skipped",
            "failed",
            "unknown",
            "retried",
            "exited",
            "completed",
            "batches",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.log.extend(other.log)


class DispatchHalted(NurtureError):
    """Dispatching must stop (the provider refused our credentials)."""


@dataclass
class _Writes:
    """What one batch's decisions write, in one transaction."""

    inserts: list[dict[str, Any]] = field(default_factory=list)
    ledger_updates: list[dict[str, Any]] = field(default_factory=list)
    enrollment_updates: list[dict[str, Any]] = field(default_factory=list)
    planned: list[_Planned] = field(default_factory=list)


@dataclass
class _Planned:
    """An email decided in this batch, waiting to be sent."""

    enrollment: Row[Any]
    subscriber: Row[Any]
    view: Subscriber
    loaded: LoadedSequence
    step: Step
    due_at: datetime
    key: str
    composed: ComposedEmail
    existing_key: str | None  # a `retry` row being attempted again
    attempts: int
    state: EnrollmentState
    events: list[Event]
    outcome: SendOutcome | None = None
    verdict: Verdict | None = None  # set by the send thread, from ``outcome``


@dataclass
class _Batch:
    """One claimed batch on its way through prepare -> launch -> land."""

    claimed: list[int]
    writes: _Writes
    report: DispatchReport
    futures: list[Future[None]] = field(default_factory=list)


class Dispatcher:
    """Drives the pure core over the store. Owns no clock: ``now`` is an argument."""

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
    ) -> None:
        self.engine = engine
        self.sequences = sequences
        self.compose = compose
        self.transport = transport
        self.policy = policy or DispatchPolicy()
        self.worker_id = worker_id or f"dispatcher-{uuid.uuid4().hex[:12]}"
        self.rate_limiter = rate_limiter or RateLimiter(self.policy.rate_limit)
        self.jitter = jitter
        # A test seam: runs after the provider calls, before the confirm commit.
        self.before_confirm = before_confirm
        # A test seam: runs in the send thread once the provider's answer to
        # this email is counted, so tests can order threads without sleeping.
        self.after_send = after_send
        self._stop = threading.Event()
        self._pool: ThreadPoolExecutor | None = None
        self._remembered: set[tuple[str, str]] = set()
        self._breaker = OutageBreaker()

    # -- public -----------------------------------------------------------

    def stop(self) -> None:
        """Ask a running pass to stop: the emails with the provider are
        confirmed, those not yet handed over are recorded as not attempted."""
        self._stop.set()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def dispatch(self, now: datetime) -> DispatchReport:
        """Send everything due at ``now``, in as many batches as it takes.

        With a send pool, the next batch is claimed, rendered, reserved and
        queued behind the one in flight before that one is confirmed, so the
        provider always has requests waiting (at most two batches at a time).
        """
        report = DispatchReport()
        if self._breaker.holds(now):
            assert self._breaker.resume_at is not None
            log.info("the provider looked down: no new sends before %s", self._breaker.resume_at)
            return report
        state = PassGuard(self.policy.error_budget)
        with self.engine.connect() as conn:
            state.start_from(queries.failure_counters(conn, self.sequences()))
        queue: list[_Batch] = []  # launched, not yet confirmed, oldest first
        try:
            while True:
                batch = None
                if state.open and not self._stop.is_set():
                    batch = self._prepare(now)
                if batch is not None:
                    self._launch(batch, now, state)
                    queue.append(batch)
                keep = 1 if batch is not None and self._pipelined else 0
                while len(queue) > keep:
                    landing = queue.pop(0)
                    self._land(landing, now, state)
                    report.merge(landing.report)
                if batch is None:
                    break
        finally:
            # Only after an error: confirm what was handed to the provider.
            for landing in queue:
                try:
                    self._land(landing, now, state)
                except Exception:
                    log.exception("could not confirm a batch of %d", len(landing.claimed))
        self._note_outage(state, now)
        if state.refusal is not None:
            raise DispatchHalted(
                f"dispatching stopped: {state.refusal} Fix the API key "
                "(NURTURE_SENDGRID_API_KEY) and restart; nothing was lost, "
                "the emails are queued."
            ) from state.refusal
        return report

    def _note_outage(self, state: PassGuard, now: datetime) -> None:
        pause = self._breaker.after(state, now)
        if pause is not None:
            log.warning(
                "the provider failed %d times in a row: the emails not yet attempted stay "
                "queued; no new sends for %ds",
                OUTAGE_AFTER,
                pause.total_seconds(),
            )

    def reconcile(self, now: datetime) -> int:
        """Turn reserved rows whose lease expired into ``unknown``."""
        with self.engine.begin() as conn:
            count = queries.expire_stale_reservations(conn, now)
        if count:
            log.warning("reconcile: %d send(s) interrupted mid-flight marked unknown", count)
        return count

    @property
    def _pipelined(self) -> bool:
        return self.policy.concurrency > 1

    # -- phase 1: claim, decide, render (writes nothing but the claim) ----

    def _prepare(self, now: datetime) -> _Batch | None:
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
            active_ids = [sid for sid in sequences if sid not in paused]
            claimed = queries.claim_due_enrollments(
                conn,
                now=now,
                lease_until=now + self.policy.lease,
                worker_id=self.worker_id,
                sequence_ids=active_ids,
                limit=self.policy.batch_size,
            )
        if not claimed:
            return None
        batch = _Batch(claimed=claimed, writes=_Writes(), report=DispatchReport(batches=1))
        with self.engine.connect() as conn:
            enrollments = queries.load_enrollments(conn, claimed)
            subscribers = queries.load_subscribers(conn, (e.subscriber_id for e in enrollments))
            ledgers = queries.load_ledger(conn, claimed)
            events = queries.load_decision_events(conn, subscribers, now)
            suppressed = queries.suppressed_among(conn, (s.email for s in subscribers.values()))
        for enrollment in enrollments:
            subscriber = subscribers[enrollment.subscriber_id]
            self._decide_one(
                enrollment,
                subscriber,
                sequences[enrollment.sequence_id],
                ledgers.get(enrollment.id, []),
                queries.events_of(events.get(subscriber.id, [])),
                suppressed,
                now,
                batch.writes,
                batch.report,
            )
        return batch

    def _release(self, batch: _Batch) -> None:
        """Give a batch's claims back, best effort: if this fails too, the
        leases expire and the enrollments are decided again."""
        try:
            with self.engine.begin() as conn:
                queries.release_claims(conn, self.worker_id, batch.claimed)
        except Exception:
            log.exception("could not release %d claimed enrollment(s)", len(batch.claimed))

    # -- phase 2: reserve and re-check, in one transaction; start sending --

    def _launch(self, batch: _Batch, now: datetime, state: PassGuard) -> None:
        writes = batch.writes
        try:
            with self.engine.begin() as conn:
                queries.insert_ledger_rows(conn, writes.inserts)
                for group in _same_columns(writes.ledger_updates):
                    queries.update_ledger_rows(conn, group)
                for group in _same_columns(writes.enrollment_updates):
                    queries.update_enrollments(conn, group)
                if writes.planned:
                    writes.planned = self._recheck(conn, writes.planned, now, batch.report)
        except BaseException:
            self._release(batch)  # nothing of it was recorded: give the claims back
            raise
        if self._pipelined and writes.planned:
            pool = self._send_pool()
            batch.futures = [
                pool.submit(self._send_safely, item, state, now)
                for item in writes.planned
                if item.outcome is None
            ]

    # -- phase 3: wait for the sends, confirm -----------------------------

    def _land(self, batch: _Batch, now: datetime, state: PassGuard) -> None:
        planned = batch.writes.planned
        if not planned:
            return
        if batch.futures:
            wait(batch.futures)
        else:
            for item in planned:
                if item.outcome is None:
                    self._send_safely(item, state, now)
        if self.before_confirm is not None:
            self.before_confirm()
        self._confirm(planned, now, batch.report, state)

    # -- phase 1 in detail: one enrollment's decisions ---------------------

    def _decide_one(
        self,
        enrollment: Row[Any],
        subscriber: Row[Any],
        loaded: LoadedSequence,
        ledger: list[Row[Any]],
        seen_events: list[Event],
        suppressed: dict[str, str],
        now: datetime,
        writes: _Writes,
        report: DispatchReport,
    ) -> None:
        """Decide for one enrollment until it must wait, send, or leave.

        Skips (and render failures) are recorded and the loop goes on: the next
        step may be due at once. A send stays claimed until it is confirmed.
        """
        seq_id = loaded.sequence.id
        state = EnrollmentState(enrollment.enrolled_at, queries.history_of(ledger))
        retries = {row.step_id: row for row in ledger if row.status == SendStatus.RETRY}
        view = Subscriber.of(subscriber)
        update: dict[str, Any] = {
            "_id": enrollment.id,
            "status": EnrollmentStatus.ACTIVE,
            "status_reason": None,
            "next_due_at": None,
            "position": enrollment.position,
            "sequence_version": loaded.version,
            "claimed_by": None,
            "claimed_until": None,
            "updated_at": now,
        }
        blocked = self._blocked_reason(subscriber, suppressed)
        if blocked is not None:
            update.update(status=EnrollmentStatus.EXITED, status_reason=blocked)
            report.exited += 1
            report.log.append((subscriber.email, seq_id, "-", f"exit: {blocked}"))
            writes.enrollment_updates.append(update)
            return
        outcome: StepOutcome
        for _ in range(_MAX_DECISIONS_PER_PASS):
            action = decide_next_step(loaded.sequence, state, view, seen_events, now)
            if isinstance(action, Wait | Send):
                retry = retries.get(action.step.id)
                # A step waiting for its retry is not due before the retry time.
                not_before = retry.next_attempt_at if retry is not None else None
                if isinstance(action, Wait):
                    update["next_due_at"] = max(action.until, not_before or action.until)
                    break
                if not_before is not None and not_before > now:
                    update["next_due_at"] = not_before
                    break
                item = self._plan(
                    enrollment, subscriber, view, loaded, action, retry, now, state, seen_events
                )
                if isinstance(item, _Planned):
                    writes.planned.append(item)
                    if retry is not None:
                        writes.ledger_updates.append(
                            self._retry_to(
                                retry, status=SendStatus.RESERVED, reason=None, now=now, lease=True
                            )
                        )
                    else:
                        writes.inserts.append(
                            self._ledger_row(
                                enrollment, loaded, action.step.id, SendStatus.RESERVED,
                                action.due_at, now,
                                key=item.key, subject=item.composed.subject, lease=True,
                            )
                        )  # fmt: skip
                    return  # stays claimed until the send is confirmed
                # Rendering failed: a permanent failure of this step; go on.
                if retry is not None:
                    writes.ledger_updates.append(
                        self._retry_to(retry, status=SendStatus.FAILED, reason=item, now=now)
                    )
                else:
                    writes.inserts.append(
                        self._ledger_row(
                            enrollment, loaded, action.step.id, SendStatus.FAILED,
                            action.due_at, now,
                            reason=item,
                        )
                    )  # fmt: skip
                outcome, what = SendStatus.FAILED, f"failed: {item}"
                report.failed += 1
            elif isinstance(action, Skip):
                writes.inserts.append(
                    self._ledger_row(
                        enrollment, loaded, action.step.id, SendStatus.SKIPPED, action.due_at, now,
                        reason=action.reason,
                    )
                )  # fmt: skip
                outcome, what = SendStatus.SKIPPED, f"skip: {action.reason}"
                report.skipped += 1
            elif isinstance(action, Exit):
                update.update(status=action.status, status_reason=action.reason)
                report.exited += 1
                report.log.append((subscriber.email, seq_id, "-", f"exit: {action.reason}"))
                break
            else:  # Complete
                update.update(status=EnrollmentStatus.COMPLETED, status_reason="every step decided")
                report.completed += 1
                break
            state = state.with_record(StepRecord(action.step.id, outcome, action.due_at))
            update["position"] = action.step.id
            report.log.append((subscriber.email, seq_id, action.step.id, what))
        writes.enrollment_updates.append(update)

    def _blocked_reason(self, subscriber: Row[Any], suppressed: dict[str, str]) -> str | None:
        if subscriber.status != SubscriberStatus.ACTIVE:
            return f"subscriber is {subscriber.status}"
        if subscriber.email in suppressed:
            return f"address suppressed: {suppressed[subscriber.email]}"
        return None

    def _ledger_row(
        self,
        enrollment: Row[Any],
        loaded: LoadedSequence,
        step_id: str,
        status: str,
        due_at: datetime,
        now: datetime,
        *,
        reason: str | None = None,
        key: str | None = None,
        subject: str | None = None,
        lease: bool = False,
    ) -> dict[str, Any]:
        return {
            "key": key or uuid.uuid4().hex,
            "enrollment_id": enrollment.id,
            "subscriber_id": enrollment.subscriber_id,
            "sequence_id": enrollment.sequence_id,
            "sequence_version": loaded.version,
            "step_id": step_id,
            "status": status,
            "reason": reason,
            "due_at": due_at,
            "decided_at": now,
            "sent_at": None,
            "lease_until": now + self.policy.lease if lease else None,
            "next_attempt_at": None,
            "attempts": 1 if status == SendStatus.RESERVED else 0,
            "transport": self.transport.name if status == SendStatus.RESERVED else None,
            "provider_message_id": None,
            "subject": subject,
        }

    def _retry_to(
        self,
        row: Row[Any],
        *,
        status: str,
        reason: str | None,
        now: datetime,
        lease: bool = False,
    ) -> dict[str, Any]:
        return {
            "_key": row.key,
            "status": status,
            "reason": reason,
            "decided_at": now,
            "lease_until": now + self.policy.lease if lease else None,
            "next_attempt_at": None,
            "attempts": row.attempts + (1 if status == SendStatus.RESERVED else 0),
        }

    def _plan(
        self,
        enrollment: Row[Any],
        subscriber: Row[Any],
        view: Subscriber,
        loaded: LoadedSequence,
        action: Send,
        retry: Row[Any] | None,
        now: datetime,
        state: EnrollmentState,
        events: list[Event],
    ) -> _Planned | str:
        key = retry.key if retry is not None else uuid.uuid4().hex
        try:
            message = self.compose(loaded, action.step, view, key, now)
        except (RenderError, NurtureError) as exc:
            return f"could not render: {exc}"
        return _Planned(
            enrollment=enrollment,
            subscriber=subscriber,
            view=view,
            loaded=loaded,
            step=action.step,
            due_at=action.due_at,
            key=key,
            composed=message,
            existing_key=retry.key if retry is not None else None,
            attempts=(retry.attempts if retry is not None else 0) + 1,
            state=state,
            events=events,
        )

    # -- phase 2 in detail: re-check and send ------------------------------

    def _recheck(
        self, conn: Any, planned: list[_Planned], now: datetime, report: DispatchReport
    ) -> list[_Planned]:
        """Suppression, unsubscription and paused sequences, read again just
        before the provider call: someone may have clicked "unsubscribe" (or
        another worker may have paused a sequence) since this batch was
        claimed. Returns the emails still to confirm: a blocked one is recorded
        as skipped here; one of a paused sequence is not attempted."""
        statuses = queries.subscriber_statuses(conn, (p.subscriber.id for p in planned))
        suppressed = queries.suppressed_among(conn, (p.subscriber.email for p in planned))
        paused = queries.paused_sequences(conn)
        keep: list[_Planned] = []
        cancelled: list[dict[str, Any]] = []
        exits: list[dict[str, Any]] = []
        for item in planned:
            if item.loaded.sequence.id in paused:
                item.outcome = PAUSED
                keep.append(item)
                continue
            status = statuses.get(item.subscriber.id, "missing")
            why = None
            if status != SubscriberStatus.ACTIVE:
                why = f"subscriber is {status}"
            elif item.subscriber.email in suppressed:
                why = f"address suppressed: {suppressed[item.subscriber.email]}"
            if why is None:
                keep.append(item)
                continue
            reason = f"not sent: {why} (checked just before sending)"
            cancelled.append(
                {
                    "_key": item.key,
                    "status": SendStatus.SKIPPED,
                    "reason": reason,
                    "lease_until": None,
                }
            )
            exits.append(self._enrollment_exit(item, why, now))
            report.skipped += 1
            report.exited += 1
            report.log.append(
                (item.subscriber.email, item.loaded.sequence.id, item.step.id, f"skip: {reason}")
            )
        queries.update_ledger_rows(conn, cancelled)
        queries.update_enrollments(conn, exits)
        return keep

    def _enrollment_exit(self, item: _Planned, why: str, now: datetime) -> dict[str, Any]:
        return {
            "_id": item.enrollment.id,
            "status": EnrollmentStatus.EXITED,
            "status_reason": why,
            "next_due_at": None,
            "position": item.step.id,
            "claimed_by": None,
            "claimed_until": None,
            "updated_at": now,
        }

    def _send_safely(self, item: _Planned, state: PassGuard, now: datetime) -> None:
        """A bug on our side of the send must not leave the row ``reserved``
        (it would become ``unknown`` and never go out): an email that never
        reached the transport is recorded as not attempted."""
        try:
            self._send_one(item, state, now)
        except Exception:
            log.exception("internal error before sending %s", item.key)
            if item.outcome is None:
                item.outcome = NotAttempted("not attempted: internal error (see the worker log)")

    def _send_one(self, item: _Planned, state: PassGuard, now: datetime) -> None:
        # SIGTERM: emails already with the provider finish; the queued ones are
        # handed back at once (retried within seconds) instead of keeping the
        # process alive for a rate-limited batch or two. Asked again after
        # waiting for the rate limiter, which may have slept.
        seq_id = item.loaded.sequence.id
        held = state.hold(seq_id, stopping=self._stop.is_set())
        if held is None:
            self.rate_limiter.acquire()
            held = state.hold(seq_id, stopping=self._stop.is_set())
        if held is not None:
            item.outcome = held
            return
        outgoing = OutgoingEmail(
            message=item.composed,
            send_id=item.key,
            sequence_id=seq_id,
            step_id=item.step.id,
            to_email=item.subscriber.email,
        )
        try:
            item.outcome = self.transport.send(outgoing)
        except Exception as exc:  # classified below; a bug here must not lose the row
            item.outcome = exc
        item.verdict = self._classify(item, item.outcome, now)
        state.record(item.outcome, item.verdict, sequence_id=seq_id)
        if self.after_send is not None:
            self.after_send(outgoing)

    def _classify(self, item: _Planned, outcome: SendOutcome, now: datetime) -> Verdict:
        return classify(
            outcome, attempts=item.attempts, now=now, policy=self.policy, jitter=self.jitter
        )

    def _send_pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                self.policy.concurrency, thread_name_prefix="nurture-send"
            )
        return self._pool

    # -- phase 3 in detail: confirm ---------------------------------------

    def _confirm(
        self,
        planned: list[_Planned],
        now: datetime,
        report: DispatchReport,
        state: PassGuard,
    ) -> None:
        ledger_updates: list[dict[str, Any]] = []
        enrollment_updates: list[dict[str, Any]] = []
        invalid: list[int] = []
        for item in planned:
            assert item.outcome is not None
            verdict = item.verdict or self._classify(item, item.outcome, now)
            seq_id = item.loaded.sequence.id
            row: dict[str, Any] = {
                "_key": item.key,
                "status": verdict.status,
                "reason": verdict.reason,
                "lease_until": None,
                "next_attempt_at": verdict.next_attempt_at,
                "attempts": verdict.attempts,
                "sent_at": None,
                "provider_message_id": None,
                "transport": self.transport.name,
            }
            if isinstance(item.outcome, SendResult):
                row.update(
                    sent_at=now,
                    provider_message_id=item.outcome.message_id,
                    transport=item.outcome.provider,
                )
            ledger_updates.append(row)
            if verdict.unexpected and isinstance(item.outcome, BaseException):
                log.error(
                    "unexpected error from transport %s", self.transport.name, exc_info=item.outcome
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
            report.log.append((item.subscriber.email, seq_id, item.step.id, what))
            if verdict.status == SendStatus.RETRY:
                assert verdict.next_attempt_at is not None
                enrollment_updates.append(self._enrollment_wait(item, verdict.next_attempt_at, now))
            elif verdict.invalid_address:
                invalid.append(item.subscriber.id)
                enrollment_updates.append(self._enrollment_exit(item, "invalid address", now))
            else:
                enrollment_updates.append(self._after_step(item, now, report))

        with self.engine.begin() as conn:
            queries.update_ledger_rows(conn, ledger_updates)
            for group in _same_columns(enrollment_updates):
                queries.update_enrollments(conn, group)
            if invalid:
                queries.mark_subscribers(
                    conn,
                    invalid,
                    SubscriberStatus.INVALID,
                    "the provider rejected the address",
                    now,
                )
            self._save_budget(conn, state, now)

    def _enrollment_wait(self, item: _Planned, until: datetime, now: datetime) -> dict[str, Any]:
        return {
            "_id": item.enrollment.id,
            "status": EnrollmentStatus.ACTIVE,
            "status_reason": None,
            "next_due_at": until,
            "position": item.enrollment.position,
            "claimed_by": None,
            "claimed_until": None,
            "updated_at": now,
        }

    def _after_step(self, item: _Planned, now: datetime, report: DispatchReport) -> dict[str, Any]:
        """Where the enrollment goes once this step is decided: the core is asked
        right away (it is pure and cheap) instead of claiming the row again."""
        update = self._enrollment_wait(item, now, now)
        update["position"] = item.step.id
        state = item.state.with_record(StepRecord(item.step.id, SendStatus.SENT, item.due_at, now))
        action = decide_next_step(item.loaded.sequence, state, item.view, item.events, now)
        if isinstance(action, Wait):
            update["next_due_at"] = action.until
        elif isinstance(action, Complete):
            update.update(
                status=EnrollmentStatus.COMPLETED,
                status_reason="every step decided",
                next_due_at=None,
            )
            report.completed += 1
        # Send, Skip or Exit due now: leave next_due_at = now for the next batch.
        return update

    def _save_budget(self, conn: Any, state: PassGuard, now: datetime) -> None:
        """Store the failures in a row the pass counted; pause a sequence whose
        budget ran out (even if a later send succeeded)."""
        for seq_id, count, spent_at in state.unsaved_budget():
            reason = None
            if spent_at is not None:
                reason = (
                    f"paused after {spent_at} failed send{'' if spent_at == 1 else 's'} "
                    f"in a row; last error: {state.last_error.get(seq_id)}. "
                    f"Fix the cause, then `nurture resume {seq_id}`."
                )
                log.error("sequence %s %s", seq_id, reason)
            queries.save_sequence_state(
                conn,
                seq_id,
                consecutive_failures=count,
                paused=True if spent_at is not None else None,
                reason=reason,
                now=now,
            )


def _same_columns(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Group update dicts by their column set (an executemany needs one shape)."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(sorted(row)), []).append(row)
    return list(groups.values())
