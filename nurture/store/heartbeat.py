"""The workers' heartbeat: one row per worker with its last tick.

The worker writes it after every dispatch pass; ``/healthz`` reads it to show
how long ago each worker last ticked and what its last error was.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select, text, update
from sqlalchemy.engine import Connection

from nurture.store.tables import WorkerTickRow

TICKS = WorkerTickRow.__table__  # type: ignore[attr-defined]


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


def check_database(conn: Connection) -> None:
    """The cheapest statement that proves the database answers (raises when it does not)."""
    conn.execute(text("SELECT 1"))


def worker_ticks(conn: Connection) -> list[Tick]:
    """Every worker's last tick, the most recent first."""
    rows = conn.execute(select(TICKS).order_by(TICKS.c.last_tick_at.desc()))
    return [Tick(row.worker_id, row.started_at, row.last_tick_at, row.last_error) for row in rows]
