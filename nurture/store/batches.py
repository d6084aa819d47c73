"""The dispatcher's claims and plans: a batch of claimed enrollments is
loaded, its claims are held while its plan lands as ``queued`` ledger rows,
and its enrollments move on or are released.

Every write is conditional on still owning the row: an enrollment is written
only ``WHERE claimed_by = me`` and a new ledger row is inserted-or-ignored
(another worker may have recorded that step). A worker that lost its lease
loses quietly: these functions report what they could write and the caller
drops the rest. Reserving each email and writing its answer are in
:mod:`nurture.store.reservations`; a dead worker's rows, in
:mod:`nurture.store.recovery`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.engine import Connection

from nurture.core.batch import (
    BatchInput,
    BatchPlan,
    ClaimedEnrollment,
    EnrollmentChange,
    LedgerChange,
    LedgerInsert,
    Recipient,
)
from nurture.core.decisions import EnrollmentState, Event, LedgerEntry, state_from_ledger
from nurture.core.subscriber import Subscriber
from nurture.core.vocabulary import EnrollmentStatus, EventKind, SendStatus
from nurture.store.arrays import among, bound, record_values, records
from nurture.store.prepared import prepared
from nurture.store.queries import (
    ENROLLMENT,
    SEND,
    insert_ignoring_duplicates,
    load_decision_events,
    load_enrollments,
    load_ledger,
    load_subscribers,
    suppressed_among,
)

PENDING = (SendStatus.RETRY, SendStatus.QUEUED)


def ledger_entry(row: Any) -> LedgerEntry:
    """The core's view of one ``send`` row (from :func:`queries.load_ledger`)."""
    return LedgerEntry(
        row.key,
        row.step_id,
        SendStatus(row.status),
        row.due_at,
        row.sent_at,
        row.attempts,
        row.next_attempt_at,
    )


def state_of(enrolled_at: datetime, rows: Iterable[Any]) -> EnrollmentState:
    """An enrollment's state from its ledger rows, as the planner reads it."""
    return state_from_ledger(enrolled_at, [ledger_entry(row) for row in rows])


def load_batch(conn: Connection, ids: Sequence[int], now: datetime) -> BatchInput:
    """What the planner needs about these claimed enrollments, as plain values."""
    enrollments = [
        ClaimedEnrollment(
            row.id,
            row.subscriber_id,
            row.sequence_id,
            row.position,
            row.enrolled_at,
            row.trigger_properties,
        )
        for row in load_enrollments(conn, ids)
    ]
    subscribers = load_subscribers(conn, (e.subscriber_id for e in enrollments))
    recipients = {
        sid: Recipient(sid, row.email, row.status, Subscriber.of(row))
        for sid, row in subscribers.items()
    }
    ledgers = {
        eid: [ledger_entry(row) for row in rows] for eid, rows in load_ledger(conn, ids).items()
    }
    events = {
        sid: [
            Event(EventKind(r.kind), r.occurred_at, r.step_id, r.product, r.sequence_id)
            for r in rows
        ]
        for sid, rows in load_decision_events(conn, subscribers, now).items()
    }
    suppressed = suppressed_among(conn, (r.email for r in recipients.values()))
    return BatchInput(enrollments, recipients, ledgers, events, suppressed)


def hold_claims(
    conn: Connection, worker_id: str, ids: Iterable[int], lease_until: datetime
) -> set[int]:
    """Renew this worker's claim on ``ids``; return those it still holds.

    On PostgreSQL the UPDATE also locks the rows until the transaction ends,
    so no other worker can take them while this one writes their plan.
    """
    wanted = list(ids)
    if not wanted:
        return set()
    result = conn.execute(
        update(ENROLLMENT)
        .where(
            among(conn, ENROLLMENT.c.id, wanted),
            ENROLLMENT.c.claimed_by == worker_id,
            # Written as an expression (status || ''), not the bare column:
            # SQLite (no statistics) otherwise chose ix_enrollment_due for
            # "status = 'active'" over the primary keys and read every active
            # enrollment, the one cost of a tick that grew with the table.
            ENROLLMENT.c.status.concat("") == EnrollmentStatus.ACTIVE,
        )
        .values(claimed_until=lease_until)
        .returning(ENROLLMENT.c.id)
    )
    return set(result.scalars().all())


_INSERT_COLUMNS = (
    "key", "enrollment_id", "subscriber_id", "sequence_id", "sequence_version", "step_id",
    "status", "reason", "due_at", "decided_at", "sent_at", "lease_until", "next_attempt_at",
    "attempts", "transport", "provider_message_id", "subject",
)  # fmt: skip


def _insert_statement(conn: Connection) -> Any:
    return insert_ignoring_duplicates(conn, SEND).values(
        {name: bindparam(name, type_=SEND.c[name].type) for name in _INSERT_COLUMNS}
    )


