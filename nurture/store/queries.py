"""The SQL that matters, named and explained. The dispatcher calls these; it
writes no SQL of its own.

Everything here is SQLAlchemy Core on the tables' ``__table__`` objects: the
dispatcher's hot path moves thousands of rows a second and must not pay for ORM
identity maps and per-object refreshes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, and_, func, insert, or_, select, update
from sqlalchemy.engine import Connection, Row
from sqlalchemy.sql.elements import ColumnElement

from nurture.core import decisions as core
from nurture.core.vocabulary import EnrollmentStatus, EventKind, SendStatus
from nurture.store.arrays import among
from nurture.store.chunks import chunked
from nurture.store.tables import (
    EnrollmentRow,
    EventRow,
    SendRow,
    SequenceStateRow,
    SequenceVersionRow,
    SubscriberRow,
    SuppressionRow,
)

ENROLLMENT: Table = EnrollmentRow.__table__  # type: ignore[attr-defined]
SEND: Table = SendRow.__table__  # type: ignore[attr-defined]
SUBSCRIBER: Table = SubscriberRow.__table__  # type: ignore[attr-defined]
EVENT: Table = EventRow.__table__  # type: ignore[attr-defined]
SUPPRESSION: Table = SuppressionRow.__table__  # type: ignore[attr-defined]
SEQUENCE_STATE: Table = SequenceStateRow.__table__  # type: ignore[attr-defined]
SEQUENCE_VERSION: Table = SequenceVersionRow.__table__  # type: ignore[attr-defined]

# Events the decision function reads (engagement, goal, leaving).
DECISION_EVENT_KINDS = (
    EventKind.OPENED,
    EventKind.CLICKED,
    EventKind.PURCHASED,
    EventKind.UNSUBSCRIBED,
)


def claim_due_enrollments(
    conn: Connection,
    *,
    now: datetime,
    lease_until: datetime,
    worker_id: str,
    sequence_ids: Collection[str],
    limit: int,
    lease_now: datetime | None = None,
) -> list[int]:
    """Claim up to ``limit`` due enrollments for ``worker_id``; return their ids.

    Due means ``status = 'active' AND next_due_at <= now``, a range scan on
    ``ix_enrollment_due (status, next_due_at, id)``, oldest first (then by id)
    so late work is not starved; the index gives that order, so the claim
    reads about ``limit`` rows however many are due. A row is claimable when
    nobody holds it or its lease expired; leases are times on the workers'
    wall clock (``lease_now``, by default ``now``), which may differ from the
    pass's ``now``.

    Two dispatchers must never take the same row:

    * PostgreSQL: ``SELECT ... FOR UPDATE SKIP LOCKED`` inside the UPDATE, so a
      concurrent dispatcher skips rows another has locked instead of waiting.
    * SQLite: SQLAlchemy silently drops ``SKIP LOCKED`` there, so instead one
      conditional ``UPDATE ... WHERE id IN (...) AND <still claimable>``:
      SQLite runs one writer at a time, and the rows the statement actually
      changed (``RETURNING``) are the ones this dispatcher won.
    """
    if not sequence_ids:
        return []
    claimable = and_(
        ENROLLMENT.c.status == EnrollmentStatus.ACTIVE,
        ENROLLMENT.c.next_due_at <= now,
        ENROLLMENT.c.sequence_id.in_(list(sequence_ids)),
        or_(
            ENROLLMENT.c.claimed_until.is_(None),
            ENROLLMENT.c.claimed_until < (lease_now or now),
        ),
        # An email still in flight (its worker died or is late): the
        # reconcile job decides it first, or the planner would take the step
        # as done before anyone knows whether it went out.
        ~select(SEND.c.id)
        .where(SEND.c.enrollment_id == ENROLLMENT.c.id, SEND.c.status == SendStatus.RESERVED)
        .exists(),
    )
    due = (
        select(ENROLLMENT.c.id)
        .where(claimable)
        .order_by(ENROLLMENT.c.next_due_at, ENROLLMENT.c.id)
        .limit(limit)
    )
    condition: ColumnElement[bool]
    if conn.dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
        condition = ENROLLMENT.c.id.in_(due.scalar_subquery())
    else:
        condition = and_(ENROLLMENT.c.id.in_(due.scalar_subquery()), claimable)
    statement = (
        update(ENROLLMENT)
        .where(condition)
        .values(claimed_by=worker_id, claimed_until=lease_until)
        .returning(ENROLLMENT.c.id)
    )
    return list(conn.execute(statement).scalars().all())


# Only the columns a decision needs: every timestamp read is parsed and
# converted, which on the hot path is a measurable cost per row.
_ENROLLMENT_COLUMNS = (
    "id", "subscriber_id", "sequence_id", "position", "enrolled_at", "trigger_properties",
)  # fmt: skip
_SUBSCRIBER_COLUMNS = (
    "id", "email", "name", "first_name", "locale", "timezone", "tags", "attributes", "status",
)  # fmt: skip


def load_enrollments(conn: Connection, ids: Sequence[int]) -> list[Row[Any]]:
    columns = [ENROLLMENT.c[name] for name in _ENROLLMENT_COLUMNS]
    return list(conn.execute(select(*columns).where(among(conn, ENROLLMENT.c.id, ids))).all())


def load_subscribers(conn: Connection, ids: Iterable[int]) -> dict[int, Row[Any]]:
    columns = [SUBSCRIBER.c[name] for name in _SUBSCRIBER_COLUMNS]
    rows = conn.execute(select(*columns).where(among(conn, SUBSCRIBER.c.id, set(ids)))).all()
    return {row.id: row for row in rows}


def load_ledger(conn: Connection, enrollment_ids: Sequence[int]) -> dict[int, list[Row[Any]]]:
    """Every ledger row of these enrollments, in decision order."""
    columns = (
        "key",
        "enrollment_id",
        "step_id",
        "status",
        "due_at",
        "sent_at",
        "attempts",
        "next_attempt_at",
        "subject",
    )
    rows = conn.execute(
        select(*[SEND.c[name] for name in columns])
        .where(among(conn, SEND.c.enrollment_id, enrollment_ids))
        .order_by(SEND.c.enrollment_id, SEND.c.due_at, SEND.c.id)
    ).all()
    ledger: dict[int, list[Row[Any]]] = {}
    for row in rows:
        ledger.setdefault(row.enrollment_id, []).append(row)
    return ledger


def events_of(rows: Iterable[Row[Any]]) -> list[core.Event]:
    """The core's view of event rows (from :func:`load_decision_events`)."""
    return [
        core.Event(
            kind=EventKind(row.kind),
            at=row.occurred_at,
            step=row.step_id,
            product=row.product,
            sequence=row.sequence_id,
        )
        for row in rows
    ]


