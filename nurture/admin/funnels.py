"""Funnels: per sequence and step, what was sent, delivered, opened and
clicked by people, what sold and for how much (per currency), with rates.

One set of figures serves the sequence pages, their JSON and ``nurture
stats``. They are read from the summary tables the database keeps current
(:mod:`nurture.store.funnels`, which says exactly what is counted); a funnel
costs a few rows however long the ledger is. Test sends never reach them: a
test has no ledger row.

Rates: delivered / sent, opened / delivered, clicked / delivered and
conversions (orders credited to the step) / sent; ``None`` when the
denominator is zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy.engine import Engine

from nurture.core.loader import LoadedSequence
from nurture.store import funnels as store
from nurture.store.queries import paused_sequences

__all__ = [
    "SequenceFunnel",
    "SequenceSummary",
    "StepFunnel",
    "all_funnels",
    "money",
    "rebuild_funnels",
    "sequence_funnel",
    "sequence_summaries",
]

_CENT = Decimal("0.01")


def money(amount: Decimal) -> Decimal:
    """``amount`` with two decimals unless it needs more (exact either way)."""
    return amount.quantize(_CENT) if amount == amount.quantize(_CENT) else amount


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


@dataclass(frozen=True)
class StepFunnel:
    step_id: str
    in_file: bool  # False: a step the current file no longer has
    sent: int = 0
    unknown: int = 0
    delivered: int = 0
    opened: int = 0
    clicked: int = 0
    conversions: int = 0
    revenue: dict[str, Decimal] = field(default_factory=dict)

    @property
    def delivered_rate(self) -> float | None:
        return _rate(self.delivered, self.sent)

    @property
    def open_rate(self) -> float | None:
        return _rate(self.opened, self.delivered)

    @property
    def click_rate(self) -> float | None:
        return _rate(self.clicked, self.delivered)

    @property
    def conversion_rate(self) -> float | None:
        return _rate(self.conversions, self.sent)

    def as_json(self) -> dict[str, Any]:
        return {
            "step": self.step_id,
            "in_file": self.in_file,
            "sent": self.sent,
            "unknown": self.unknown,
            "delivered": self.delivered,
            "opened": self.opened,
            "clicked": self.clicked,
            "conversions": self.conversions,
            "revenue": {cur: str(money(amount)) for cur, amount in self.revenue.items()},
            "rates": {
                "delivered": self.delivered_rate,
                "opened": self.open_rate,
                "clicked": self.click_rate,
                "converted": self.conversion_rate,
            },
        }


@dataclass(frozen=True)
class SequenceFunnel:
    sequence_id: str
    name: str | None  # None: no file for it now (figures from the ledger only)
    version: str | None
    steps: list[StepFunnel]

    @property
    def revenue(self) -> dict[str, Decimal]:
        total: dict[str, Decimal] = {}
        for step in self.steps:
            for currency, amount in step.revenue.items():
                total[currency] = total.get(currency, Decimal(0)) + amount
        return dict(sorted(total.items()))

    @property
    def sent(self) -> int:
        return sum(step.sent for step in self.steps)

    def as_json(self) -> dict[str, Any]:
        return {
            "sequence": self.sequence_id,
            "name": self.name,
            "version": self.version,
            "steps": [step.as_json() for step in self.steps],
            "revenue": {cur: str(money(amount)) for cur, amount in self.revenue.items()},
        }


@dataclass(frozen=True)
class SequenceSummary:
    sequence_id: str
    name: str | None
    version: str | None
    enabled: bool
    paused: bool
    paused_reason: str | None
    active_enrollments: int
    sent: int

    def as_json(self) -> dict[str, Any]:
        return {
            "sequence": self.sequence_id,
            "name": self.name,
            "version": self.version,
            "enabled": self.enabled,
            "paused": self.paused,
            "paused_reason": self.paused_reason,
            "active_enrollments": self.active_enrollments,
            "sent": self.sent,
        }


def _funnel(
    sequence_id: str,
    loaded: LoadedSequence | None,
    counts: list[store.StepCounts],
    revenue: list[store.RevenueCounts],
) -> SequenceFunnel:
    by_step = {c.step_id: c for c in counts if c.sequence_id == sequence_id}
    money_by_step: dict[str, dict[str, Decimal]] = {}
    orders: dict[str, int] = {}
    for r in revenue:
        if r.sequence_id == sequence_id:
            money_by_step.setdefault(r.step_id, {})[r.currency] = r.amount
            orders[r.step_id] = orders.get(r.step_id, 0) + r.orders
    in_file = [step.id for step in loaded.sequence.steps] if loaded is not None else []
    gone = sorted((set(by_step) | set(money_by_step)) - set(in_file))
    steps = []
    for step_id in in_file + gone:
        c = by_step.get(step_id, store.StepCounts(sequence_id, step_id))
        steps.append(
            StepFunnel(
                step_id,
                step_id in in_file,
                c.sent,
                c.unknown,
                c.delivered,
                c.opened,
                c.clicked,
                orders.get(step_id, 0),
                dict(sorted(money_by_step.get(step_id, {}).items())),
            )
        )
    return SequenceFunnel(
        sequence_id,
        loaded.sequence.name if loaded is not None else None,
        loaded.version if loaded is not None else None,
        steps,
    )


def sequence_funnel(
    engine: Engine, sequences: Mapping[str, LoadedSequence], sequence_id: str
) -> SequenceFunnel | None:
    """The funnel of one sequence (its file's steps in order, then steps only the
    ledger remembers); None when there is neither a file nor a figure for it."""
    with engine.connect() as conn:
        counts = store.step_counts(conn, sequence_id)
        revenue = store.revenue(conn, sequence_id)
    loaded = sequences.get(sequence_id)
    if loaded is None and not counts and not revenue:
        return None
    return _funnel(sequence_id, loaded, counts, revenue)


def all_funnels(engine: Engine, sequences: Mapping[str, LoadedSequence]) -> list[SequenceFunnel]:
    """Every sequence's funnel: those with a file, then those only the ledger knows."""
    with engine.connect() as conn:
        counts = store.step_counts(conn)
        revenue = store.revenue(conn)
    known = {c.sequence_id for c in counts} | {r.sequence_id for r in revenue}
    ids = sorted(sequences) + sorted(known - set(sequences))
    return [_funnel(seq, sequences.get(seq), counts, revenue) for seq in ids]


def sequence_summaries(
    engine: Engine, sequences: Mapping[str, LoadedSequence]
) -> list[SequenceSummary]:
    """Each sequence of the registry: its file's version, whether it is paused,
    its active enrollments and emails sent."""
    with engine.connect() as conn:
        paused = paused_sequences(conn)
        active = store.active_enrollments(conn)
        sent: dict[str, int] = {}
        for c in store.step_counts(conn):
            sent[c.sequence_id] = sent.get(c.sequence_id, 0) + c.sent
    return [
        SequenceSummary(
            seq,
            loaded.sequence.name,
            loaded.version,
            loaded.sequence.enabled,
            seq in paused,
            paused.get(seq) or None,
            active.get(seq, 0),
            sent.get(seq, 0),
        )
        for seq, loaded in sorted(sequences.items())
    ]


def rebuild_funnels(engine: Engine) -> None:
    """Recompute the funnel summary from the ledger, events and purchases."""
    with engine.begin() as conn:
        store.rebuild(conn)
