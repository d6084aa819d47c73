"""PostgreSQL: a send pool's whole round as one statement.

A round settles the answers that came back, moves their enrollments on and
reserves the next keys (:mod:`nurture.store.reservations` has each of these
as its own statement). On PostgreSQL they are one statement, its own
transaction: one round trip and one commit where a transaction of them took
five round trips.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy.engine import Connection

from nurture.core.batch import EnrollmentChange
from nurture.store.arrays import record_values, records
from nurture.store.batches import update_enrollments_sql, update_enrollments_values
from nurture.store.prepared import prepared_for
from nurture.store.queries import SEND
from nurture.store.reservations import Settle, reserve_many_statement, settle_values

_ANSWERED = {
    "_key": SEND.c.key,
    "_expected": SEND.c.status,
    "_status": SEND.c.status,
    "_reason": SEND.c.reason,
    "_attempts": SEND.c.attempts,
    "_next": SEND.c.next_attempt_at,
    "_sent": SEND.c.sent_at,
    "_pid": SEND.c.provider_message_id,
    "_transport": SEND.c.transport,
}
"""A round's answers as PostgreSQL's :func:`reserve_and_confirm` passes them:
a row each (:func:`~nurture.store.arrays.records`) of the one-row settle's
parameters (:func:`settle_values`)."""


@cache
def round_sql(dialect: Any) -> str:
    """PostgreSQL: a send pool's whole round as one statement. The answers
    settled (as the one-row settle does, per row: the key and the status it
    expects), their enrollments moved on and released
    (:func:`~nurture.store.batches.update_enrollments_sql`), and the next
    keys reserved (:func:`reserve_many_statement`, whose keys it returns).

    The three parts touch different rows (an answer's key is never one being
    reserved, and a reserved email's enrollment has no answer in the round),
    so it does not matter that they see the database as it was before the
    statement. The settle and the enrollment update find their rows through
    ``key = ANY`` and ``id = ANY`` (the answers themselves are one JSON
    parameter, which the planner cannot see into), so that any plan of the
    statement starts from the keys' and ids' indexes; how often it is
    planned is :func:`reserve_and_confirm`'s."""
    settle_many = f"""UPDATE send SET status = v._status, reason = v._reason,
  attempts = v._attempts, next_attempt_at = v._next, sent_at = v._sent,
  transport = v._transport, provider_message_id = v._pid, lease_until = NULL
FROM {records(dialect, "_answers", _ANSWERED)}
WHERE send.key = ANY(%(_answered)s::varchar[]) AND send.key = v._key
  AND coalesce(send.status, '') = v._expected"""
    reserve = prepared_for(dialect, "reserve_many", reserve_many_statement).sql
    return (
        f"WITH settled AS ({settle_many} RETURNING 1),\n"
        f"moved AS ({update_enrollments_sql(dialect)} RETURNING 1)\n{reserve}"
    )


def reserve_and_confirm(conn: Connection, statement: tuple[str, dict[str, Any]]) -> set[str]:
    """PostgreSQL, outside a transaction: the reservation, the settles and
    :func:`~nurture.store.batches.update_enrollments` of one round in one
    statement (:func:`round_statement`), which is its own transaction: one
    round trip and one commit. Returns the keys reserved.

    On a connection held with :func:`keyed_round_plans` (a send pool's
    coordinator) the statement is prepared once and its one plan kept;
    anywhere else it is planned at each execution (see there)."""
    sql, values = statement
    with _outside_transactions(conn.connection.driver_connection) as cursor:
        cursor.execute(sql, values, prepare=bool(conn.info.get(_KEYED_PLANS)))
        return {row[0] for row in cursor.fetchall()}


@contextmanager
def _outside_transactions(driver: Any) -> Iterator[Any]:
    """A cursor of the driver's connection in autocommit: each statement is
    its own transaction (and a session setting outlives any rollback). Back
    to SQLAlchemy's manual commits afterwards, as it expects between
    transactions."""
    driver.autocommit = True
    try:
        with closing(driver.cursor()) as cursor:
            yield cursor
    finally:
        driver.autocommit = False


_KEYED_PLANS = "nurture.keyed_round_plans"
_KEYED_SETTINGS = {"plan_cache_mode": "force_generic_plan", "enable_seqscan": "off"}
_NEVER = 2**62  # executions before psycopg prepares a statement by itself


@contextmanager
def keyed_round_plans(conn: Connection) -> Iterator[None]:
    """PostgreSQL: while held, :func:`reserve_and_confirm` on ``conn`` is
    prepared once and runs on one plan that reads every table by key.

    Planning the round cost a fifth of its time on the server (0.2 ms of
    about 1 ms), once per round of a pool's few emails. A prepared statement
    is planned once, but PostgreSQL builds its one (generic) plan on the
    tables as they are at that moment, and on a new ledger of a few pages
    that plan scanned the whole ledger and matched the keys in a hash; nothing
    replanned it until an ANALYZE, so with autovacuum off each round read
    every email ever sent. Here the plan is built with sequential scans
    ruled out (``enable_seqscan = off``: the round names its rows by key, so
    an index is right at any size) and kept (``plan_cache_mode =
    force_generic_plan``); nothing else on the connection is newly prepared
    meanwhile (psycopg's ``prepare_threshold`` out of reach: ``None`` would
    turn off the explicit preparation too). A statement psycopg prepared on
    the connection before, run meanwhile, may get a generic plan made with
    sequential scans off; where none could be avoided its cost keeps the
    planner from choosing it again afterwards. Both settings are reset when
    it ends.

    Behind a pooler in transaction mode (``database_transaction_pooler``:
    psycopg's ``prepare_threshold`` is None) a session setting could land on
    a server connection another client gets next: there it does nothing, and
    each round is planned as it runs."""
    driver: Any = conn.connection.driver_connection
    threshold = driver.prepare_threshold
    if threshold is None:
        yield
        return
    _set(driver, *(f"SET {name} = {value}" for name, value in _KEYED_SETTINGS.items()))
    driver.prepare_threshold = _NEVER
    conn.info[_KEYED_PLANS] = True
    try:
        yield
    finally:
        conn.info.pop(_KEYED_PLANS, None)
        driver.prepare_threshold = threshold
        try:
            _set(driver, *(f"RESET {name}" for name in _KEYED_SETTINGS))
        except Exception:
            # The connection is gone (the database restarted): it must not
            # go back to the pool with these settings, if it could at all.
            conn.invalidate()


def _set(driver: Any, *statements: str) -> None:
    """Session settings, outside any transaction (so a rollback keeps them)."""
    with _outside_transactions(driver) as cursor:
        for sql in statements:
            cursor.execute(sql)


def round_statement(
    dialect: Any,
    keys: Sequence[str],
    worker_id: str,
    lease_until: datetime,
    transport: str,
    answers: Sequence[Settle],
    changes: Sequence[EnrollmentChange],
    now: datetime,
) -> tuple[str, dict[str, Any]]:
    """:func:`round_sql` and its parameters for one round."""
    answered = {a.key for a in answers}
    assert answered.isdisjoint(keys), "an answer's key is being reserved again"
    many = prepared_for(dialect, "reserve_many", reserve_many_statement)
    values = many.params(
        {"keys": list(keys), "me": worker_id, "lease": lease_until, "transport": transport}
    )
    values.update(update_enrollments_values(dialect, worker_id, changes, now))
    values["_answers"] = record_values(dialect, _ANSWERED, [settle_values(a) for a in answers])
    values["_answered"] = list(answered)
    return round_sql(dialect), values