def load_decision_events(
    conn: Connection, subscriber_ids: Iterable[int], now: datetime
) -> dict[int, list[Row[Any]]]:
    """Engagement, purchases and unsubscribes up to ``now`` (index ix_event_subscriber_kind).

    Clicks and opens a link scanner or image proxy most likely made
    (``machine``) are not engagement: ``clicked()`` and ``opened()`` never see them.
    """
    rows = conn.execute(
        select(EVENT)
        .where(
            among(conn, EVENT.c.subscriber_id, set(subscriber_ids)),
            EVENT.c.kind.in_(DECISION_EVENT_KINDS),
            EVENT.c.occurred_at <= now,
            EVENT.c.machine.is_(False),
        )
        .order_by(EVENT.c.occurred_at)
    ).all()
    events: dict[int, list[Row[Any]]] = {}
    for row in rows:
        events.setdefault(row.subscriber_id, []).append(row)
    return events


ERASED_PREFIX = "sha256:"
"""How an erased address is kept on the suppression list: never the address."""


def hashed_address(email: str) -> str:
    """``sha256:<hex>`` of a normalised address: the suppression entry an erasure
    leaves, so the address is never mailed again although it is not stored."""
    return ERASED_PREFIX + hashlib.sha256(email.encode("utf-8")).hexdigest()


def suppression_keys(emails: Iterable[str]) -> dict[str, str]:
    """Every key under which one of ``emails`` may be suppressed (the address
    itself and its hashed form), mapped back to the address."""
    keys: dict[str, str] = {}
    for email in emails:
        keys[email] = email
        keys[hashed_address(email)] = email
    return keys


