"""PostgreSQL: the funnel's counters per server process, so workers never wait on them.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02

Migration 0008's triggers add to one ``funnel_step`` row per (sequence,
step) in the transaction that changes a ledger row or an event. On
PostgreSQL that row stays locked until the transaction commits, so two
workers confirming emails of the same step took turns, and two transactions
settling emails of two steps in opposite orders deadlocked: PostgreSQL then
aborts one of them (a worker's confirm, or a webhook's batch of events).

From here PostgreSQL's ``funnel_step_add`` adds to a row of
``funnel_step_delta`` keyed by the server process as well
(``pg_backend_pid()``): a live process writes only its own rows, so no two
transactions ever lock the same counter. Reads add the deltas to
``funnel_step`` (:func:`nurture.store.funnels.step_counts`), and the worker's
reconcile job folds them into it (:func:`nurture.store.funnels.fold_deltas`).
SQLite has one writer at a time: its triggers keep writing ``funnel_step``,
and its ``funnel_step_delta`` stays empty.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SIGNATURE = """funnel_step_add(seq varchar, step varchar, d_sent integer,
  d_unknown integer, d_delivered integer, d_opened integer, d_clicked integer)"""

PER_PROCESS = f"""CREATE OR REPLACE FUNCTION {_SIGNATURE}
RETURNS void LANGUAGE sql AS $$
INSERT INTO funnel_step_delta AS f
  (sequence_id, step_id, backend, sent, unknown, delivered, opened, clicked)
VALUES (seq, step, pg_backend_pid(), d_sent, d_unknown, d_delivered, d_opened, d_clicked)
ON CONFLICT (sequence_id, step_id, backend) DO UPDATE SET
  sent = f.sent + EXCLUDED.sent, unknown = f.unknown + EXCLUDED.unknown,
  delivered = f.delivered + EXCLUDED.delivered, opened = f.opened + EXCLUDED.opened,
  clicked = f.clicked + EXCLUDED.clicked
$$"""

# 0008's, for the downgrade.
SHARED_ROW = f"""CREATE OR REPLACE FUNCTION {_SIGNATURE}
RETURNS void LANGUAGE sql AS $$
INSERT INTO funnel_step AS f (sequence_id, step_id, sent, unknown, delivered, opened, clicked)
VALUES (seq, step, d_sent, d_unknown, d_delivered, d_opened, d_clicked)
ON CONFLICT (sequence_id, step_id) DO UPDATE SET
  sent = f.sent + EXCLUDED.sent, unknown = f.unknown + EXCLUDED.unknown,
  delivered = f.delivered + EXCLUDED.delivered, opened = f.opened + EXCLUDED.opened,
  clicked = f.clicked + EXCLUDED.clicked
$$"""

FOLD_ALL = """
INSERT INTO funnel_step AS f (sequence_id, step_id, sent, unknown, delivered, opened, clicked)
SELECT sequence_id, step_id, sum(sent), sum(unknown), sum(delivered), sum(opened), sum(clicked)
FROM funnel_step_delta GROUP BY sequence_id, step_id
ON CONFLICT (sequence_id, step_id) DO UPDATE SET
  sent = f.sent + EXCLUDED.sent, unknown = f.unknown + EXCLUDED.unknown,
  delivered = f.delivered + EXCLUDED.delivered, opened = f.opened + EXCLUDED.opened,
  clicked = f.clicked + EXCLUDED.clicked
"""


def upgrade() -> None:
    op.create_table(
        "funnel_step_delta",
        sa.Column("sequence_id", sa.String(length=100), nullable=False),
        sa.Column("step_id", sa.String(length=100), nullable=False),
        sa.Column("backend", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("sent", sa.Integer(), nullable=False),
        sa.Column("unknown", sa.Integer(), nullable=False),
        sa.Column("delivered", sa.Integer(), nullable=False),
        sa.Column("opened", sa.Integer(), nullable=False),
        sa.Column("clicked", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("sequence_id", "step_id", "backend", name="pk_funnel_step_delta"),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PER_PROCESS)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(SHARED_ROW)
        op.execute(FOLD_ALL)  # the deltas are figures too: kept in funnel_step
    op.drop_table("funnel_step_delta")
