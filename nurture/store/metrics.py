"""What ``GET /metrics`` reads from the database at scrape time.

Read from the database, not counted in memory, so that every web process
behind a load balancer answers the same numbers, whichever worker sent the
emails. Each read is one statement:

* :func:`ledger_counts`: ``sent``, ``failed`` and ``unknown`` ledger rows per
  sequence, one ``GROUP BY`` (the ledger has no index on ``status`` on
  purpose — it would be rewritten three times per email on the dispatcher's
  hot path — so this reads the table; the collector caches the answer for a
  few seconds, see :mod:`nurture.ops.metrics`);
* :func:`queue_depth`: active enrollments due now, the range scan on
  ``ix_enrollment_due`` the claim uses;
* :func:`heartbeats`: the workers' last ticks (one row per worker).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from nurture.core.vocabulary import SendStatus
from nurture.store.heartbeat import Tick, worker_ticks
from nurture.store.queries import SEND
from nurture.store.reports import due_enrollment_count

COUNTED: tuple[SendStatus, ...] = (SendStatus.SENT, SendStatus.FAILED, SendStatus.UNKNOWN)


def ledger_counts(
    conn: Connection, statuses: Iterable[str] = COUNTED
) -> dict[tuple[str, str], int]:
    """``{(sequence_id, status): rows}`` for the ledger rows in ``statuses``."""
    wanted = [str(status) for status in statuses]
    rows = conn.execute(
        select(SEND.c.sequence_id, SEND.c.status, func.count())
        .where(SEND.c.status.in_(wanted))
        .group_by(SEND.c.sequence_id, SEND.c.status)
    )
    return {(row[0], row[1]): int(row[2]) for row in rows}


def queue_depth(conn: Connection, now: datetime) -> int:
    """Active enrollments due at ``now``: the work the workers have not claimed yet
    (claimed ones count too until their pass moves them on)."""
    return due_enrollment_count(conn, now)


def heartbeats(conn: Connection) -> list[Tick]:
    """Every worker's last tick."""
    return worker_ticks(conn)
