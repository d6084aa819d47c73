"""The dispatcher's writes: a plan lands, an email is reserved, answers are
confirmed, leases are renewed, a dead worker's rows are reconciled.

Every write is conditional on still owning the row: an enrollment is written
only ``WHERE claimed_by = me``, a ledger row only while it has the status this
worker expects, and a new ledger row is inserted-or-ignored (another worker may
have recorded that step). A worker that lost its lease loses quietly: these
functions report what they could write and the caller drops the rest.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, func, literal_column, or_, select, update
from sqlalchemy.engine import Connection, Engine

from nurture.core.decisions import EnrollmentState, Event, LedgerEntry, state_from_ledger
from nurture.core.planner import (
    BatchInput,
    BatchPlan,
    ClaimedEnrollment,
    EnrollmentChange,
    LedgerChange,
    LedgerInsert,
    Recipient,
)
from nurture.core.subscriber import Subscriber
from nurture.core.vocabulary import EnrollmentStatus, EventKind, SendStatus
from nurture.store import journal
from nurture.store.db import BUSY_TIMEOUT_MS
from nurture.store.prepared import prepared, prepared_for
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
        sid: [Event(EventKind(r.kind), r.occurred_at, r.step_id, r.product) for r in rows]
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
            ENROLLMENT.c.id.in_(wanted),
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
    return {row[0] for row in result}


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
    query = select(SEND.c.key).where(SEND.c.key.in_(keys))
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
        # not a crash. Run by the driver (one executemany); only when rows
        # were skipped do we ask which of our keys landed.
        statement = prepared(
            conn, "insert_send", lambda: (_insert_statement(conn), list(_INSERT_COLUMNS))
        )
        rows = [_insert_row(row, now) for row in mine.inserts]
        if statement.run(conn, rows) < len(rows):
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
        .where(ENROLLMENT.c.id.in_(wanted), ENROLLMENT.c.claimed_by == worker_id)
        .values(values)
    )


def _held_by_me() -> Any:
    """The row's enrollment is claimed by the worker bound as ``me``.
    Correlated on the primary key: one index lookup per row, not a scan of
    every enrollment (claimed_by has no index)."""
    return (
        select(ENROLLMENT.c.id)
        .where(
            ENROLLMENT.c.id == SEND.c.enrollment_id,
            ENROLLMENT.c.claimed_by == bindparam("me"),
        )
        .exists()
    )


# Reserving one email: the statement each reservation runs (see SerialLedger and
# reserve), once per email, so its cost is the hot path's.
_RESERVE_ONE = (
    update(SEND)
    .where(
        SEND.c.key == bindparam("one_key"),
        SEND.c.status == SendStatus.QUEUED,
        _held_by_me(),
    )
    .values(
        status=SendStatus.RESERVED,
        attempts=SEND.c.attempts + 1,
        lease_until=bindparam("lease"),
        transport=bindparam("transport"),
    )
)


def _reserve_one_statement() -> tuple[Any, list[str]]:
    return _RESERVE_ONE, ["one_key", "me", "lease", "transport"]


def _settle_and_reserve_statement() -> tuple[Any, list[str]]:
    """PostgreSQL: settle the previous answer (with its provider id) and
    reserve the next email in one statement, ``WITH settled AS (UPDATE ...)
    UPDATE ...``; its row count is the reservation's. The two rows differ
    (an answer's key is never the next reservation's)."""
    settled = _SETTLE.returning(literal_column("1")).cte("settled")
    return _RESERVE_ONE.add_cte(settled), [*_SETTLE_NAMES, "one_key", "me", "lease", "transport"]


class SerialLedger:
    """The ledger writes of a sender without a pool: one transaction per email.

    Right before each provider call, :meth:`step` reserves that email and, in
    the same commit, settles the answer of the email before it. So at any
    instant at most one row is ``reserved`` and not yet answered, and an answer
    is never left unwritten while the next email goes out. (Enrollments move
    on later, in the batched confirm: the planner reads the ledger, so a crash
    in between loses nothing.)

    This is the hot path's one extra commit per email, so it runs on a driver
    connection of its own, outside SQLAlchemy's execution layer, with one
    cursor and statements compiled once (on SQLite: a plain autocommit
    statement when there is nothing to settle, ``BEGIN IMMEDIATE`` otherwise;
    on PostgreSQL: one autocommit statement per step, the answer with its
    provider id and the reservation together, so one round trip per email).
    SQLite's own busy handler sleeps a whole millisecond or more when another
    process holds the write lock for a few microseconds; on this connection a
    busy database is retried after tens of microseconds instead, for up to
    :data:`BUSY_PATIENCE` seconds.
    """

    BUSY_PATIENCE = 30.0

    def __init__(self, engine: Engine, worker_id: str, transport: str) -> None:
        dialect = engine.dialect
        self._sqlite = dialect.name == "sqlite"
        dbapi: Any = dialect.dbapi
        self._errors: tuple[type[BaseException], ...] = (
            (dbapi.OperationalError,) if self._sqlite else ()
        )
        self._reserve = prepared_for(dialect, "reserve_one", _reserve_one_statement)
        self._settle = prepared_for(
            dialect, "settle_answer", lambda: (_SETTLE_ANSWER, _SETTLE_ANSWER_NAMES)
        )
        if not self._sqlite:
            self._settle_with_id = prepared_for(dialect, "settle", lambda: (_SETTLE, _SETTLE_NAMES))
            self._both = prepared_for(dialect, "settle_and_reserve", _settle_and_reserve_statement)
        self._fixed = {"me": worker_id, "transport": transport}
        self._pooled = engine.raw_connection()
        driver = self._pooled.driver_connection
        assert driver is not None
        self._driver: Any = driver
        self._saved_isolation: Any = None
        if self._sqlite:
            self._saved_isolation = self._driver.isolation_level
            self._driver.isolation_level = None  # we say when a transaction starts
            self._driver.execute("PRAGMA busy_timeout=0")
        else:
            # PostgreSQL: each step is one statement (the answer, its provider
            # id and the next reservation; see _settle_and_reserve_statement)
            # in its own transaction: one round trip and one commit per email.
            self._driver.rollback()  # whatever the pool's check-out left open
            self._driver.autocommit = True
        self._cursor = self._driver.cursor()

    @property
    def writes_message_ids(self) -> bool:
        """Whether :meth:`step` writes the provider's message id with the
        answer (PostgreSQL), so :func:`record_message_ids` need not."""
        return not self._sqlite

    def __enter__(self) -> SerialLedger:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._cursor.close()
            if self._sqlite:
                self._driver.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
                self._driver.isolation_level = self._saved_isolation
        finally:
            try:
                if not self._sqlite:
                    self._driver.autocommit = False  # as the pool hands it out
            finally:
                self._pooled.close()

    def step(self, settle: Settle | None, key: str | None, lease_until: datetime) -> bool:
        """Settle ``settle`` (if any) and reserve the ``queued`` row ``key`` (if
        any, and if this worker still holds its enrollment), in one commit.
        Says whether ``key`` was reserved."""
        values = None if key is None else {**self._fixed, "one_key": key, "lease": lease_until}
        if self._sqlite:
            return self._busy_retried(lambda: self._write_sqlite(settle, values))
        return self._write(settle, values)

    def _write(self, settle: Settle | None, values: dict[str, Any] | None) -> bool:
        """PostgreSQL, autocommit: one statement, one transaction."""
        cursor = self._cursor
        if settle is not None and values is not None:
            return self._both.execute(cursor, {**_settle_values(settle), **values}) == 1
        if settle is not None:
            self._settle_with_id.execute(cursor, _settle_values(settle))
            return False
        return values is not None and self._reserve.execute(cursor, values) == 1

    def _write_sqlite(self, settle: Settle | None, values: dict[str, Any] | None) -> bool:
        cursor = self._cursor
        if settle is None:  # one statement: its own transaction
            return values is not None and self._reserve.execute(cursor, values) == 1
        cursor.execute("BEGIN IMMEDIATE")
        try:
            self._settle.execute(cursor, _answer_values(settle))
            changed = 0 if values is None else self._reserve.execute(cursor, values)
        except BaseException:
            cursor.execute("ROLLBACK")
            raise
        cursor.execute("COMMIT")
        return changed == 1

    def _busy_retried(self, write: Callable[[], bool]) -> bool:
        delay, deadline = 20e-6, time.monotonic() + self.BUSY_PATIENCE
        while True:
            try:
                return write()
            except self._errors as exc:
                code = getattr(exc, "sqlite_errorcode", None)
                if code is None or code & 0xFF not in (5, 6) or time.monotonic() > deadline:
                    raise  # not SQLITE_BUSY / SQLITE_LOCKED, or out of patience
            time.sleep(delay)
            delay = min(delay * 2, 0.002)


def reserve(
    conn: Connection, keys: Sequence[str], worker_id: str, lease_until: datetime, transport: str
) -> set[str]:
    """Mark these ``queued`` rows ``reserved`` (in flight) in the moment before
    their provider calls; return the keys reserved. A row whose enrollment this
    worker no longer holds, or that is no longer ``queued``, is not."""
    if not keys:
        return set()
    # One statement per key through the driver, in the caller's transaction:
    # rounds reserve a few emails at a time (the slots just freed), where a
    # statement with an IN list and RETURNING cost more to build than to run.
    statement = prepared(conn, "reserve_one", _reserve_one_statement)
    fixed = {"me": worker_id, "lease": lease_until, "transport": transport}
    return {key for key in keys if statement.run(conn, [{**fixed, "one_key": key}]) == 1}


@dataclass(frozen=True)
class Settle:
    """One answer written to the ledger (``expected``: the status it must still have)."""

    key: str
    expected: SendStatus
    status: SendStatus
    reason: str | None
    attempts: int
    next_attempt_at: datetime | None
    sent_at: datetime | None
    provider_message_id: str | None
    transport: str | None


def _settle_statement(*, with_message_id: bool) -> Any:
    values: dict[str, Any] = {
        "status": bindparam("_status"),
        "reason": bindparam("_reason"),
        "attempts": bindparam("_attempts"),
        "next_attempt_at": bindparam("_next", type_=SEND.c.next_attempt_at.type),
        "sent_at": bindparam("_sent", type_=SEND.c.sent_at.type),
        "transport": bindparam("_transport"),
        "lease_until": None,
    }
    if with_message_id:
        values["provider_message_id"] = bindparam("_pid")
    return (
        update(SEND)
        .where(SEND.c.key == bindparam("_key"), SEND.c.status == bindparam("_expected"))
        .values(values)
    )


_SETTLE = _settle_statement(with_message_id=True)
_SETTLE_NAMES = [
    "_key", "_expected", "_status", "_reason", "_attempts", "_next", "_sent", "_pid", "_transport",
]  # fmt: skip


# The answer as the serial path writes it with the next reservation: all but
# the provider's message id. That column is indexed, and provider ids are
# random: writing it in the per-email commit touched an index page of its own
# and doubled the commit's cost (measured: 126 against 62 µs of CPU on
# SQLite). :func:`record_message_ids` writes it with the batch's confirm.
_SETTLE_ANSWER = _settle_statement(with_message_id=False)
_SETTLE_ANSWER_NAMES = [n for n in _SETTLE_NAMES if n != "_pid"]


def _answer_values(r: Settle) -> dict[str, Any]:
    values = _settle_values(r)
    del values["_pid"]
    return values


_MESSAGE_ID = (
    update(SEND)
    .where(
        SEND.c.key == bindparam("_key"),
        SEND.c.status == bindparam("_status"),
        SEND.c.provider_message_id.is_(None),
    )
    .values(provider_message_id=bindparam("_pid"))
)


def record_message_ids(conn: Connection, ids: Sequence[tuple[str, str, SendStatus]]) -> None:
    """The provider's message ids of answers settled by a :class:`SerialLedger`
    (key, message id, the status written), in the caller's transaction. A crash
    before this loses only the id: the provider's events also carry our key."""
    if ids:
        prepared(conn, "message_id", lambda: (_MESSAGE_ID, ["_key", "_status", "_pid"])).run(
            conn, [{"_key": key, "_pid": pid, "_status": status} for key, pid, status in ids]
        )


