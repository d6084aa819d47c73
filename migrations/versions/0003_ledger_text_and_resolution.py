"""Ledger text holds whatever a render or a provider produces; `unknown` sends
can be resolved by an admin, with who, when and why; the ledger gets a `queued`
status; the index on every send status becomes one on the emails in flight.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30

A subject built from a subscriber's attribute, or a provider's error message,
has no natural length limit. As VARCHAR(1000)/(2000) on PostgreSQL one such
value failed the whole batch it was in (SQLite ignores the length). These
columns become TEXT.

``send.resolution``/``resolved_by``/``resolved_at`` record how an admin
settled a send whose outcome was unknown (``nurture sends resolve``): marked
as sent, sent again, or given up.

The ledger gets the status ``queued``: planned and rendered, not yet handed to
the provider (an email becomes ``reserved`` only in the moment before its
provider call). The CHECK on ``send.status`` is rebuilt with the word (batch
mode on SQLite, as in 0002); the downgrade turns ``queued`` rows into
``retry`` rows due at once, which is what 0002's code would make of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import nurture.store.types

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, column, old length): made TEXT by upgrade, back to VARCHAR by downgrade.
WIDENED = (
    ("subscriber", "status_reason", 500),
    ("enrollment", "status_reason", 500),
    ("send", "reason", 2000),
    ("send", "subject", 1000),
    ("sequence_state", "paused_reason", 2000),
    ("worker_tick", "last_error", 2000),
)


# The send statuses after this revision, in the order of SendStatus (the
# constraint's text must equal the model's), and before it.
SEND_STATUSES = ("queued", "reserved", "sent", "skipped", "failed", "unknown", "retry")
OLD_SEND_STATUSES = ("reserved", "sent", "skipped", "failed", "unknown", "retry")


def _one_of(column: str, words: Sequence[str]) -> str:
    # An OR chain, as in 0002 and nurture.store.tables.one_of: SQLite evaluates
    # ``IN (...)`` over constants by building a temporary index for every row
    # written. (This revision first wrote IN; 0004 rebuilds such a constraint.)
    return " OR ".join(f"{column} = {word!r}" for word in words)


def _send_statuses(words: Sequence[str]) -> None:
    with op.batch_alter_table("send") as batch:
        batch.drop_constraint(op.f("ck_send_status"), type_="check")
        batch.create_check_constraint(op.f("ck_send_status"), _one_of("status", words))


def upgrade() -> None:
    _send_statuses(SEND_STATUSES)
    for table, column, length in WIDENED:
        with op.batch_alter_table(table) as batch:
            batch.alter_column(
                column, type_=sa.Text(), existing_type=sa.String(length), existing_nullable=True
            )
    with op.batch_alter_table("send") as batch:
        batch.add_column(sa.Column("resolution", sa.Text(), nullable=True))
        batch.add_column(sa.Column("resolved_by", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("resolved_at", nurture.store.types.UTCDateTime(), nullable=True))
    # The index on every status is replaced by one on the emails in flight
    # (see nurture.store.tables: the status changes on the hot path).
    op.drop_index("ix_send_status", table_name="send")
    op.create_index(
        "ix_send_reserved",
        "send",
        ["lease_until"],
        sqlite_where=sa.text("status = 'reserved'"),
        postgresql_where=sa.text("status = 'reserved'"),
    )


def downgrade() -> None:
    op.drop_index("ix_send_reserved", table_name="send")
    op.create_index("ix_send_status", "send", ["status"])
    send = sa.table(
        "send",
        sa.column("status", sa.String()),
        sa.column("next_attempt_at", nurture.store.types.UTCDateTime()),
        sa.column("decided_at", nurture.store.types.UTCDateTime()),
    )
    op.execute(
        send.update()
        .where(send.c.status == "queued")
        .values(status="retry", next_attempt_at=send.c.decided_at)
    )
    _send_statuses(OLD_SEND_STATUSES)
    with op.batch_alter_table("send") as batch:
        batch.drop_column("resolved_at")
        batch.drop_column("resolved_by")
        batch.drop_column("resolution")
    for table, column, length in WIDENED:
        # Longer values would not fit the old column: cut them, as 0002's
        # code could only have written that much.
        t = sa.table(table, sa.column(column, sa.Text()))
        op.execute(
            t.update()
            .where(sa.func.length(t.c[column]) > length)
            .values({column: sa.func.substr(t.c[column], 1, length)})
        )
        with op.batch_alter_table(table) as batch:
            batch.alter_column(
                column, type_=sa.String(length), existing_type=sa.Text(), existing_nullable=True
            )
