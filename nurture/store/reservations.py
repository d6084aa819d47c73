"""Each email's reservation and its answer in the ledger.

Right before its provider call an email's ``queued`` row becomes ``reserved``
(in flight, leased); the provider's answer settles it (``sent``, ``retry``,
``failed``, ``unknown``) with its message id. Every write is conditional: a
reservation only while this worker still holds the row's enrollment, an
answer only while the row has the status this worker expects. A worker that
lost its lease loses quietly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import any_, bindparam, func, literal_column, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection, Engine

from nurture.core.vocabulary import SendStatus
from nurture.store.db import BUSY_TIMEOUT_MS
from nurture.store.prepared import prepared, prepared_for
from nurture.store.queries import ENROLLMENT, SEND


def _held_by_me() -> Any:
    """The row's enrollment is claimed by the worker bound as ``me``.

    A scalar subquery on the enrollment's primary key, evaluated for the one
    row the key found, rather than ``EXISTS``: PostgreSQL turns an ``EXISTS``
    into a join it may start from ``ix_enrollment_claimed_by``, and with
    statistics taken before this worker claimed anything (autovacuum behind,
    or off) it did, reading every enrollment the worker held for each
    reservation. This form has one plan whatever the statistics: the key's
    unique index, then one primary-key lookup."""
    return select(ENROLLMENT.c.claimed_by).where(
        ENROLLMENT.c.id == SEND.c.enrollment_id
    ).scalar_subquery() == bindparam("me")


# Reserving one email: the statement each reservation runs (see SerialLedger and
# reserve), once per email, so its cost is the hot path's.
# Its literals are named: a pool's round (round_sql) runs it beside
# statements whose parameters have the column names.
_QUEUED = bindparam("r_queued", SendStatus.QUEUED, type_=SEND.c.status.type)
_RESERVED_VALUES = {
    "status": bindparam("r_reserved", SendStatus.RESERVED, type_=SEND.c.status.type),
    "attempts": SEND.c.attempts + 1,
    "lease_until": bindparam("lease"),
    "transport": bindparam("transport"),
}
_RESERVE_ONE = (
    update(SEND)
    .where(
        SEND.c.key == bindparam("one_key"),
        SEND.c.status == _QUEUED,
        _held_by_me(),
    )
    .values(_RESERVED_VALUES)
)


def reserve_one_statement() -> tuple[Any, list[str]]:
    """One email's reservation and its parameters (for :func:`prepared`)."""
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
        self._reserve = prepared_for(dialect, "reserve_one", reserve_one_statement)
        self._settle = prepared_for(
            dialect, "settle_answer", lambda: (_SETTLE_ANSWER, _SETTLE_ANSWER_NAMES)
        )
        if not self._sqlite:
            self._settle_with_id = prepared_for(dialect, "settle", settle_statement)
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
            return self._both.execute(cursor, {**settle_values(settle), **values}) == 1
        if settle is not None:
            self._settle_with_id.execute(cursor, settle_values(settle))
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


def reserve_many_statement() -> tuple[Any, list[str]]:
    """PostgreSQL: :data:`_RESERVE_ONE` for an array of keys, returning those
    reserved. The claim is checked by :func:`_held_by_me`'s subquery, per
    row found, so the plan starts from the keys' unique index."""
    keys = bindparam("keys", type_=ARRAY(SEND.c.key.type))
    statement = (
        update(SEND)
        .where(SEND.c.key == any_(keys), SEND.c.status == _QUEUED, _held_by_me())
        .values(_RESERVED_VALUES)
        .returning(SEND.c.key)
    )
    return statement, ["keys", "me", "lease", "transport"]


def reserve(
    conn: Connection, keys: Sequence[str], worker_id: str, lease_until: datetime, transport: str
) -> set[str]:
    """Mark these ``queued`` rows ``reserved`` (in flight) in the moment before
    their provider calls; return the keys reserved. A row whose enrollment this
    worker no longer holds, or that is no longer ``queued``, is not."""
    if not keys:
        return set()
    fixed = {"me": worker_id, "lease": lease_until, "transport": transport}
    with closing(conn.connection.cursor()) as cursor:
        if conn.dialect.name == "postgresql":
            # The round in one statement and one round trip, its keys one array.
            many = prepared(conn, "reserve_many", reserve_many_statement)
            cursor.execute(many.sql, many.params({**fixed, "keys": list(keys)}))
            return {row[0] for row in cursor.fetchall()}
        # SQLite: one statement per key (no round trips), in the caller's
        # transaction.
        one = prepared(conn, "reserve_one", reserve_one_statement)
        return {key for key in keys if one.execute(cursor, {**fixed, "one_key": key}) == 1}


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
    # The expected status through coalesce (status is never null, so the test
    # is the same): PostgreSQL matched a plain ``status = 'reserved'`` with
    # the partial index ``ix_send_reserved`` and, with statistics taken while
    # little was in flight, started there, reading every email in flight
    # (a pool's worth per worker) to find one key. Now it has one plan: the
    # key's unique index.
    return (
        update(SEND)
        .where(
            SEND.c.key == bindparam("_key"),
            func.coalesce(SEND.c.status, "") == bindparam("_expected"),
        )
        .values(values)
    )


_SETTLE = _settle_statement(with_message_id=True)
_SETTLE_NAMES = [
    "_key", "_expected", "_status", "_reason", "_attempts", "_next", "_sent", "_pid", "_transport",
]  # fmt: skip


def settle_statement() -> tuple[Any, list[str]]:
    """One answer with its provider id, and its parameters (for :func:`prepared`)."""
    return _SETTLE, _SETTLE_NAMES


# The answer as the serial path writes it with the next reservation: all but
# the provider's message id. That column is indexed, and provider ids are
# random: writing it in the per-email commit touched an index page of its own
# and doubled the commit's cost (measured: 126 against 62 µs of CPU on
# SQLite). :func:`record_message_ids` writes it with the batch's confirm.
_SETTLE_ANSWER = _settle_statement(with_message_id=False)
_SETTLE_ANSWER_NAMES = [n for n in _SETTLE_NAMES if n != "_pid"]


def _answer_values(r: Settle) -> dict[str, Any]:
    values = settle_values(r)
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


def settle_values(r: Settle) -> dict[str, Any]:
    """The one-row settle's parameters for an answer (also a round's, as arrays)."""
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
    prepared(conn, "settle", settle_statement).run(conn, [settle_values(r) for r in rows])


def settle_values_for_journal(r: Settle) -> dict[str, Any]:
    """An answer as the send journal keeps it (JSON values)."""
    values = settle_values(r)
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


def settle_from_journal(conn: Connection, answers: Iterable[dict[str, Any]]) -> None:
    """Answers read back from a send journal (:func:`settle_values_for_journal`),
    written to rows still ``reserved``, in the caller's transaction."""
    rows = [_settle_from_journal(values) for values in answers]
    if rows:
        prepared(conn, "settle", settle_statement).run(conn, rows)


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