def _settle_values(r: Settle) -> dict[str, Any]:
    return {
        "_key": r.key,
        "_expected": r.expected,
        "_status": r.status,
        "_reason": r.reason,
        "_attempts": r.attempts,
        "_next": r.next_attempt_at,
        "_sent": r.sent_at,
        "_pid": r.provider_message_id,
        "_transport": r.transport,
    }


def settle(conn: Connection, rows: Sequence[Settle]) -> None:
    if not rows:
        return
    prepared(conn, "settle", lambda: (_SETTLE, _SETTLE_NAMES)).run(
        conn, [_settle_values(r) for r in rows]
    )


def settle_values_for_journal(r: Settle) -> dict[str, Any]:
    """An answer as the send journal keeps it (JSON values)."""
    values = _settle_values(r)
    for name in ("_next", "_sent"):
        if values[name] is not None:
            values[name] = values[name].isoformat()
    return values


def _settle_from_journal(values: dict[str, Any]) -> dict[str, Any]:
    row = {name: values.get(name) for name in _SETTLE_NAMES}
    for name in ("_next", "_sent"):
        value = row[name]
        if isinstance(value, str):
            row[name] = datetime.fromisoformat(value)
    row["_expected"] = SendStatus.RESERVED
    return row


_GIVE_BACK = (
    update(SEND)
    .where(SEND.c.key == bindparam("_key"), SEND.c.status == SendStatus.RESERVED)
    .values(status=SendStatus.QUEUED, attempts=SEND.c.attempts - 1, lease_until=None)
)


