"""The SQL of the ingest API (:mod:`nurture.audience.tokens`,
:mod:`nurture.audience.ingest`): API tokens and app events.

Session-based like :mod:`nurture.store.audience`; nothing here commits.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete
from sqlmodel import Session, col, select

from nurture.store.tables import ApiTokenRow, AppEventRow

__all__ = [
    "add_app_event",
    "add_token",
    "app_event_by_id",
    "app_events_of",
    "delete_token",
    "token_by_hash",
    "token_by_name",
    "tokens",
]


# --------------------------------------------------------------------------- tokens


def add_token(session: Session, values: Mapping[str, Any]) -> ApiTokenRow:
    """Insert one token row (flushed: a taken name or hash fails here)."""
    row = ApiTokenRow(**values)
    session.add(row)
    session.flush()
    return row


def token_by_hash(session: Session, token_hash: str) -> ApiTokenRow | None:
    """The token whose SHA-256 is ``token_hash``, or None."""
    return session.exec(select(ApiTokenRow).where(ApiTokenRow.token_hash == token_hash)).first()


def token_by_name(session: Session, name: str) -> ApiTokenRow | None:
    return session.exec(select(ApiTokenRow).where(ApiTokenRow.name == name)).first()


def tokens(session: Session) -> list[ApiTokenRow]:
    """Every token, in the order created."""
    return list(session.exec(select(ApiTokenRow).order_by(col(ApiTokenRow.id))))


def delete_token(session: Session, name: str) -> bool:
    """Delete the token called ``name``; False when there is none."""
    result = session.execute(delete(ApiTokenRow).where(col(ApiTokenRow.name) == name))
    return bool(result.rowcount)  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- app events


def app_event_by_id(session: Session, event_id: str) -> AppEventRow | None:
    """The app event recorded under the caller's ``event_id``, or None."""
    return session.exec(select(AppEventRow).where(AppEventRow.event_id == event_id)).first()


def add_app_event(session: Session, values: Mapping[str, Any]) -> AppEventRow:
    """Insert one app event (flushed: a replayed ``event_id`` fails here)."""
    row = AppEventRow(**values)
    session.add(row)
    session.flush()
    return row


def app_events_of(session: Session, subscriber_id: int | None) -> list[AppEventRow]:
    """Every app event of one subscriber, oldest first."""
    query = (
        select(AppEventRow)
        .where(AppEventRow.subscriber_id == subscriber_id)
        .order_by(col(AppEventRow.occurred_at), col(AppEventRow.id))
    )
    return list(session.exec(query))