def any_erased(conn: Connection) -> bool:
    """Whether the suppression list holds any :func:`hashed_address` entry (a
    range scan of its unique index: the entries sort together by their prefix)."""
    after_prefix = ERASED_PREFIX[:-1] + chr(ord(ERASED_PREFIX[-1]) + 1)
    found = conn.execute(
        select(SUPPRESSION.c.email)
        .where(SUPPRESSION.c.email >= ERASED_PREFIX, SUPPRESSION.c.email < after_prefix)
        .limit(1)
    ).first()
    return found is not None


def suppressed_among(conn: Connection, emails: Iterable[str]) -> dict[str, str]:
    """Which of ``emails`` are suppressed (as written or as :func:`hashed_address`),
    with the reason.

    The hashed forms are looked up only when some address was ever erased: on
    the dispatcher's path this runs twice per batch, and hashing every address
    and doubling the list cost about 3 % of a pass for nothing on most lists.
    """
    wanted = set(emails)
    keys = suppression_keys(wanted) if any_erased(conn) else {email: email for email in wanted}
    if not keys:
        return {}
    if conn.dialect.name == "sqlite":
        # Through the driver: SQLAlchemy's expanding IN rebuilt a statement of
        # thousands of parameters per chunk of an import.
        found = sqlite_rows_in(
            conn, "SELECT email, reason FROM suppression WHERE email", list(keys)
        )
        return {keys[email]: reason for email, reason in found}
    rows = conn.execute(
        select(SUPPRESSION.c.email, SUPPRESSION.c.reason).where(
            among(conn, SUPPRESSION.c.email, keys)
        )
    ).all()
    return {keys[row.email]: row.reason for row in rows}


SQLITE_IN_PIECE = 5000
"""Values per SQLite ``IN`` list written for the driver (well below its limit
of bound variables)."""


def sqlite_rows_in(conn: Connection, query: str, values: Sequence[Any]) -> list[Any]:
    """SQLite: the rows of ``query IN (values)`` (``query`` ends with the
    column tested), through the driver, in pieces of :data:`SQLITE_IN_PIECE`."""
    found: list[Any] = []
    for piece in chunked(values, SQLITE_IN_PIECE):
        sql = f"{query} IN ({', '.join('?' * len(piece))})"
        found.extend(conn.exec_driver_sql(sql, piece).all())  # fetched at once, not row by row
    return found


def subscriber_statuses(conn: Connection, ids: Iterable[int]) -> dict[int, str]:
    rows = conn.execute(
        select(SUBSCRIBER.c.id, SUBSCRIBER.c.status).where(among(conn, SUBSCRIBER.c.id, set(ids)))
    ).all()
    return {row.id: row.status for row in rows}


def mark_subscribers(
    conn: Connection, ids: Iterable[int], status: str, reason: str, now: datetime
) -> None:
    wanted = list(set(ids))
    if wanted:
        conn.execute(
            update(SUBSCRIBER)
            .where(SUBSCRIBER.c.id.in_(wanted))
            .values(status=status, status_reason=reason, updated_at=now)
        )


def paused_sequences(conn: Connection) -> dict[str, str]:
    rows = conn.execute(
        select(SEQUENCE_STATE.c.sequence_id, SEQUENCE_STATE.c.paused_reason).where(
            SEQUENCE_STATE.c.paused.is_(True)
        )
    )
    return {row.sequence_id: row.paused_reason or "" for row in rows}


def failure_counters(conn: Connection, sequence_ids: Iterable[str]) -> dict[str, int]:
    rows = conn.execute(
        select(SEQUENCE_STATE.c.sequence_id, SEQUENCE_STATE.c.consecutive_failures).where(
            SEQUENCE_STATE.c.sequence_id.in_(list(set(sequence_ids)))
        )
    )
    return {row.sequence_id: row.consecutive_failures for row in rows}