def give_back(conn: Connection, keys: Sequence[str]) -> None:
    """Reserved rows of a journaled batch that were never attempted go back
    to ``queued`` (the attempt the reservation counted is returned). Only in
    a transaction that checks the journal's fence: no one else can have
    changed a journaled ``reserved`` row without fencing it first."""
    if keys:
        prepared(conn, "give_back", lambda: (_GIVE_BACK, ["_key"])).run(
            conn, [{"_key": key} for key in keys]
        )


def renew_leases(conn: Connection, worker_id: str, lease_until: datetime) -> None:
    """Everything this worker holds stays its own until ``lease_until``."""
    conn.execute(
        update(ENROLLMENT)
        .where(ENROLLMENT.c.claimed_by == worker_id)
        .values(claimed_until=lease_until)
    )
    conn.execute(
        update(SEND)
        .where(
            SEND.c.status == SendStatus.RESERVED,
            SEND.c.enrollment_id.in_(
                select(ENROLLMENT.c.id).where(ENROLLMENT.c.claimed_by == worker_id)
            ),
        )
        .values(lease_until=lease_until)
    )


def reconcile(conn: Connection, now: datetime) -> tuple[int, int]:
    """Rows of enrollments whose claim expired (their worker died or gave up).

    * ``reserved`` with an expired lease: it may have reached the provider, so
      it becomes ``unknown`` (settled now) and is never resent automatically;
    * ``queued``: it never reached the provider, so it becomes due again as a
      ``retry`` due at once with no attempt spent. It is kept rather than
      deleted: its key is already in the rendered Message-ID and the row shows
      when it was first decided.

    Returns (unknown, due again).
    """
    unclaimed = select(ENROLLMENT.c.id).where(
        or_(ENROLLMENT.c.claimed_until.is_(None), ENROLLMENT.c.claimed_until < now)
    )
    recovered = _recover_journals(conn, now)
    unknown = conn.execute(
        update(SEND)
        .where(
            SEND.c.status == SendStatus.RESERVED,
            or_(SEND.c.lease_until.is_(None), SEND.c.lease_until < now),
            SEND.c.enrollment_id.in_(unclaimed),
        )
        .values(
            status=SendStatus.UNKNOWN,
            sent_at=now,
            lease_until=None,
            reason="the worker stopped during the send (lease expired): "
            "the provider may or may not have it; not resent",
        )
    )
    again = conn.execute(
        update(SEND)
        .where(and_(SEND.c.status == SendStatus.QUEUED, SEND.c.enrollment_id.in_(unclaimed)))
        .values(
            status=SendStatus.RETRY,
            next_attempt_at=now,
            lease_until=None,
            reason="not attempted: the worker stopped before sending it",
        )
    )
    return int(unknown.rowcount or 0), int(again.rowcount or 0) + recovered


