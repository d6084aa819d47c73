"""What stops an email between its reservation and the provider call.

A dispatch pass hands reserved emails to a pool of send threads, at most two
batches at a time. Some answers must reach every email still queued at once,
not a batch later:

* a **401/403**: the API key is wrong; nothing more is attempted;
* a sequence that spends its **error budget** (``error_budget`` failed sends
  in a row): its queued emails wait for ``nurture resume``;
* a **provider outage**: after :data:`OUTAGE_AFTER` transient or ambiguous
  failures in a row, whatever the sequence, nothing more is attempted in this
  pass, and :class:`OutageBreaker` keeps new sends back for a while (30 s,
  doubling up to 10 minutes while the provider stays down). The emails held
  back do not spend their own attempts, and a hanging provider leaves a
  handful of ``unknown`` rows instead of a whole backlog;
* the worker **stopping** (SIGTERM).

An email held back gets a :class:`~nurture.outcomes.NotAttempted` outcome:
the ledger records ``retry`` without counting an attempt.

:class:`PassGuard` is shared by the send threads of one pass; it is pure
bookkeeping under a lock (no clock, no database), so it is tested on its own.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from nurture.errors import AuthenticationError, PermanentSendError
from nurture.outcomes import NotAttempted, Outcome, RetrySettings, classify
from nurture.transports.base import SendResult

OUTAGE_AFTER = 10
"""Transient or ambiguous failures in a row after which the provider is down."""
OUTAGE_PAUSE = timedelta(seconds=30)
OUTAGE_PAUSE_MAX = timedelta(minutes=10)

HALTED = NotAttempted("not attempted: dispatching halted")
PAUSED = NotAttempted("not attempted: the sequence was paused")
PROVIDER_DOWN = NotAttempted(f"not attempted: the provider failed {OUTAGE_AFTER} times in a row")
STOPPING = NotAttempted("not attempted: the worker was stopping")


@dataclass
class PassGuard:
    """The answers of one pass so far, as every send thread must see them."""

    now: datetime
    policy: RetrySettings
    error_budget: int
    failures: dict[str, int] = field(default_factory=dict)
    """Failed sends in a row per sequence (start from the stored counters)."""
    paused: set[str] = field(default_factory=set)
    """Sequences whose budget is spent (in this pass or when confirming)."""
    refusal: AuthenticationError | None = None
    trouble: int = 0
    """Transient or ambiguous failures in a row, whatever the sequence."""
    delivered: bool = False
    _halted: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def halted(self) -> bool:
        return self._halted.is_set()

    @property
    def outage(self) -> bool:
        return self.trouble >= OUTAGE_AFTER

    @property
    def open(self) -> bool:
        """May another batch be claimed in this pass?"""
        return not (self.halted or self.outage)

    def hold(self, sequence_id: str, *, stopping: bool = False) -> NotAttempted | None:
        """Why this email must not be handed to the provider now, if it must not."""
        if self.halted:
            return HALTED
        if sequence_id in self.paused:
            return PAUSED
        if self.outage:
            return PROVIDER_DOWN
        if stopping:
            return STOPPING
        return None

    def record(self, outcome: Outcome, *, sequence_id: str, attempts: int) -> None:
        """Count one answer from the provider (``attempts`` includes this one)."""
        if isinstance(outcome, NotAttempted):
            return
        if isinstance(outcome, AuthenticationError):
            with self._lock:
                self.refusal = self.refusal or outcome
            self._halted.set()
            return
        verdict = classify(
            outcome, attempts=attempts, now=self.now, policy=self.policy, jitter=lambda: 0.0
        )
        with self._lock:
            if isinstance(outcome, SendResult | PermanentSendError):
                self.trouble = 0  # the provider is up and answering
                self.delivered = self.delivered or isinstance(outcome, SendResult)
            else:  # transient, ambiguous, or a transport's unexpected error
                self.trouble += 1
            if verdict.counts_as_failure:
                count = self.failures.get(sequence_id, 0) + 1
                self.failures[sequence_id] = count
                if count >= self.error_budget:
                    self.paused.add(sequence_id)
            elif verdict.status == "sent":
                self.failures[sequence_id] = 0


@dataclass
class OutageBreaker:
    """Keeps new sends back after a pass that found the provider down.

    Lives as long as the dispatcher (a worker process); a pass that delivers
    anything closes it again.
    """

    outages: int = 0
    """Passes in a row that found the provider down."""
    resume_at: datetime | None = None

    def holds(self, now: datetime) -> bool:
        return self.resume_at is not None and now < self.resume_at

    def after(self, guard: PassGuard, now: datetime) -> timedelta | None:
        """Update from a finished pass; returns the pause when it opened."""
        if guard.outage:
            self.outages += 1
            pause: timedelta = min(OUTAGE_PAUSE * 2 ** (self.outages - 1), OUTAGE_PAUSE_MAX)
            self.resume_at = now + pause
            return pause
        if guard.delivered:
            self.outages, self.resume_at = 0, None
        return None
