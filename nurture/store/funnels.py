"""The SQL of funnels (:mod:`nurture.admin.funnels`).

Three summary tables (migration 0008) hold every funnel figure, kept current
by database triggers in the transaction that changes a ledger row, an event
or a purchase, so reading a sequence's funnel is a lookup of a few rows
however long the ledger is. :func:`rebuild` recomputes them from the raw
tables (``nurture stats --rebuild``); :func:`raw_step_counts` and
:func:`raw_revenue` are those same figures read the slow way.

On PostgreSQL the triggers add to ``funnel_step_delta``, one row per server
process (migration 0010), so concurrent transactions never wait on, or
deadlock over, a shared counter; reads add those rows to ``funnel_step``,
and :func:`fold_all` (the worker's reconcile job) moves them into it.

What is counted, per (sequence, step):

* ``sent`` / ``unknown``: ledger rows in that status (``unknown`` may or may
  not have reached the provider; it is its own column, not part of ``sent``).
* ``delivered`` / ``opened`` / ``clicked``: sends with at least one such event
  that was not a machine's (link scanners, privacy proxies): distinct sends,
  so the provider's event and ours, or a second open, count once.
* revenue: purchases credited to the step (``purchase.sequence_id`` and
  ``step_id``, set by attribution), counted per order and summed per currency.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Table,
    and_,
    case,
    cast,
    delete,
    distinct,
    func,
    insert,
    inspect,
    select,
    text,
    union_all,
)
from sqlalchemy.engine import Connection, Engine

from nurture.core.vocabulary import EnrollmentStatus, EventKind, SendStatus
from nurture.store.tables import (
    EnrollmentRow,
    EventRow,
    FunnelMarkRow,
    FunnelRevenueRow,
    FunnelStepDeltaRow,
    FunnelStepRow,
    PurchaseRow,
    SendRow,
)

__all__ = [
    "COUNTED_EVENTS",
    "RevenueCounts",
    "StepCounts",
    "active_enrollments",
    "fold_all",
    "fold_deltas",
    "raw_revenue",
    "raw_step_counts",
    "rebuild",
    "revenue",
    "sequences_with_figures",
    "step_counts",
]

FUNNEL_STEP: Table = FunnelStepRow.__table__  # type: ignore[attr-defined]
FUNNEL_STEP_DELTA: Table = FunnelStepDeltaRow.__table__  # type: ignore[attr-defined]
FUNNEL_MARK: Table = FunnelMarkRow.__table__  # type: ignore[attr-defined]
FUNNEL_REVENUE: Table = FunnelRevenueRow.__table__  # type: ignore[attr-defined]
SEND: Table = SendRow.__table__  # type: ignore[attr-defined]
EVENT: Table = EventRow.__table__  # type: ignore[attr-defined]
PURCHASE: Table = PurchaseRow.__table__  # type: ignore[attr-defined]
ENROLLMENT: Table = EnrollmentRow.__table__  # type: ignore[attr-defined]

COUNTED_EVENTS = (EventKind.DELIVERED, EventKind.OPENED, EventKind.CLICKED)
_E4 = Decimal(10000)


@dataclass(frozen=True)
class StepCounts:
    sequence_id: str
    step_id: str
    sent: int = 0
    unknown: int = 0
    delivered: int = 0
    opened: int = 0
    clicked: int = 0

    @property
    def empty(self) -> bool:
        return not (self.sent or self.unknown or self.delivered or self.opened or self.clicked)


@dataclass(frozen=True)
class RevenueCounts:
    sequence_id: str
    step_id: str
    currency: str
    orders: int
    amount: Decimal


def _amount(e4: int) -> Decimal:
    return Decimal(int(e4)) / _E4


_COUNTERS = ("sent", "unknown", "delivered", "opened", "clicked")


def step_counts(conn: Connection, sequence_id: str | None = None) -> list[StepCounts]:
    """The summary's rows (of one sequence), with PostgreSQL's deltas not yet
    folded added in; rows of all zeros left out."""
    parts = []
    for table in (FUNNEL_STEP, FUNNEL_STEP_DELTA):
        part = select(table.c.sequence_id, table.c.step_id, *(table.c[c] for c in _COUNTERS))
        if sequence_id is not None:
            part = part.where(table.c.sequence_id == sequence_id)
        parts.append(part)
    both = union_all(*parts).subquery()
    query = select(
        both.c.sequence_id, both.c.step_id, *(func.sum(both.c[c]) for c in _COUNTERS)
    ).group_by(both.c.sequence_id, both.c.step_id)
    rows = [
        StepCounts(seq, step, *(int(n) for n in counts))
        for seq, step, *counts in conn.execute(query)
    ]
    return sorted((r for r in rows if not r.empty), key=lambda r: (r.sequence_id, r.step_id))


def revenue(conn: Connection, sequence_id: str | None = None) -> list[RevenueCounts]:
    """Orders and their sum per (sequence, step, currency), from the summary."""
    query = select(FUNNEL_REVENUE).where(FUNNEL_REVENUE.c.orders != 0)
    if sequence_id is not None:
        query = query.where(FUNNEL_REVENUE.c.sequence_id == sequence_id)
    rows = [
        RevenueCounts(
            row.sequence_id, row.step_id, row.currency, row.orders, _amount(row.amount_e4)
        )
        for row in conn.execute(query)
    ]
    return sorted(rows, key=lambda r: (r.sequence_id, r.step_id, r.currency))


def sequences_with_figures(conn: Connection) -> set[str]:
    """Every sequence the summary has a figure for (also ones whose file is gone)."""
    found = set(conn.execute(select(distinct(FUNNEL_STEP.c.sequence_id))).scalars())
    found.update(conn.execute(select(distinct(FUNNEL_STEP_DELTA.c.sequence_id))).scalars())
    found.update(conn.execute(select(distinct(FUNNEL_REVENUE.c.sequence_id))).scalars())
    return found


# --- the same figures from the raw tables ------------------------------------


def _counted_events() -> Any:
    return and_(
        EVENT.c.send_id.is_not(None),
        EVENT.c.machine.is_(False),
        EVENT.c.kind.in_([str(kind) for kind in COUNTED_EVENTS]),
    )


def raw_step_counts(conn: Connection) -> list[StepCounts]:
    """:func:`step_counts` for every sequence, computed from ``send`` and ``event``
    (GROUP BY over the whole ledger: for :func:`rebuild` and tests)."""
    figures: dict[tuple[str, str], dict[str, int]] = {}
    sent = func.sum(case((SEND.c.status == SendStatus.SENT, 1), else_=0))
    unknown = func.sum(case((SEND.c.status == SendStatus.UNKNOWN, 1), else_=0))
    ledger = (
        select(SEND.c.sequence_id, SEND.c.step_id, sent, unknown)
        .where(SEND.c.status.in_([SendStatus.SENT.value, SendStatus.UNKNOWN.value]))
        .group_by(SEND.c.sequence_id, SEND.c.step_id)
    )
    for seq, step, n_sent, n_unknown in conn.execute(ledger):
        figures.setdefault((seq, step), {}).update(sent=int(n_sent), unknown=int(n_unknown))
    events = (
        select(SEND.c.sequence_id, SEND.c.step_id, EVENT.c.kind, func.count(distinct(SEND.c.id)))
        .select_from(EVENT.join(SEND, SEND.c.id == EVENT.c.send_id))
        .where(_counted_events())
        .group_by(SEND.c.sequence_id, SEND.c.step_id, EVENT.c.kind)
    )
    for seq, step, kind, count in conn.execute(events):
        figures.setdefault((seq, step), {})[str(kind)] = int(count)
    rows = [StepCounts(seq, step, **values) for (seq, step), values in figures.items()]
    return sorted((r for r in rows if not r.empty), key=lambda r: (r.sequence_id, r.step_id))


def _e4(amount: Any) -> Any:
    return cast(func.round(amount * 10000), BigInteger)


def _raw_revenue_e4(conn: Connection) -> list[tuple[str, str, str, int, int]]:
    query = (
        select(
            PURCHASE.c.sequence_id,
            PURCHASE.c.step_id,
            PURCHASE.c.currency,
            func.count(),
            func.sum(_e4(PURCHASE.c.amount)),
        )
        .where(PURCHASE.c.sequence_id.is_not(None), PURCHASE.c.step_id.is_not(None))
        .group_by(PURCHASE.c.sequence_id, PURCHASE.c.step_id, PURCHASE.c.currency)
    )
    return [(seq, step, cur, int(n), int(e4)) for seq, step, cur, n, e4 in conn.execute(query)]


def raw_revenue(conn: Connection) -> list[RevenueCounts]:
    """:func:`revenue` for every sequence, computed from ``purchase``."""
    rows = [
        RevenueCounts(seq, step, cur, n, _amount(e4))
        for seq, step, cur, n, e4 in _raw_revenue_e4(conn)
    ]
    return sorted(rows, key=lambda r: (r.sequence_id, r.step_id, r.currency))


def _insert_all(conn: Connection, table: Table, rows: Iterable[dict[str, Any]]) -> None:
    values = list(rows)
    if values:
        conn.execute(insert(table), values)


def rebuild(conn: Connection) -> None:
    """Recompute the three summary tables from the raw ones (in the caller's
    transaction). The marks are inserted first (their trigger counts them);
    then the counters are replaced by the figures of :func:`raw_step_counts`."""
    conn.execute(delete(FUNNEL_MARK))
    marks = (
        select(EVENT.c.send_id, EVENT.c.kind, SEND.c.sequence_id, SEND.c.step_id)
        .select_from(EVENT.join(SEND, SEND.c.id == EVENT.c.send_id))
        .where(_counted_events())
        .distinct()
    )
    conn.execute(
        insert(FUNNEL_MARK).from_select(["send_id", "mark", "sequence_id", "step_id"], marks)
    )
    conn.execute(delete(FUNNEL_STEP))
    # After the marks: on PostgreSQL their triggers wrote deltas. (Migration
    # 0008 rebuilds before 0010 made the table.)
    if inspect(conn).has_table(FUNNEL_STEP_DELTA.name):
        conn.execute(delete(FUNNEL_STEP_DELTA))
    _insert_all(
        conn,
        FUNNEL_STEP,
        (
            {
                "sequence_id": r.sequence_id,
                "step_id": r.step_id,
                "sent": r.sent,
                "unknown": r.unknown,
                "delivered": r.delivered,
                "opened": r.opened,
                "clicked": r.clicked,
            }
            for r in raw_step_counts(conn)
        ),
    )
    conn.execute(delete(FUNNEL_REVENUE))
    _insert_all(
        conn,
        FUNNEL_REVENUE,
        (
            {"sequence_id": s, "step_id": t, "currency": c, "orders": n, "amount_e4": e4}
            for s, t, c, n, e4 in _raw_revenue_e4(conn)
        ),
    )


FOLD_LOCK = 0x6E75_7274_6665  # "nurtfe": one folder at a time (an advisory lock)

# Takes the delta rows no open transaction holds (SKIP LOCKED: a fold never
# waits for a worker, and a worker waits at most for the fold's commit),
# deletes them and adds their sums to funnel_step in key order. The column
# lists come from _COUNTERS (constants, never input).
_COUNTER_LIST = ", ".join(_COUNTERS)
_FOLD = text(
    f"""
