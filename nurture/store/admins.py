"""The SQL of admins (:mod:`nurture.admin.users`): admin users and the record
of what they did. Session-based like :mod:`nurture.store.api`; nothing here
commits."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import delete
from sqlmodel import Session, col, select

from nurture.store.tables import AdminActionRow, AdminUserRow

__all__ = [
    "add_action",
    "add_user",
    "delete_user",
    "recent_actions",
    "user_by_id",
    "user_by_name",
    "users",
]


def add_user(session: Session, values: Mapping[str, Any]) -> AdminUserRow:
    """Insert one admin (flushed: a taken name fails here)."""
    row = AdminUserRow(**values)
    session.add(row)
    session.flush()
    return row


def user_by_name(session: Session, name: str) -> AdminUserRow | None:
    return session.exec(select(AdminUserRow).where(AdminUserRow.name == name)).first()


def user_by_id(session: Session, user_id: int) -> AdminUserRow | None:
    return session.get(AdminUserRow, user_id)


def users(session: Session) -> list[AdminUserRow]:
    """Every admin, by name."""
    return list(session.exec(select(AdminUserRow).order_by(col(AdminUserRow.name))).all())


def delete_user(session: Session, name: str) -> bool:
    """Delete the admin ``name``; False when there was none."""
    result = session.execute(delete(AdminUserRow).where(col(AdminUserRow.name) == name))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def add_action(
    session: Session,
    *,
    at: datetime,
    admin: str,
    action: str,
    target: str = "",
    detail: Mapping[str, Any] | None = None,
) -> AdminActionRow:
    """Record that ``admin`` did ``action`` to ``target`` at ``at``."""
    row = AdminActionRow(
        at=at, admin=admin, action=action, target=target[:400], detail=dict(detail or {})
    )
    session.add(row)
    session.flush()
    return row


def recent_actions(session: Session, limit: int = 50) -> list[AdminActionRow]:
    """The newest recorded actions first."""
    query = select(AdminActionRow).order_by(col(AdminActionRow.id).desc()).limit(limit)
    return list(session.exec(query).all())
