"""The SQL of the send log: one row per ledger entry (``send``), newest first.

One set of queries serves the admin pages, the admin JSON API, the CSV export
and ``nurture log`` (:mod:`nurture.admin.sendlog` is the service over them).

**Keyset pagination.** Pages are ordered by ``(decided_at DESC, id DESC)`` and
continue from a position ``(decided_at, id)`` instead of an ``OFFSET``, so the
500th page costs what the first does. The position is written as
``decided_at <= :t AND (decided_at < :t OR id < :id)``: the first term is an
index range, the second only drops the ties at its edge, on SQLite and
PostgreSQL alike. Each filter has an index whose order is the page's order
(migration 0007):

* no filter, ``step``, a date range: ``ix_send_decided (decided_at, id)``;
* ``sequence``: ``ix_send_sequence_decided (sequence_id, decided_at, id)``;
* ``email``: the address's id first (unique index), then
  ``ix_send_subscriber_decided (subscriber_id, decided_at, id)``;
* ``status``: ``failed``, ``unknown``, ``retry`` and ``skipped`` rows are in
  the partial ``ix_send_settled_badly (status, decided_at, id)``. ``queued``,
  ``reserved`` and ``sent`` are left out of it on purpose: every email passes
  through them on the dispatcher's hot path, where each index on ``status``
  costs a page write per change (see migration 0003). ``sent`` is most rows,
  so its pages fill from ``ix_send_decided`` at once; ``queued`` and
  ``reserved`` rows are the few in flight.

``decided_at`` changes only when a step is decided again (a retry), never on
the queued → reserved → sent path, so these indexes cost the dispatcher only
what the indexes they replace did.

Nothing here commits; every function takes a connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql import Select

from nurture.store.queries import ENROLLMENT, EVENT, SEND, SEQUENCE_VERSION, SUBSCRIBER
from nurture.store.signup import confirmation_log

__all__ = [
    "BADLY_SETTLED",
    "Position",
    "SendFilter",
    "events_of",
    "latest_events",
    "page",
    "send_row",
    "stored_definition",
    "with_confirmations",
]

BADLY_SETTLED = ("failed", "unknown", "retry", "skipped")
"""The statuses the partial index ``ix_send_settled_badly`` holds."""


@dataclass(frozen=True)
class SendFilter:
    """What to list. ``email`` is normalised (lower case); ``since`` and
    ``until`` bound ``decided_at`` (``since <= decided_at < until``)."""

    status: str | None = None
    sequence: str | None = None
    step: str | None = None
    email: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    @property
    def empty(self) -> bool:
        return all(
            value is None
            for value in (
                self.status,
                self.sequence,
                self.step,
                self.email,
                self.since,
                self.until,
            )
        )


@dataclass(frozen=True)
class Position:
    """A place in the log's order: a row's ``(decided_at, id)``."""

    decided_at: datetime
    id: int


_COLUMNS = (
    SEND.c.id,
    SEND.c.key,
    SEND.c.decided_at,
    SEND.c.sent_at,
    SEND.c.status,
    SEND.c.reason,
    SEND.c.attempts,
    SEND.c.sequence_id,
    SEND.c.sequence_version,
    SEND.c.step_id,
    SEND.c.subject,
    SEND.c.provider_message_id,
    SEND.c.subscriber_id,
    SUBSCRIBER.c.email,
    SUBSCRIBER.c.name,
)


def _filtered(query: Select[Any], where: SendFilter) -> Select[Any]:
    """``query`` narrowed by ``where``: every value a bound parameter."""
    if where.status is not None:
        query = query.where(SEND.c.status == where.status)
    if where.sequence is not None:
        query = query.where(SEND.c.sequence_id == where.sequence)
    if where.step is not None:
        query = query.where(SEND.c.step_id == where.step)
    if where.email is not None:
        subscriber = (
            select(SUBSCRIBER.c.id).where(SUBSCRIBER.c.email == where.email).scalar_subquery()
        )
        query = query.where(SEND.c.subscriber_id == subscriber)
    if where.since is not None:
        query = query.where(SEND.c.decided_at >= where.since)
    if where.until is not None:
        query = query.where(SEND.c.decided_at < where.until)
    return query


def page(
    conn: Connection,
    where: SendFilter,
    *,
    limit: int,
    older_than: Position | None = None,
    newer_than: Position | None = None,
) -> list[dict[str, Any]]:
    """Up to ``limit`` rows matching ``where``, newest first: the newest ones,
    those just older than ``older_than``, or those just newer than
    ``newer_than`` (still returned newest first)."""
    query = _filtered(
        select(*_COLUMNS).join(SUBSCRIBER, SUBSCRIBER.c.id == SEND.c.subscriber_id), where
    )
    if newer_than is not None:
        at, pid = newer_than.decided_at, newer_than.id
        query = query.where(
            SEND.c.decided_at >= at, or_(SEND.c.decided_at > at, SEND.c.id > pid)
        ).order_by(SEND.c.decided_at.asc(), SEND.c.id.asc())
        rows = [dict(row._mapping) for row in conn.execute(query.limit(limit))]
        rows.reverse()
        return rows
    if older_than is not None:
        at, pid = older_than.decided_at, older_than.id
        query = query.where(SEND.c.decided_at <= at, or_(SEND.c.decided_at < at, SEND.c.id < pid))
    query = query.order_by(SEND.c.decided_at.desc(), SEND.c.id.desc()).limit(limit)
    return [dict(row._mapping) for row in conn.execute(query)]


def latest_events(conn: Connection, send_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """The latest event (by ``occurred_at``, then id) of each of these sends
    that has one: ``kind``, ``occurred_at``, ``machine`` (``ix_event_send_id``)."""
    if not send_ids:
        return {}
    query = (
        select(EVENT.c.send_id, EVENT.c.kind, EVENT.c.occurred_at, EVENT.c.machine)
        .where(EVENT.c.send_id.in_(list(send_ids)))
        .order_by(EVENT.c.send_id, EVENT.c.occurred_at, EVENT.c.id)
    )
    latest: dict[int, dict[str, Any]] = {}
    for row in conn.execute(query):
        latest[row.send_id] = {
            "kind": row.kind,
            "occurred_at": row.occurred_at,
            "machine": bool(row.machine),
        }
    return latest


def send_row(conn: Connection, send_id: int) -> dict[str, Any] | None:
    """One ledger row with everything its detail shows: the send, its
    resolution, the subscriber's fields and the enrollment's trigger properties."""
    query = (
        select(
            *_COLUMNS,
            SEND.c.due_at,
            SEND.c.transport,
            SEND.c.next_attempt_at,
            SEND.c.resolution,
            SEND.c.resolved_by,
            SEND.c.resolved_at,
            SUBSCRIBER.c.first_name,
            SUBSCRIBER.c.locale,
            SUBSCRIBER.c.timezone,
            SUBSCRIBER.c.tags,
            SUBSCRIBER.c.attributes,
            ENROLLMENT.c.trigger_properties,
        )
        .join(SUBSCRIBER, SUBSCRIBER.c.id == SEND.c.subscriber_id)
        .outerjoin(ENROLLMENT, ENROLLMENT.c.id == SEND.c.enrollment_id)
        .where(SEND.c.id == send_id)
    )
    found = conn.execute(query).first()
    return None if found is None else dict(found._mapping)


def events_of(conn: Connection, send_id: int) -> list[dict[str, Any]]:
    """Every event of one send, in the order they happened."""
    query = (
        select(
            EVENT.c.id,
            EVENT.c.kind,
            EVENT.c.occurred_at,
            EVENT.c.received_at,
            EVENT.c.machine,
            EVENT.c.user_agent,
            EVENT.c.payload,
        )
        .where(EVENT.c.send_id == send_id)
        .order_by(EVENT.c.occurred_at, EVENT.c.id)
    )
    return [dict(row._mapping) for row in conn.execute(query)]


def stored_definition(conn: Connection, sequence_id: str, version: str) -> dict[str, Any] | None:
    """The stored definition of one version of a sequence, or None."""
    found = conn.execute(
        select(SEQUENCE_VERSION.c.definition).where(
            and_(
                SEQUENCE_VERSION.c.sequence_id == sequence_id,
                SEQUENCE_VERSION.c.version == version,
            )
        )
    ).scalar_one_or_none()
    return dict(found) if isinstance(found, dict) else None


def with_confirmations(conn: Connection, where: SendFilter, *, limit: int) -> list[dict[str, Any]]:
    """The newest ``limit`` rows of :func:`page` merged with the confirmation
    emails of sign-up (:func:`nurture.store.signup.confirmation_log`, listed as
    sequence ``signup``, step ``confirmation``): what ``nurture log`` shows.
    Confirmation rows have no ledger id; they carry ``"confirmation": True``."""
    rows = page(conn, where, limit=limit)
    for row in rows:
        row["confirmation"] = False
    if where.sequence in (None, "signup") and where.step in (None, "confirmation"):
        confirmations = confirmation_log(
            conn,
            email=where.email,
            status=where.status,
            limit=limit,
            since=where.since,
            until=where.until,
        )
        for row in confirmations:
            row["confirmation"] = True
            row["subscriber_id"] = None
        rows += confirmations
    rows.sort(key=lambda row: (row["decided_at"], row["id"]), reverse=True)
    return rows[:limit]
