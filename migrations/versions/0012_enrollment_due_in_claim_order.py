"""What is due, indexed in the claim's order: ``(status, next_due_at, id)``.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03

The claim takes the oldest due enrollments first, ``ORDER BY next_due_at,
id``. ``ix_enrollment_due`` held ``(status, next_due_at)``: on SQLite the
row id ends every index, so its order was already the claim's, but
PostgreSQL read every due row and sorted them for each batch of 1,000.
When many are due at one instant (an import enrolls everyone at once),
each batch's claim grew with the backlog: 45-60 ms a batch with 100,000
due, 20-25 ms with this index, which gives the rows in the claim's order
and lets the claim stop at its limit.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_enrollment_due", table_name="enrollment")
    op.create_index("ix_enrollment_due", "enrollment", ["status", "next_due_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_enrollment_due", table_name="enrollment")
    op.create_index("ix_enrollment_due", "enrollment", ["status", "next_due_at"])