WITH taken AS (
  SELECT sequence_id, step_id, backend FROM funnel_step_delta
  ORDER BY sequence_id, step_id, backend
  FOR UPDATE SKIP LOCKED
), moved AS (
  DELETE FROM funnel_step_delta d USING taken t
  WHERE d.sequence_id = t.sequence_id AND d.step_id = t.step_id AND d.backend = t.backend
  RETURNING d.sequence_id, d.step_id, {", ".join(f"d.{c}" for c in _COUNTERS)}
)
INSERT INTO funnel_step AS f (sequence_id, step_id, {_COUNTER_LIST})
SELECT sequence_id, step_id, {", ".join(f"sum({c})" for c in _COUNTERS)}
FROM moved GROUP BY sequence_id, step_id ORDER BY sequence_id, step_id
ON CONFLICT (sequence_id, step_id) DO UPDATE SET
  {", ".join(f"{c} = f.{c} + EXCLUDED.{c}" for c in _COUNTERS)}
"""
)


def fold_deltas(conn: Connection) -> int:
    """PostgreSQL: move the per-process deltas into ``funnel_step`` (in the
    caller's transaction); the figures read stay the same. Returns the steps
    whose counters moved; 0 on SQLite (no deltas), or while another fold
    runs."""
    if conn.dialect.name != "postgresql":
        return 0
    locked = conn.execute(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": FOLD_LOCK})
    if not locked.scalar():
        return 0
    return int(conn.execute(_FOLD).rowcount)


def fold_all(engine: Engine) -> int:
    """:func:`fold_deltas` in a transaction of its own, opened only where
    there are deltas to fold (PostgreSQL): on SQLite it never connects."""
    if engine.dialect.name != "postgresql":
        return 0
    with engine.begin() as conn:
        return fold_deltas(conn)


def active_enrollments(conn: Connection) -> dict[str, int]:
    """Active enrollments per sequence."""
    query = (
        select(ENROLLMENT.c.sequence_id, func.count())
        .where(ENROLLMENT.c.status == EnrollmentStatus.ACTIVE)
        .group_by(ENROLLMENT.c.sequence_id)
    )
    return {seq: int(n) for seq, n in conn.execute(query)}
