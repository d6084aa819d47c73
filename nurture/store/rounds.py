"""PostgreSQL: a send pool's whole round as one statement.

A round settles the answers that came back, moves their enrollments on and
reserves the next keys (:mod:`nurture.store.reservations` has each of these
as its own statement). On PostgreSQL they are one statement, its own
transaction: one round trip and one commit where a transaction of them took
five round trips.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import closing
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy.engine import Connection

from nurture.core.batch import EnrollmentChange
from nurture.store.arrays import column_arrays, unnested
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
one array per parameter of the one-row settle (:func:`settle_values`)."""


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
    statement. The settle finds its rows through ``key = ANY``, and
    :func:`reserve_and_confirm` has it planned at each execution, on the
    ledger's size then (see there)."""
    names = ", ".join(_ANSWERED)
    settle_many = f"""UPDATE send SET status = v._status, reason = v._reason,
  attempts = v._attempts, next_attempt_at = v._next, sent_at = v._sent,
  transport = v._transport, provider_message_id = v._pid, lease_until = NULL
FROM {unnested(dialect, _ANSWERED)} AS v({names})
WHERE send.key = ANY(%(_key)s::varchar[]) AND send.key = v._key
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

    It is never a prepared statement. psycopg prepares a statement at its
    fifth execution, and PostgreSQL then keeps one generic plan for it,
    costed on the tables as they were at that moment: on a new ledger (a
    few pages, or none) that plan reads the settle's rows by scanning the
    whole ledger and matching the keys in a hash. Nothing replans it until
    an ANALYZE of the ledger, so without autovacuum each round read every
    email ever sent (3.4 ms a round at 20,000). Unprepared, each execution
    is planned on the ledger's current size (PostgreSQL reads it from the
    file, whatever the statistics say) and goes by the key's index."""
    sql, values = statement
    driver: Any = conn.connection.driver_connection
    driver.autocommit = True  # the statement is the transaction
    try:
        with closing(driver.cursor()) as cursor:
            cursor.execute(sql, values, prepare=False)
            return {row[0] for row in cursor.fetchall()}
    finally:
        driver.autocommit = False  # as SQLAlchemy expects it between transactions


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
    values.update(column_arrays(dialect, _ANSWERED, [settle_values(a) for a in answers]))
    return round_sql(dialect), values
