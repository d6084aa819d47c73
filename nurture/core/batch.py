"""The planner's inputs and outputs: plain data, no behaviour beyond slicing.

The store builds a :class:`BatchInput` (claimed enrollments, their
recipients, ledgers, events and the suppressions that concern them);
:func:`nurture.core.planner.plan_batch` returns a :class:`BatchPlan`: the
ledger rows to insert or change, where each enrollment goes, the
:class:`PlannedEmail` items the dispatcher sends, and the sequences to pause.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from nurture.core.decisions import EnrollmentState, Event, LedgerEntry
from nurture.core.loader import LoadedSequence
from nurture.core.model import Step
from nurture.core.rendering import ComposedEmail
from nurture.core.subscriber import Subscriber
from nurture.core.vocabulary import EnrollmentStatus, SendStatus


@dataclass(frozen=True)
class ClaimedEnrollment:
    id: int
    subscriber_id: int
    sequence_id: str
    position: str | None
    enrolled_at: datetime
    trigger_properties: Mapping[str, Any] | None = None
    """The properties of the app event that started it (``trigger.properties``)."""


@dataclass(frozen=True)
class Recipient:
    """A subscriber as the planner needs it: the row's id, address and status,
    and the view templates and conditions read."""

    id: int
    email: str
    status: str
    view: Subscriber


@dataclass(frozen=True)
class BatchInput:
    enrollments: Sequence[ClaimedEnrollment]
    recipients: Mapping[int, Recipient]
    ledgers: Mapping[int, Sequence[LedgerEntry]]
    events: Mapping[int, Sequence[Event]]
    suppressed: Mapping[str, str]


@dataclass(frozen=True)
class LedgerInsert:
    """A new ``send`` row; ``settled_at`` is set for a step that is settled."""

    key: str
    enrollment_id: int
    subscriber_id: int
    sequence_id: str
    sequence_version: str
    step_id: str
    status: SendStatus
    due_at: datetime
    reason: str | None = None
    settled_at: datetime | None = None
    subject: str | None = None


@dataclass(frozen=True)
class LedgerChange:
    """A pending row (``retry``, or ``queued`` by a worker that lost it) taken
    over: written only while it is still pending."""

    key: str
    enrollment_id: int
    status: SendStatus
    reason: str | None = None
    settled_at: datetime | None = None
    subject: str | None = None


@dataclass(frozen=True)
class EnrollmentChange:
    """Where an enrollment goes; writing it releases the claim."""

    id: int
    status: EnrollmentStatus
    status_reason: str | None
    next_due_at: datetime | None
    position: str | None
    sequence_version: str | None = None  # None: leave it


@dataclass(frozen=True)
class PlannedEmail:
    """An email to send: its ledger row is ``queued`` once the plan is written."""

    enrollment_id: int
    recipient: Recipient
    loaded: LoadedSequence
    step: Step
    due_at: datetime
    key: str
    attempts: int  # spent before this one
    position: str | None  # the enrollment's position before this step
    state: EnrollmentState
    events: tuple[Event, ...]
    composed: ComposedEmail

    @property
    def sequence_id(self) -> str:
        return self.loaded.sequence.id


@dataclass(frozen=True)
class SequencePause:
    """A sequence to pause because one of its conditions failed for this enrollment."""

    enrollment_id: int
    sequence_id: str
    step_id: str
    reason: str


Note = tuple[str, str, str, str]
"""(email, sequence, step or '-', what happened), for the pass's report."""


@dataclass
class BatchPlan:
    inserts: list[LedgerInsert] = field(default_factory=list)
    changes: list[LedgerChange] = field(default_factory=list)
    enrollments: list[EnrollmentChange] = field(default_factory=list)
    emails: list[PlannedEmail] = field(default_factory=list)
    skipped: int = 0
    failed: int = 0
    exited: int = 0
    completed: int = 0
    notes: list[Note] = field(default_factory=list)
    pauses: list[SequencePause] = field(default_factory=list)
    held: int = 0

    def only(self, enrollment_ids: set[int]) -> BatchPlan:
        """The part of the plan about these enrollments (the rest was lost)."""
        return BatchPlan(
            [w for w in self.inserts if w.enrollment_id in enrollment_ids],
            [w for w in self.changes if w.enrollment_id in enrollment_ids],
            [w for w in self.enrollments if w.id in enrollment_ids],
            [w for w in self.emails if w.enrollment_id in enrollment_ids],
            self.skipped, self.failed, self.exited, self.completed, self.notes,
            [w for w in self.pauses if w.enrollment_id in enrollment_ids], self.held,
        )  # fmt: skip

    @property
    def enrollment_ids(self) -> set[int]:
        ids = {w.enrollment_id for w in self.inserts}
        ids.update(w.enrollment_id for w in self.changes)
        ids.update(w.id for w in self.enrollments)
        return ids
