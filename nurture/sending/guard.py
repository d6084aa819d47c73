"""What stops an email between its reservation and the provider call.

A dispatch pass hands queued emails to the sender, which reserves each one in
the moment before its provider call. Some answers must reach every email still queued at once,
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

An email held back gets a :class:`~nurture.sending.outcomes.NotAttempted` outcome:
the ledger records ``retry`` without counting an attempt.

:class:`PassGuard` is shared by the send threads of one pass; it is pure
bookkeeping under a lock (no clock, no database), so it is tested on its own.
It is also where the error budget is counted, once, in the order the
provider answers.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from nurture.core.vocabulary import SendStatus
from nurture.errors import AuthenticationError, PermanentSendError
from nurture.sending.outcomes import NotAttempted, SendOutcome, Verdict
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
    """The answers of one pass so far, as every send thread must see them.

    It is also the one place failures in a row are counted for the error
    budget: the dispatcher saves what :meth:`unsaved_budget` hands it.
    """

    error_budget: int
    failures: dict[str, int] = field(default_factory=dict)
    """Failed sends in a row per sequence (start from the stored counters)."""
    spent: dict[str, int] = field(default_factory=dict)
    """Sequences whose budget ran out in this pass, with the count it ran out at."""
    last_error: dict[str, str] = field(default_factory=dict)
    paused: set[str] = field(default_factory=set)
    """Sequences found paused (by an admin or another worker) during the pass."""
    refusal: AuthenticationError | None = None
    trouble: int = 0
    """Transient or ambiguous failures in a row, whatever the sequence."""
    delivered: bool = False
    _saved: dict[str, int] = field(default_factory=dict)
    _saved_spent: set[str] = field(default_factory=set)
    _halted: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start_from(self, stored: dict[str, int]) -> None:
        """The failures in a row the database holds when the pass begins."""
        self.failures.update(stored)
        self._saved.update(stored)

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
        if sequence_id in self.spent or sequence_id in self.paused:
            return PAUSED
        if self.outage:
            return PROVIDER_DOWN
        if stopping:
            return STOPPING
        return None

    def record(self, outcome: SendOutcome, verdict: Verdict, *, sequence_id: str) -> None:
        """Count one answer from the provider and the ledger verdict it gets."""
        if isinstance(outcome, NotAttempted):
            return
        if isinstance(outcome, AuthenticationError):
            with self._lock:
                self.refusal = self.refusal or outcome
            self._halted.set()
            return
        with self._lock:
            if isinstance(outcome, SendResult | PermanentSendError):
                self.trouble = 0  # the provider is up and answering
                self.delivered = self.delivered or isinstance(outcome, SendResult)
            else:  # transient, ambiguous, or a transport's unexpected error
                self.trouble += 1
            if verdict.counts_as_failure:
                count = self.failures.get(sequence_id, 0) + 1
                self.failures[sequence_id] = count
                self.last_error[sequence_id] = verdict.reason or ""
                if count >= self.error_budget:
                    self.spent.setdefault(sequence_id, count)
            elif verdict.status == SendStatus.SENT:
                self.failures[sequence_id] = 0

    def unsaved_budget(self) -> list[tuple[str, int, int | None]]:
        """(sequence, failures in a row, count the budget ran out at or None)
        for every sequence whose counter or pause is not saved yet; from now
        on they count as saved."""
        return self._unsaved(mark=True)

    def budget_saved(self) -> bool:
        """Whether :meth:`unsaved_budget` has nothing to give (nothing is marked)."""
        return not self._unsaved(mark=False)

    def _unsaved(self, *, mark: bool) -> list[tuple[str, int, int | None]]:
        changes = []
        with self._lock:
            for seq_id, count in self.failures.items():
                newly_spent = seq_id in self.spent and seq_id not in self._saved_spent
                if count != self._saved.get(seq_id, 0) or newly_spent:
                    changes.append((seq_id, count, self.spent[seq_id] if newly_spent else None))
                    if mark:
                        self._saved[seq_id] = count
                        if newly_spent:
                            self._saved_spent.add(seq_id)
        return changes


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
