"""A partial index of the enrollments a worker holds: ``claimed_by``.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01

A worker renews the lease of everything it holds with ``WHERE claimed_by =
:me`` (``nurture.store.reservations.renew_leases``: its claimed enrollments,
and its reserved sends through them). Without an index each renewal read the
whole enrollment table: 0.36 s of a 1.39 s tick at 1,000,000 enrollments
(``benchmarks/tick.py``), nothing at 10,000. Only claimed rows have a
``claimed_by`` (a batch sets it back to NULL when it lets go), so the index
holds a few batches' rows whatever the table's size, and a claim or a release
adds or removes one entry per enrollment.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CLAIMED = "claimed_by IS NOT NULL"


def upgrade() -> None:
    op.create_index(
        "ix_enrollment_claimed_by",
        "enrollment",
        ["claimed_by"],
        sqlite_where=sa.text(CLAIMED),
        postgresql_where=sa.text(CLAIMED),
    )


def downgrade() -> None:
    op.drop_index("ix_enrollment_claimed_by", table_name="enrollment")
