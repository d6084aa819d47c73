"""The admins' tables: who may log in, and what they did.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

* ``admin_user``: a name, an Argon2 password hash, the zone pages show times
  in, the count of failed logins that makes the next attempt wait, and a
  session epoch that logging out raises (sessions of an older epoch are over).
* ``admin_action``: the record of what an admin did (resolved a send, resumed
  a sequence, erased a person, sent a test), with who and when.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import nurture.store.types

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, nurture.store.types.UTCDateTime(), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "admin_user",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("password_hash", sa.String(length=500), nullable=False),
        sa.Column("zone", sa.String(length=64), nullable=False),
        _ts("created_at"),
        _ts("last_login_at", nullable=True),
        sa.Column("failed_logins", sa.Integer(), nullable=False),
        _ts("last_failed_at", nullable=True),
        sa.Column("session_epoch", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_admin_user"),
        sa.UniqueConstraint("name", name="uq_admin_user_name"),
    )
    op.create_table(
        "admin_action",
        sa.Column("id", sa.Integer(), nullable=False),
        _ts("at"),
        sa.Column("admin", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=50), nullable=False),
        sa.Column("target", sa.String(length=400), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_admin_action"),
    )
    op.create_index("ix_admin_action_at", "admin_action", ["at"])


def downgrade() -> None:
    op.drop_index("ix_admin_action_at", table_name="admin_action")
    op.drop_table("admin_action")
    op.drop_table("admin_user")
