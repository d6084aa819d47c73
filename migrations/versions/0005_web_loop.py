"""The web loop's tables: purchases, API tokens, events from the customer's own
system; consent evidence from the sign-up form; machine clicks and opens.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

* ``purchase``: one row per (source, order id), the amount exact (NUMERIC),
  credited to a send.
* ``api_token``: only the token's SHA-256 is stored.
* ``app_event``: ``POST /api/v1/events``, idempotent by ``event_id``.
* ``subscriber.consent_form`` / ``consent_user_agent``: the rest of the
  consent record (when, address and text were already kept).
* ``enrollment.trigger_properties``: the properties of the event that started
  an enrollment.
* ``event.machine`` / ``event.user_agent``: a click or open by a link scanner
  is kept but not counted.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import nurture.store.types

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, nurture.store.types.UTCDateTime(), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "purchase",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=30), nullable=False),
        sa.Column("order_id", sa.String(length=200), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=True),
        sa.Column("send_id", sa.Integer(), nullable=True),
        sa.Column("sequence_id", sa.String(length=100), nullable=True),
        sa.Column("step_id", sa.String(length=100), nullable=True),
        sa.Column("product", sa.String(length=200), nullable=True),
        sa.Column("amount", sa.Numeric(18, 4), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        _ts("occurred_at"),
        _ts("received_at"),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscriber.id"],
            name="fk_purchase_subscriber_id_subscriber",
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["send_id"], ["send.id"], name="fk_purchase_send_id_send", ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_purchase"),
        sa.UniqueConstraint("source", "order_id", name="uq_purchase_source_order"),
    )
    op.create_index("ix_purchase_subscriber_id", "purchase", ["subscriber_id"])
    op.create_index("ix_purchase_send_id", "purchase", ["send_id"])

    op.create_table(
        "api_token",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("scope", sa.String(length=20), nullable=False),
        _ts("created_at"),
        _ts("last_used_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_token"),
        sa.UniqueConstraint("name", name="uq_api_token_name"),
        sa.UniqueConstraint("token_hash", name="uq_api_token_token_hash"),
    )

    op.create_table(
        "app_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(length=200), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("properties", sa.JSON(), nullable=False),
        _ts("occurred_at"),
        _ts("received_at"),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscriber.id"],
            name="fk_app_event_subscriber_id_subscriber",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_app_event"),
        sa.UniqueConstraint("event_id", name="uq_app_event_event_id"),
    )
    op.create_index("ix_app_event_subscriber_name", "app_event", ["subscriber_id", "name"])

    with op.batch_alter_table("subscriber") as batch:
        batch.add_column(sa.Column("consent_form", sa.String(length=100), nullable=True))
        batch.add_column(sa.Column("consent_user_agent", sa.String(length=500), nullable=True))
    with op.batch_alter_table("enrollment") as batch:
        batch.add_column(sa.Column("trigger_properties", sa.JSON(), nullable=True))
    with op.batch_alter_table("event") as batch:
        batch.add_column(
            sa.Column("machine", sa.Boolean(), nullable=False, server_default=sa.text("false"))
        )
        batch.add_column(sa.Column("user_agent", sa.String(length=500), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("event") as batch:
        batch.drop_column("user_agent")
        batch.drop_column("machine")
    with op.batch_alter_table("enrollment") as batch:
        batch.drop_column("trigger_properties")
    with op.batch_alter_table("subscriber") as batch:
        batch.drop_column("consent_user_agent")
        batch.drop_column("consent_form")
    op.drop_index("ix_app_event_subscriber_name", table_name="app_event")
    op.drop_table("app_event")
    op.drop_table("api_token")
    op.drop_index("ix_purchase_send_id", table_name="purchase")
    op.drop_index("ix_purchase_subscriber_id", table_name="purchase")
    op.drop_table("purchase")
