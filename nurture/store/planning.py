"""The reads behind ``nurture plan``.

A plan looks at every active enrollment, so at 10,000 subscribers and more it
must not hold them all at once: :func:`active_enrollments` streams them in
keyset batches (``enrollment.id > :last ORDER BY id LIMIT :n``, a range scan
on the primary key), each batch with what the dispatcher reads to decide
about it (ledger, decision events, suppressions) as plain values, and the
caller aggregates as it goes. Counts per version and status are one
``GROUP BY``. Everything is read through one connection from
:func:`snapshot`: on PostgreSQL in a REPEATABLE READ transaction, so every
batch sees the same moment; on SQLite each statement sees the latest commit
(a dispatch pass running meanwhile may move a few enrollments on).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection, Engine, Row
from sqlalchemy.sql.elements import ColumnElement

from nurture.core.decisions import Event, LedgerEntry
from nurture.core.subscriber import Subscriber
from nurture.core.vocabulary import EnrollmentStatus
from nurture.store import queries
from nurture.store.batches import ledger_entry

BATCH = 1000
"""Enrollments per keyset batch: big enough that the per-batch queries are
few, small enough that a batch's ledger and events stay a few MB."""


@dataclass(frozen=True)
class LiveEnrollment:
    """One enrollment as ``plan`` needs it: where it is, what its ledger and
    its subscriber's events say, and what could stop the dispatcher."""

    id: int
    sequence_id: str
    version: str
    status: str
    position: str | None
    enrolled_at: datetime
    next_due_at: datetime | None
    email: str
    subscriber_status: str
    suppressed: str | None
    """The suppression's reason, when the address is suppressed."""
    view: Subscriber
    ledger: tuple[LedgerEntry, ...]
    events: tuple[Event, ...]
    """Decision events up to the plan's ``now``."""


@dataclass(frozen=True)
class EnrollmentCount:
    sequence_id: str
    version: str
    status: str
    count: int


@contextmanager
def snapshot(engine: Engine) -> Iterator[Connection]:
    """One connection for every read of a plan (see the module docstring)."""
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            yield conn


def _enrollment_query(where: ColumnElement[bool]) -> Any:
    enrollment, subscriber = queries.ENROLLMENT, queries.SUBSCRIBER
    return (
        select(
            enrollment.c.id, enrollment.c.subscriber_id, enrollment.c.sequence_id,
            enrollment.c.sequence_version, enrollment.c.status, enrollment.c.position,
            enrollment.c.enrolled_at, enrollment.c.next_due_at, enrollment.c.trigger_properties,
            subscriber.c.email, subscriber.c.status.label("subscriber_status"),
            subscriber.c.name, subscriber.c.first_name, subscriber.c.locale,
            subscriber.c.timezone, subscriber.c.tags, subscriber.c.attributes,
        )
        .join(subscriber, subscriber.c.id == enrollment.c.subscriber_id)
        .where(where)
    )  # fmt: skip


def _complete(conn: Connection, rows: list[Row[Any]], now: datetime) -> list[LiveEnrollment]:
    """``rows`` with their ledgers, decision events and suppressions."""
    ledgers = queries.load_ledger(conn, [row.id for row in rows])
    events = queries.load_decision_events(conn, {row.subscriber_id for row in rows}, now)
    suppressed = queries.suppressed_among(conn, (row.email for row in rows))
    return [
        LiveEnrollment(
            id=row.id,
            sequence_id=row.sequence_id,
            version=row.sequence_version,
            status=row.status,
            position=row.position,
            enrolled_at=row.enrolled_at,
            next_due_at=row.next_due_at,
            email=row.email,
            subscriber_status=row.subscriber_status,
            suppressed=suppressed.get(row.email),
            view=replace(Subscriber.of(row), trigger_properties=dict(row.trigger_properties or {})),
            ledger=tuple(ledger_entry(entry) for entry in ledgers.get(row.id, ())),
            events=tuple(queries.events_of(events.get(row.subscriber_id, ()))),
        )
        for row in rows
    ]


def active_enrollments(
    conn: Connection, now: datetime, *, sequence_id: str | None = None, batch: int = BATCH
) -> Iterator[list[LiveEnrollment]]:
    """Every active enrollment (of ``sequence_id``, or of every sequence), in
    batches of at most ``batch``, in the order they were created."""
    enrollment = queries.ENROLLMENT
    last = 0
    while True:
        where: ColumnElement[bool] = (enrollment.c.status == EnrollmentStatus.ACTIVE) & (
            enrollment.c.id > last
        )
        if sequence_id is not None:
            where = where & (enrollment.c.sequence_id == sequence_id)
        rows = list(conn.execute(_enrollment_query(where).order_by(enrollment.c.id).limit(batch)))
        if not rows:
            return
        yield _complete(conn, rows, now)
        last = rows[-1].id


def enrollments_of(conn: Connection, email: str, now: datetime) -> list[LiveEnrollment]:
    """Every enrollment of the subscriber with this (normalised) address,
    whatever its status, oldest first."""
    enrollment, subscriber = queries.ENROLLMENT, queries.SUBSCRIBER
    rows = list(
        conn.execute(_enrollment_query(subscriber.c.email == email).order_by(enrollment.c.id))
    )
    return _complete(conn, rows, now) if rows else []


def enrollment_counts(conn: Connection, sequence_id: str | None = None) -> list[EnrollmentCount]:
    """Active and completed enrollments per sequence and version (the index on
    ``sequence_id`` narrows it to one sequence when asked)."""
    enrollment = queries.ENROLLMENT
    where: ColumnElement[bool] = enrollment.c.status.in_(
        [EnrollmentStatus.ACTIVE, EnrollmentStatus.COMPLETED]
    )
    if sequence_id is not None:
        where = where & (enrollment.c.sequence_id == sequence_id)
    rows = conn.execute(
        select(
            enrollment.c.sequence_id,
            enrollment.c.sequence_version,
            enrollment.c.status,
            func.count().label("n"),
        )
        .where(where)
        .group_by(enrollment.c.sequence_id, enrollment.c.sequence_version, enrollment.c.status)
    )
    return [EnrollmentCount(r.sequence_id, r.sequence_version, r.status, r.n) for r in rows]


def completed_emails(conn: Connection, sequence_id: str, version: str, limit: int) -> list[str]:
    """A few addresses of subscribers who completed ``sequence_id`` on ``version``."""
    if limit <= 0:
        return []
    enrollment, subscriber = queries.ENROLLMENT, queries.SUBSCRIBER
    rows = conn.execute(
        select(subscriber.c.email)
        .join(enrollment, subscriber.c.id == enrollment.c.subscriber_id)
        .where(
            enrollment.c.sequence_id == sequence_id,
            enrollment.c.sequence_version == version,
            enrollment.c.status == EnrollmentStatus.COMPLETED,
        )
        .order_by(enrollment.c.id)
        .limit(limit)
    )
    return [row.email for row in rows]


def recorded_versions(conn: Connection, sequence_ids: set[str]) -> dict[str, dict[str, Any]]:
    """Recorded definitions by sequence id, then version."""
    return {sid: queries.load_versions(conn, sid) for sid in sorted(sequence_ids)}


def paused(conn: Connection) -> dict[str, str]:
    """Sequences paused by their error budget, with the reason."""
    return queries.paused_sequences(conn)
