"""The reads behind the admin's subscriber pages and ``nurture explain``: a
search over addresses and names, and one subscriber's whole file (profile,
enrollments with their ledgers, the events the decision function reads,
suppression) as plain values.

The search is a case-insensitive prefix match on the address or the name,
with ``%``, ``_`` and ``\\`` in the typed text escaped and the text bound as a
parameter: whatever is typed is only ever a prefix, never SQL or a pattern.
Pages are keyset-paginated by id (``id > :after ORDER BY id LIMIT :n``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.engine import Connection, Row

from nurture.core.decisions import Event
from nurture.store import queries

__all__ = [
    "EnrollmentRecord",
    "LedgerRecord",
    "SubscriberFile",
    "SubscriberHit",
    "like_prefix",
    "search",
    "subscriber_file",
    "subscriber_id_of",
]


@dataclass(frozen=True)
class SubscriberHit:
    id: int
    email: str
    name: str
    status: str
    created_at: datetime


@dataclass(frozen=True)
class LedgerRecord:
    """One ``send`` row as the explain view shows it (the recorded decision)."""

    id: int
    key: str
    step_id: str
    status: str
    reason: str | None
    due_at: datetime
    decided_at: datetime
    sent_at: datetime | None
    attempts: int
    next_attempt_at: datetime | None
    subject: str | None
    sequence_version: str
    resolution: str | None


@dataclass(frozen=True)
class EnrollmentRecord:
    id: int
    sequence_id: str
    version: str
    status: str
    status_reason: str | None
    position: str | None
    enrolled_at: datetime
    next_due_at: datetime | None
    trigger_properties: dict[str, Any]
    ledger: tuple[LedgerRecord, ...]


@dataclass(frozen=True)
class SubscriberFile:
    """Everything the explain view reads about one subscriber."""

    row: Row[Any]
    """Every column of the ``subscriber`` row."""
    enrollments: tuple[EnrollmentRecord, ...]
    events: tuple[Event, ...]
    """Engagement, purchases and unsubscribes up to ``now`` (what the dispatcher reads)."""
    suppressed: str | None
    """The suppression's reason, when the address is suppressed."""
    paused: dict[str, str] = field(default_factory=dict)
    """Paused sequences among the subscriber's, with the reason."""


def like_prefix(text: str) -> str:
    """``text`` as a LIKE prefix pattern (escape character ``\\``), lower-cased."""
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


def search(conn: Connection, text: str, *, after: int = 0, limit: int = 50) -> list[SubscriberHit]:
    """Subscribers whose address or name starts with ``text`` (any case), by id
    after ``after``; every subscriber when ``text`` is empty."""
    subscriber = queries.SUBSCRIBER
    query = select(
        subscriber.c.id,
        subscriber.c.email,
        subscriber.c.name,
        subscriber.c.status,
        subscriber.c.created_at,
    ).where(subscriber.c.id > after)
    if text:
        pattern = like_prefix(text)
        query = query.where(
            or_(
                func.lower(subscriber.c.email).like(pattern, escape="\\"),
                func.lower(subscriber.c.name).like(pattern, escape="\\"),
            )
        )
    rows = conn.execute(query.order_by(subscriber.c.id).limit(limit))
    return [SubscriberHit(r.id, r.email, r.name or "", r.status, r.created_at) for r in rows]


def subscriber_id_of(conn: Connection, email: str) -> int | None:
    """The id of the subscriber stored under ``email`` (normalised), or None."""
    subscriber = queries.SUBSCRIBER
    found = conn.execute(select(subscriber.c.id).where(subscriber.c.email == email)).first()
    return None if found is None else int(found[0])


_LEDGER_COLUMNS = (
    "id", "key", "enrollment_id", "step_id", "status", "reason", "due_at", "decided_at",
    "sent_at", "attempts", "next_attempt_at", "subject", "sequence_version", "resolution",
)  # fmt: skip


def _ledgers(conn: Connection, enrollment_ids: Sequence[int]) -> dict[int, list[LedgerRecord]]:
    send = queries.SEND
    rows = conn.execute(
        select(*[send.c[name] for name in _LEDGER_COLUMNS])
        .where(send.c.enrollment_id.in_(list(enrollment_ids)))
        # The order the dispatcher reads them in (queries.load_ledger).
        .order_by(send.c.enrollment_id, send.c.due_at, send.c.id)
    )
    ledgers: dict[int, list[LedgerRecord]] = {}
    for r in rows:
        ledgers.setdefault(r.enrollment_id, []).append(
            LedgerRecord(
                r.id,
                r.key,
                r.step_id,
                r.status,
                r.reason,
                r.due_at,
                r.decided_at,
                r.sent_at,
                r.attempts,
                r.next_attempt_at,
                r.subject,
                r.sequence_version,
                r.resolution,
            )
        )
    return ledgers


def subscriber_file(conn: Connection, subscriber_id: int, now: datetime) -> SubscriberFile | None:
    """One subscriber's file, or None when there is no such subscriber."""
    subscriber, enrollment = queries.SUBSCRIBER, queries.ENROLLMENT
    row = conn.execute(select(subscriber).where(subscriber.c.id == subscriber_id)).first()
    if row is None:
        return None
    rows = list(
        conn.execute(
            select(enrollment)
            .where(enrollment.c.subscriber_id == subscriber_id)
            .order_by(enrollment.c.enrolled_at, enrollment.c.id)
        )
    )
    ledgers = _ledgers(conn, [r.id for r in rows]) if rows else {}
    enrollments = tuple(
        EnrollmentRecord(
            r.id,
            r.sequence_id,
            r.sequence_version,
            r.status,
            r.status_reason,
            r.position,
            r.enrolled_at,
            r.next_due_at,
            dict(r.trigger_properties or {}),
            tuple(ledgers.get(r.id, ())),
        )
        for r in rows
    )
    events = queries.load_decision_events(conn, [subscriber_id], now).get(subscriber_id, [])
    suppressed = queries.suppressed_among(conn, [row.email]).get(row.email)
    paused = queries.paused_sequences(conn)
    mine = {e.sequence_id for e in enrollments}
    return SubscriberFile(
        row,
        enrollments,
        tuple(queries.events_of(events)),
        suppressed,
        {sid: reason for sid, reason in paused.items() if sid in mine},
    )