def _recover_journals(conn: Connection, now: datetime) -> int:
    """Expired ``reserved`` rows of journaled batches (SQLite files, the serial
    sender; see :mod:`nurture.store.journal`): those answered are settled
    with their answer, those never attempted are due again; those whose call
    started without an answer are left for ``unknown``. Returns how many are
    due again."""
    directory = journal.directory_for(conn.engine)
    if directory is None or not directory.is_dir():
        return 0
    expired = {
        row.key: row.claimed_by
        for row in conn.execute(
            select(SEND.c.key, ENROLLMENT.c.claimed_by)
            .join(ENROLLMENT, ENROLLMENT.c.id == SEND.c.enrollment_id)
            .where(
                SEND.c.status == SendStatus.RESERVED,
                or_(SEND.c.lease_until.is_(None), SEND.c.lease_until < now),
                or_(ENROLLMENT.c.claimed_until.is_(None), ENROLLMENT.c.claimed_until < now),
            )
        )
    }
    found = journal.recover(directory, expired)
    if found.answers:
        prepared(conn, "settle", lambda: (_SETTLE, _SETTLE_NAMES)).run(
            conn, [_settle_from_journal(values) for values in found.answers.values()]
        )
    again = 0
    if found.again:
        again = prepared(conn, "journal_again", lambda: (_AGAIN, ["_key", "_now"])).run(
            conn, [{"_key": key, "_now": now} for key in sorted(found.again)]
        )
    for path in found.fenced:
        path.unlink(missing_ok=True)
    for path, keys in found.idle:
        if not keys or not keys_present(conn, sorted(keys), SendStatus.RESERVED):
            path.unlink(missing_ok=True)
    return again


_AGAIN = (
    update(SEND)
    .where(SEND.c.key == bindparam("_key"), SEND.c.status == SendStatus.RESERVED)
    .values(
        status=SendStatus.RETRY,
        next_attempt_at=bindparam("_now", type_=SEND.c.next_attempt_at.type),
        attempts=SEND.c.attempts - 1,
        lease_until=None,
        reason="not attempted: the worker stopped before sending it",
    )
)