def save_sequence_state(
    conn: Connection,
    sequence_id: str,
    *,
    consecutive_failures: int,
    paused: bool | None,
    reason: str | None,
    now: datetime,
) -> None:
    """Upsert one sequence's error budget (and pause it when ``paused``)."""
    values: dict[str, Any] = {"consecutive_failures": consecutive_failures, "updated_at": now}
    if paused is not None:
        values.update(paused=paused, paused_reason=reason)
    changed = conn.execute(
        update(SEQUENCE_STATE).where(SEQUENCE_STATE.c.sequence_id == sequence_id).values(values)
    )
    if not changed.rowcount:
        conn.execute(
            insert(SEQUENCE_STATE).values(
                sequence_id=sequence_id,
                paused=bool(paused),
                paused_reason=reason,
                consecutive_failures=consecutive_failures,
                updated_at=now,
            )
        )


def pause_sequence(conn: Connection, sequence_id: str, reason: str, now: datetime) -> bool:
    """Pause a sequence that is not paused yet (its error budget is left as
    it is); True when this call paused it. Insert-or-ignore first, so two
    workers pausing the same new sequence never collide on the primary key."""
    # RETURNING, not rowcount: psycopg reports -1 for ON CONFLICT DO NOTHING,
    # which read as "paused now" every time (and logged the pause again).
    inserted = conn.execute(
        insert_ignoring_duplicates(conn, SEQUENCE_STATE)
        .values(
            sequence_id=sequence_id,
            paused=True,
            paused_reason=reason,
            consecutive_failures=0,
            updated_at=now,
        )
        .returning(SEQUENCE_STATE.c.sequence_id)
    ).first()
    if inserted is not None:
        return True
    changed = conn.execute(
        update(SEQUENCE_STATE)
        .where(SEQUENCE_STATE.c.sequence_id == sequence_id, SEQUENCE_STATE.c.paused.is_(False))
        .values(paused=True, paused_reason=reason, updated_at=now)
    )
    return bool(changed.rowcount)


def resume_sequence(conn: Connection, sequence_id: str, now: datetime) -> bool:
    """Resume a paused sequence, with a fresh error budget (``nurture resume``
    and the problems page); False when it was not paused."""
    changed = conn.execute(
        update(SEQUENCE_STATE)
        .where(SEQUENCE_STATE.c.sequence_id == sequence_id, SEQUENCE_STATE.c.paused.is_(True))
        .values(paused=False, paused_reason=None, consecutive_failures=0, updated_at=now)
    )
    return bool(changed.rowcount)


def next_due_time(conn: Connection) -> datetime | None:
    value = conn.execute(
        select(func.min(ENROLLMENT.c.next_due_at)).where(
            ENROLLMENT.c.status == EnrollmentStatus.ACTIVE
        )
    ).scalar_one()
    return value if isinstance(value, datetime) or value is None else None


def remember_versions(
    conn: Connection, versions: dict[tuple[str, str], dict[str, Any]], now: datetime
) -> None:
    """Record sequence versions not seen before (``nurture plan`` compares them)."""
    if not versions:
        return
    known = {
        (row.sequence_id, row.version)
        for row in conn.execute(
            select(SEQUENCE_VERSION.c.sequence_id, SEQUENCE_VERSION.c.version).where(
                SEQUENCE_VERSION.c.sequence_id.in_({key[0] for key in versions})
            )
        )
    }
    rows = [
        {"sequence_id": sid, "version": version, "definition": definition, "first_seen_at": now}
        for (sid, version), definition in versions.items()
        if (sid, version) not in known
    ]
    if rows:
        # Several dispatchers may see a new version at once: the first insert
        # wins and the others do nothing (ON CONFLICT DO NOTHING / OR IGNORE).
        conn.execute(insert_ignoring_duplicates(conn, SEQUENCE_VERSION), rows)


def load_versions(conn: Connection, sequence_id: str) -> dict[str, dict[str, Any]]:
    rows = conn.execute(
        select(SEQUENCE_VERSION.c.version, SEQUENCE_VERSION.c.definition).where(
            SEQUENCE_VERSION.c.sequence_id == sequence_id
        )
    )
    return {row.version: row.definition for row in rows}


def insert_ignoring_duplicates(conn: Connection, table: Table) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING on PostgreSQL and SQLite."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing()
    if conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing()
    return insert(table)
