"""The send log's indexes: keyset pages newest first, per filter.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

The admin send log (``nurture.store.sendlog``) pages by ``(decided_at DESC,
id DESC)``. Three single-column indexes become composite ones that end in that
order, so a filtered page is an index range read backwards, whatever page it
is (the old ones are their prefixes, so every query that used them still can):

* ``ix_send_decided_at`` -> ``ix_send_decided (decided_at, id)``;
* ``ix_send_sequence_id`` -> ``ix_send_sequence_decided (sequence_id, decided_at, id)``;
* ``ix_send_subscriber_id`` -> ``ix_send_subscriber_decided (subscriber_id, decided_at, id)``.

And one partial index per status for the rows that went wrong (``failed``,
``unknown``, ``retry``, ``skipped``): ``ix_send_settled_badly``. ``queued``,
``reserved`` and ``sent`` stay out of it: every email passes through them on
the dispatcher's hot path (migration 0003 removed the index on every status
for that reason).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SETTLED_BADLY = "status = 'failed' OR status = 'unknown' OR status = 'retry' OR status = 'skipped'"


def upgrade() -> None:
    op.create_index("ix_send_decided", "send", ["decided_at", "id"])
    op.create_index("ix_send_sequence_decided", "send", ["sequence_id", "decided_at", "id"])
    op.create_index("ix_send_subscriber_decided", "send", ["subscriber_id", "decided_at", "id"])
    op.create_index(
        "ix_send_settled_badly",
        "send",
        ["status", "decided_at", "id"],
        sqlite_where=sa.text(SETTLED_BADLY),
        postgresql_where=sa.text(SETTLED_BADLY),
    )
    op.drop_index("ix_send_decided_at", table_name="send")
    op.drop_index("ix_send_sequence_id", table_name="send")
    op.drop_index("ix_send_subscriber_id", table_name="send")


def downgrade() -> None:
    op.create_index("ix_send_subscriber_id", "send", ["subscriber_id"])
    op.create_index("ix_send_sequence_id", "send", ["sequence_id"])
    op.create_index("ix_send_decided_at", "send", ["decided_at"])
    op.drop_index("ix_send_settled_badly", table_name="send")
    op.drop_index("ix_send_subscriber_decided", table_name="send")
    op.drop_index("ix_send_sequence_decided", table_name="send")
    op.drop_index("ix_send_decided", table_name="send")