def keys_present(
    conn: Connection, keys: Sequence[str], status: SendStatus | None = None
) -> set[str]:
    """Which of these ledger keys have a row (with ``status``, if given)."""
    query = select(SEND.c.key).where(among(conn, SEND.c.key, keys))
    if status is not None:
        query = query.where(SEND.c.status == status)
    return set(conn.execute(query).scalars())


def _insert_row(row: LedgerInsert, now: datetime) -> dict[str, Any]:
    return {
        "key": row.key,
        "enrollment_id": row.enrollment_id,
        "subscriber_id": row.subscriber_id,
        "sequence_id": row.sequence_id,
        "sequence_version": row.sequence_version,
        "step_id": row.step_id,
        "status": row.status,
        "reason": row.reason,
        "due_at": row.due_at,
        "decided_at": now,
        "sent_at": row.settled_at,
        "lease_until": None,
        "next_attempt_at": None,
        "attempts": 0,
        "transport": None,
        "provider_message_id": None,
        "subject": row.subject,
    }


def write_plan(
    conn: Connection, plan: BatchPlan, worker_id: str, lease_until: datetime, now: datetime
) -> tuple[BatchPlan, set[int]]:
    """Write what this worker still owns of ``plan``; return that part and the
    enrollments it gave back (lost to another worker: a step already recorded,
    a pending row already taken). Emails land as ``queued``."""
    owned = hold_claims(conn, worker_id, plan.enrollment_ids, lease_until)
    mine = plan.only(owned)
    lost: set[int] = set()
    if mine.inserts:
        # ON CONFLICT DO NOTHING: a step another worker recorded is skipped,
        # not a crash. Run by the driver (see _insert_send_rows); only when
        # rows were skipped do we ask which of our keys landed.
        rows = [_insert_row(row, now) for row in mine.inserts]
        if _insert_send_rows(conn, rows) < len(rows):
            written = keys_present(conn, [row.key for row in mine.inserts])
            lost.update(w.enrollment_id for w in mine.inserts if w.key not in written)
    for change in mine.changes:  # retries: few, one statement each
        result = conn.execute(
            update(SEND)
            .where(SEND.c.key == change.key, SEND.c.status.in_(PENDING))
            .values(_change_values(change, now))
        )
        if not result.rowcount:
            lost.add(change.enrollment_id)
    if lost:
        release_claims(conn, worker_id, lost)
        mine = mine.only(owned - lost)
    update_enrollments(conn, worker_id, mine.enrollments, now)
    return mine, (plan.enrollment_ids - owned) | lost


def _change_values(change: LedgerChange, now: datetime) -> dict[str, Any]:
    values: dict[str, Any] = {
        "status": change.status,
        "reason": change.reason,
        "decided_at": now,
        "sent_at": change.settled_at,
        "lease_until": None,
        "next_attempt_at": None,
    }
    if change.subject is not None:
        values["subject"] = change.subject
    return values


def _update_enrollment_statement() -> tuple[Any, list[str]]:
    statement = (
        update(ENROLLMENT)
        .where(
            ENROLLMENT.c.id == bindparam("_id"),
            ENROLLMENT.c.claimed_by == bindparam("_me"),
            ENROLLMENT.c.status == EnrollmentStatus.ACTIVE,
        )
        .values(
            status=bindparam("_status"),
            status_reason=bindparam("_reason"),
            next_due_at=bindparam("_due", type_=ENROLLMENT.c.next_due_at.type),
            position=bindparam("_position"),
            sequence_version=func.coalesce(
                bindparam("_version", type_=ENROLLMENT.c.sequence_version.type),
                ENROLLMENT.c.sequence_version,
            ),
            claimed_by=None,
            claimed_until=None,
            updated_at=bindparam("_now", type_=ENROLLMENT.c.updated_at.type),
        )
    )
    return statement, ["_id", "_me", "_status", "_reason", "_due", "_position", "_version", "_now"]


def update_enrollments(
    conn: Connection, worker_id: str, changes: Sequence[EnrollmentChange], now: datetime
) -> None:
    """Write where enrollments go and release their claims, only where this
    worker still holds the claim and the enrollment is still active (an admin
    who unenrolled someone meanwhile wins)."""
    if not changes:
        return
    if conn.dialect.name == "postgresql":
        _update_enrollments_postgresql(conn, worker_id, changes, now)
        return
    prepared(conn, "update_enrollments", _update_enrollment_statement).run(
        conn,
        [
            {
                "_id": c.id,
                "_me": worker_id,
                "_status": c.status,
                "_reason": c.status_reason,
                "_due": c.next_due_at,
                "_position": c.position,
                "_version": c.sequence_version,
                "_now": now,
            }
            for c in changes
        ],
    )


