"""The workers' heartbeat: one row per worker with its last tick.

The worker writes it after every dispatch pass; ``/healthz``, ``/metrics`` and
the admin's dashboard read it to show how long ago each worker last ticked
and what its last error was. A worker id is new at every start, so a row must
not outlive its worker: a clean stop deletes it (:func:`forget`), and the
row of a worker that was killed is deleted by a live worker's reconcile once
it has been silent for :data:`FORGET_AFTER` (:func:`prune`). Until then it
shows as late: that worker stopped without saying so.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, insert, select, text, update
from sqlalchemy.engine import Connection

from nurture.store.tables import WorkerTickRow

TICKS = WorkerTickRow.__table__  # type: ignore[attr-defined]

FORGET_AFTER = timedelta(days=1)
"""How long a worker that stopped without a word stays listed (as late)."""


@dataclass(frozen=True)
class Tick:
    """A worker's last recorded tick."""

    worker_id: str
    started_at: datetime
    last_tick_at: datetime
    last_error: str | None


def record_tick(conn: Connection, worker_id: str, now: datetime, error: str | None) -> None:
    """Record that ``worker_id`` ticked at ``now`` (``error`` is None after a good pass)."""
    changed = conn.execute(
        update(TICKS)
        .where(TICKS.c.worker_id == worker_id)
        .values(last_tick_at=now, last_error=error)
    )
    if not changed.rowcount:
        conn.execute(
            insert(TICKS).values(
                worker_id=worker_id, started_at=now, last_tick_at=now, last_error=error
            )
        )


def forget(conn: Connection, worker_id: str) -> None:
    """``worker_id`` stopped cleanly: it is no longer a worker to watch."""
    conn.execute(delete(TICKS).where(TICKS.c.worker_id == worker_id))


def prune(conn: Connection, now: datetime, *, keep: str) -> int:
    """Delete the rows of workers silent for :data:`FORGET_AFTER` at ``now``
    (killed, never restarted under that id), never ``keep``'s (the caller's
    own: on the demo's accelerated clock a day passes between two of its
    ticks); returns how many."""
    return conn.execute(
        delete(TICKS).where(TICKS.c.last_tick_at < now - FORGET_AFTER, TICKS.c.worker_id != keep)
    ).rowcount


def check_database(conn: Connection) -> None:
    """The cheapest statement that proves the database answers (raises when it does not)."""
    conn.execute(text("SELECT 1"))


def worker_ticks(conn: Connection) -> list[Tick]:
    """Every worker's last tick, the most recent first."""
    rows = conn.execute(select(TICKS).order_by(TICKS.c.last_tick_at.desc()))
    return [Tick(row.worker_id, row.started_at, row.last_tick_at, row.last_error) for row in rows]