_CHANGED = {
    name: ENROLLMENT.c[name]
    for name in ("id", "status", "status_reason", "next_due_at", "position", "sequence_version")
}
"""The columns of an :class:`EnrollmentChange` (its field names), as
PostgreSQL's :func:`update_enrollments` passes them: a JSON row each."""


def _update_enrollments_postgresql(
    conn: Connection, worker_id: str, changes: Sequence[EnrollmentChange], now: datetime
) -> None:
    """:func:`update_enrollments` in one statement, the changes as JSON rows. An
    enrollment changed twice keeps its first change, as one statement per
    change did (the first released the claim the second needed).

    The claim is compared as ``coalesce(claimed_by, '') = :me``, which
    neither ``ix_enrollment_claimed_by`` nor its ``IS NOT NULL`` predicate
    serves: statistics are always taken while this worker holds nothing (its
    id is new at each start), so PostgreSQL took the bare ``claimed_by =
    :me`` for one row and started from that index, reading every enrollment
    the worker held for each statement instead of the ids given (see
    ``tests/integration/test_plans.py``)."""
    conn.exec_driver_sql(
        update_enrollments_sql(conn.dialect),
        update_enrollments_values(conn.dialect, worker_id, changes, now),
    )


def update_enrollments_values(
    dialect: Any, worker_id: str, changes: Sequence[EnrollmentChange], now: datetime
) -> dict[str, Any]:
    """The parameters of :func:`update_enrollments_sql` for ``changes`` (the
    first change of an enrollment changed twice)."""
    first: dict[int, EnrollmentChange] = {}
    for change in changes:
        first.setdefault(change.id, change)
    rows = [{name: getattr(c, name) for name in _CHANGED} for c in first.values()]
    values: dict[str, Any] = {"changes": record_values(dialect, _CHANGED, rows)}
    values["changed"] = list(first)
    values["me"] = worker_id
    values["now"] = bound(dialect, ENROLLMENT.c.updated_at, now)
    return values


@cache
def update_enrollments_sql(dialect: Any) -> str:
    """PostgreSQL's statement of :func:`update_enrollments`, built once
    (parameters: ``changes``, a row per enrollment of the names of
    :data:`_CHANGED`; ``changed``, their ids, which the plan starts from
    whatever the statistics say; ``me`` and ``now``)."""
    return f"""UPDATE enrollment SET status = v.status, status_reason = v.status_reason,
  next_due_at = v.next_due_at, position = v.position,
  sequence_version = coalesce(v.sequence_version, enrollment.sequence_version),
  claimed_by = NULL, claimed_until = NULL, updated_at = %(now)s
FROM {records(dialect, "changes", _CHANGED)}
WHERE enrollment.id = ANY(%(changed)s::integer[]) AND enrollment.id = v.id
  AND coalesce(enrollment.claimed_by, '') = %(me)s
  AND enrollment.status = 'active'"""


_INSERTED = {name: SEND.c[name] for name in _INSERT_COLUMNS}


@cache
def _insert_send_sql(dialect: Any) -> str:
    """PostgreSQL: a batch's ledger rows in one statement, as one JSON text."""
    return (
        f"INSERT INTO send ({', '.join(_INSERTED)}) "
        f"SELECT * FROM {records(dialect, 'rows', _INSERTED)} ON CONFLICT DO NOTHING"
    )


def _insert_send_rows(conn: Connection, rows: list[dict[str, Any]]) -> int:
    """Insert ledger rows, skipping a key already present; how many landed.
    PostgreSQL: one statement, the rows one JSON text; SQLite: one executemany."""
    if conn.dialect.name == "postgresql":
        values = {"rows": record_values(conn.dialect, _INSERTED, rows)}
        return int(conn.exec_driver_sql(_insert_send_sql(conn.dialect), values).rowcount)
    statement = prepared(
        conn, "insert_send", lambda: (_insert_statement(conn), list(_INSERT_COLUMNS))
    )
    return statement.run(conn, rows)


def release_claims(
    conn: Connection, worker_id: str, ids: Iterable[int], *, due_at: datetime | None = None
) -> None:
    """Give claimed enrollments back; with ``due_at``, not due before then (a
    batch that failed must not be the first one picked on every pass)."""
    wanted = list(ids)
    if not wanted:
        return
    values: dict[str, Any] = {"claimed_by": None, "claimed_until": None}
    if due_at is not None:
        values["next_due_at"] = (
            func.max(ENROLLMENT.c.next_due_at, due_at)
            if (conn.dialect.name == "sqlite")
            else func.greatest(ENROLLMENT.c.next_due_at, due_at)
        )
    conn.execute(
        update(ENROLLMENT)
        .where(among(conn, ENROLLMENT.c.id, wanted), ENROLLMENT.c.claimed_by == worker_id)
        .values(values)
    )
