"""The tables. Alembic owns the schema (``migrations/``); a test fails when these
models and the migrations disagree.

Invariants (docs/architecture.md explains the ledger):

* ``subscriber.email`` is normalised and unique: one row per address.
* at most one *active* enrollment per (subscriber, sequence): a partial unique
  index, which both SQLite and PostgreSQL support.
* ``send`` is the ledger and the send log: one row per step decision, unique
  (enrollment, step), so a step can never be sent twice.
* ``event.provider_event_id`` is unique: a replayed webhook is a no-op.
* ``ix_enrollment_due`` on (status, next_due_at, id) makes "what is due now" a
  range scan, in the order the claim takes it.
* every status column and ``event.kind`` holds a word of its vocabulary
  (``nurture.core.vocabulary``): named CHECK constraints, ``ck_<table>_<column>``.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    Text,
    UniqueConstraint,
    text,
)
from sqlmodel import Field, SQLModel

from nurture.core.vocabulary import EnrollmentStatus, EventKind, SendStatus, SubscriberStatus
from nurture.store.types import UTCDateTime

# Every constraint gets a predictable name, as migration 0001 spells them out:
# SQLite can only alter a table by copying it (Alembic's batch mode), which
# needs to know each constraint by name.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
}


# The old name, still read by the CLI's `--status` check.
SUBSCRIBER_STATUSES: tuple[SubscriberStatus, ...] = tuple(SubscriberStatus)


def one_of(column: str, words: type[StrEnum]) -> CheckConstraint:
    """``CHECK (column = 'a' OR column = 'b' ...)`` over a vocabulary (``nurture.core.vocabulary``),
    named ``column`` (the naming convention makes it ``ck_<table>_<column>``).

    Migration 0002 spells the same lists out: adding a word to an enum needs a
    revision that replaces the constraint (a test inserts every word).
    """
    # The words are our own lowercase identifiers, so quoting them inline is safe.
    # An OR chain, not IN (...): SQLite evaluates IN over constants by building
    # a temporary index for every row written, which doubled the cost of a
    # ledger insert or update; PostgreSQL treats both alike.
    allowed = " OR ".join(f"{column} = '{word.value}'" for word in words)
    return CheckConstraint(allowed, name=column)


SETTLED_BADLY = "status = 'failed' OR status = 'unknown' OR status = 'retry' OR status = 'skipped'"
"""The rows of ``ix_send_settled_badly`` (an OR chain, like :func:`one_of`)."""


def _ts(*, nullable: bool = False, index: bool = False) -> Any:
    return Field(sa_type=UTCDateTime(), nullable=nullable, index=index)


class SubscriberRow(SQLModel, table=True):
    __tablename__ = "subscriber"
    __table_args__ = (one_of("status", SubscriberStatus),)

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=320, unique=True, description="normalised address")
    name: str = Field(default="", max_length=200)
    first_name: str | None = Field(default=None, max_length=100)
    locale: str | None = Field(default=None, max_length=35)
    timezone: str | None = Field(default=None, max_length=64)
    tags: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    attributes: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: str = Field(default=SubscriberStatus.ACTIVE, max_length=20)
    status_reason: str | None = Field(default=None, sa_type=Text())
    consent_at: datetime | None = _ts(nullable=True)
    consent_source: str | None = Field(default=None, max_length=100)
    consent_ip: str | None = Field(default=None, max_length=64)
    consent_text: str | None = Field(default=None, max_length=2000)
    consent_form: str | None = Field(default=None, max_length=100)
    consent_user_agent: str | None = Field(default=None, max_length=500)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class EnrollmentRow(SQLModel, table=True):
    __tablename__ = "enrollment"
    __table_args__ = (
        # "What is due now": WHERE status = 'active' AND next_due_at <= :now,
        # in the claim's order (next_due_at, id), so it stops at its limit
        # instead of sorting everything due (migration 0012).
        Index("ix_enrollment_due", "status", "next_due_at", "id"),
        # At most one active enrollment per subscriber and sequence.
        Index(
            "uq_enrollment_active",
            "subscriber_id",
            "sequence_id",
            unique=True,
            sqlite_where=text("status = 'active'"),
            postgresql_where=text("status = 'active'"),
        ),
        # What one worker holds (its lease renewals): only claimed rows are in it.
        Index(
            "ix_enrollment_claimed_by",
            "claimed_by",
            sqlite_where=text("claimed_by IS NOT NULL"),
            postgresql_where=text("claimed_by IS NOT NULL"),
        ),
        one_of("status", EnrollmentStatus),
    )

    id: int | None = Field(default=None, primary_key=True)
    subscriber_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("subscriber.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    sequence_id: str = Field(max_length=100, index=True)
    sequence_version: str = Field(max_length=32)
    position: str | None = Field(default=None, max_length=100, description="last decided step")
    status: str = Field(default=EnrollmentStatus.ACTIVE, max_length=20)
    status_reason: str | None = Field(default=None, sa_type=Text())
    enrolled_at: datetime = _ts()
    # What started it: for ``trigger: {event: NAME}``, that event's properties
    # (``trigger.properties`` in templates and ``when``).
    trigger_properties: dict[str, Any] | None = Field(
        default=None, sa_column=Column(JSON, nullable=True)
    )
    next_due_at: datetime | None = _ts(nullable=True)
    # The claim: a dispatcher owns the row until `claimed_until` (its lease).
    claimed_by: str | None = Field(default=None, max_length=64)
    claimed_until: datetime | None = _ts(nullable=True)
    updated_at: datetime = _ts()


class SendRow(SQLModel, table=True):
    """The ledger: one row per step decision for one enrollment."""

    __tablename__ = "send"
    __table_args__ = (
        UniqueConstraint("enrollment_id", "step_id", name="uq_send_enrollment_step"),
        one_of("status", SendStatus),
        # Emails in flight, for reconcile: "reserved and its lease expired".
        # Partial, not an index on every status: each email's status changes
        # three times on the dispatcher's hot path (queued, reserved, sent),
        # and an index on status rewrote its pages at each of them, in the
        # commit made right before the provider call.
        Index(
            "ix_send_reserved",
            "lease_until",
            sqlite_where=text("status = 'reserved'"),
            postgresql_where=text("status = 'reserved'"),
        ),
        # The send log's orders (``nurture.store.sendlog``, migration 0007):
        # newest first, overall, per sequence and per subscriber; none of
        # these columns changes on the queued -> reserved -> sent path.
        Index("ix_send_decided", "decided_at", "id"),
        Index("ix_send_sequence_decided", "sequence_id", "decided_at", "id"),
        Index("ix_send_subscriber_decided", "subscriber_id", "decided_at", "id"),
        # Per status, only for the rows that went wrong (or were skipped):
        # every email passes queued, reserved and sent, and an index on those
        # would be rewritten at each step of the hot path.
        Index(
            "ix_send_settled_badly",
            "status",
            "decided_at",
            "id",
            sqlite_where=text(SETTLED_BADLY),
            postgresql_where=text(SETTLED_BADLY),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=32, unique=True, description="our send id, given to the provider")
    enrollment_id: int = Field(
        sa_column=Column(Integer, ForeignKey("enrollment.id", ondelete="CASCADE"), nullable=False)
    )
    subscriber_id: int = Field(
        sa_column=Column(Integer, ForeignKey("subscriber.id", ondelete="CASCADE"), nullable=False)
    )
    sequence_id: str = Field(max_length=100)
    sequence_version: str = Field(max_length=32)
    step_id: str = Field(max_length=100)
    status: str = Field(max_length=20)
    reason: str | None = Field(default=None, sa_type=Text())
    due_at: datetime = _ts()
    decided_at: datetime = _ts()
    sent_at: datetime | None = _ts(nullable=True)
    lease_until: datetime | None = _ts(nullable=True)
    next_attempt_at: datetime | None = _ts(nullable=True)
    attempts: int = Field(default=0)
    transport: str | None = Field(default=None, max_length=20)
    provider_message_id: str | None = Field(default=None, max_length=200, index=True)
    subject: str | None = Field(default=None, sa_type=Text())
    # How an admin settled a send whose outcome was unknown, who, and when.
    resolution: str | None = Field(default=None, sa_type=Text())
    resolved_by: str | None = Field(default=None, max_length=200)
    resolved_at: datetime | None = _ts(nullable=True)


class EventRow(SQLModel, table=True):
    """What happened: an :class:`EventKind` (delivered, opened, clicked, bounced,
    complained, unsubscribed, purchased ...), and the provider's payload as sent."""

    __tablename__ = "event"
    __table_args__ = (
        Index("ix_event_subscriber_kind", "subscriber_id", "kind"),
        one_of("kind", EventKind),
    )

    id: int | None = Field(default=None, primary_key=True)
    provider_event_id: str = Field(max_length=200, unique=True)
    kind: str = Field(max_length=20)
    subscriber_id: int | None = Field(
        default=None,
        sa_column=Column(Integer, ForeignKey("subscriber.id", ondelete="CASCADE"), nullable=True),
    )
    send_id: int | None = Field(
        default=None,
        sa_column=Column(
            Integer, ForeignKey("send.id", ondelete="SET NULL"), nullable=True, index=True
        ),
    )
    sequence_id: str | None = Field(default=None, max_length=100)
    step_id: str | None = Field(default=None, max_length=100)
    product: str | None = Field(default=None, max_length=200)
    occurred_at: datetime = _ts()
    received_at: datetime = _ts()
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # A click or open that was most likely a link scanner or privacy proxy, not
    # a person: kept, but not counted as engagement.
    machine: bool = Field(default=False, sa_column_kwargs={"server_default": text("false")})
    user_agent: str | None = Field(default=None, max_length=500)


class SuppressionRow(SQLModel, table=True):
    """Addresses never to mail again, and why."""

    __tablename__ = "suppression"

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=320, unique=True)
    reason: str = Field(max_length=500)
    source: str = Field(default="manual", max_length=50)
    created_at: datetime = _ts()


class SequenceStateRow(SQLModel, table=True):
    """Per-sequence dispatch state: the error budget and whether it is paused."""

    __tablename__ = "sequence_state"

    sequence_id: str = Field(primary_key=True, max_length=100)
    paused: bool = Field(default=False)
    paused_reason: str | None = Field(default=None, sa_type=Text())
    consecutive_failures: int = Field(default=0)
    updated_at: datetime = _ts()


class WorkerTickRow(SQLModel, table=True):
    """The last tick of each worker, for /healthz."""

    __tablename__ = "worker_tick"

    worker_id: str = Field(primary_key=True, max_length=64)
    started_at: datetime = _ts()
    last_tick_at: datetime = _ts()
    last_error: str | None = Field(default=None, sa_type=Text())


class SequenceVersionRow(SQLModel, table=True):
    """Every version of a sequence that enrollments have been on, so ``nurture
    plan`` can compare what subscribers are on with the files on disk."""

    __tablename__ = "sequence_version"

    sequence_id: str = Field(primary_key=True, max_length=100)
    version: str = Field(primary_key=True, max_length=32)
    definition: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    first_seen_at: datetime = _ts()


class PurchaseRow(SQLModel, table=True):
    """A purchase reported by a checkout (or added by hand): recorded once per
    (source, order id), credited to the send that earned it."""

    __tablename__ = "purchase"
    __table_args__ = (UniqueConstraint("source", "order_id", name="uq_purchase_source_order"),)

    id: int | None = Field(default=None, primary_key=True)
    source: str = Field(max_length=30, description="checkout, stripe, shopify, woocommerce, manual")
    order_id: str = Field(max_length=200)
    subscriber_id: int | None = Field(
        default=None,
        sa_column=Column(
            Integer, ForeignKey("subscriber.id", ondelete="SET NULL"), nullable=True, index=True
        ),
    )
    send_id: int | None = Field(
        default=None,
        sa_column=Column(
            Integer, ForeignKey("send.id", ondelete="SET NULL"), nullable=True, index=True
        ),
    )
    sequence_id: str | None = Field(default=None, max_length=100)
    step_id: str | None = Field(default=None, max_length=100)
    product: str | None = Field(default=None, max_length=200)
    # Exact: a decimal, never a float; the currency as ISO 4217.
    amount: Decimal = Field(sa_column=Column(Numeric(18, 4), nullable=False))
    currency: str = Field(max_length=3)
    occurred_at: datetime = _ts()
    received_at: datetime = _ts()
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class ApiTokenRow(SQLModel, table=True):
    """An API token: only its SHA-256 is kept; the token is shown once."""

    __tablename__ = "api_token"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100, unique=True)
    token_hash: str = Field(max_length=64, unique=True)
    scope: str = Field(default="ingest", max_length=20, description="ingest or admin")
    created_at: datetime = _ts()
    last_used_at: datetime | None = _ts(nullable=True)


class AppEventRow(SQLModel, table=True):
    """Something that happened in the customer's own system (``POST
    /api/v1/events``): ``trial_started`` and the like. Idempotent by
    ``event_id``; a sequence's ``trigger: {event: NAME}`` starts on one."""

    __tablename__ = "app_event"
    __table_args__ = (Index("ix_app_event_subscriber_name", "subscriber_id", "name"),)

    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(max_length=200, unique=True)
    subscriber_id: int = Field(
        sa_column=Column(Integer, ForeignKey("subscriber.id", ondelete="CASCADE"), nullable=False)
    )
    name: str = Field(max_length=100)
    properties: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    occurred_at: datetime = _ts()
    received_at: datetime = _ts()


class AdminUserRow(SQLModel, table=True):
    """Someone who may log in to ``/admin``: only an Argon2 hash of the password
    is kept. ``failed_logins`` and ``last_failed_at`` make repeated failures
    wait longer (:mod:`nurture.admin.users`)."""

    __tablename__ = "admin_user"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100, unique=True)
    email: str | None = Field(default=None, max_length=320)
    password_hash: str = Field(max_length=500)
    zone: str = Field(default="UTC", max_length=64, description="the zone pages show times in")
    created_at: datetime = _ts()
    last_login_at: datetime | None = _ts(nullable=True)
    failed_logins: int = Field(default=0)
    last_failed_at: datetime | None = _ts(nullable=True)
    session_epoch: int = Field(default=0, description="raised at logout: older sessions end")


class AdminActionRow(SQLModel, table=True):
    """What an admin did and when: resolved a send, resumed a sequence, erased
    a person, sent a test. Kept for the record; nothing reads it to decide."""

    __tablename__ = "admin_action"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _ts(index=True)
    admin: str = Field(max_length=200, description="an admin's name, or cli:<os user>")
    action: str = Field(max_length=50)
    target: str = Field(default="", max_length=400, description="what it acted on")
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class FunnelStepRow(SQLModel, table=True):
    """A step's funnel, kept current by database triggers (migration 0008):
    ledger rows ``sent`` and ``unknown``, and the sends with at least one
    delivered, human-opened and human-clicked event. Read by
    :mod:`nurture.store.funnels`; ``nurture stats --rebuild`` recomputes it.
    On PostgreSQL the triggers add to :class:`FunnelStepDeltaRow` instead,
    folded into this table every minute."""

    __tablename__ = "funnel_step"

    sequence_id: str = Field(primary_key=True, max_length=100)
    step_id: str = Field(primary_key=True, max_length=100)
    sent: int = Field(default=0)
    unknown: int = Field(default=0)
    delivered: int = Field(default=0)
    opened: int = Field(default=0)
    clicked: int = Field(default=0)


class FunnelStepDeltaRow(SQLModel, table=True):
    """PostgreSQL: what each server process's triggers added to a step's
    funnel since the last fold (migration 0010). A live process only ever
    writes its own rows (``backend`` is its ``pg_backend_pid()``), so no two
    transactions wait on one counter, and none can deadlock on two steps'
    counters taken in opposite orders. Reads add these rows to
    :class:`FunnelStepRow`; the reconcile job folds them into it. Always
    empty on SQLite, whose triggers write :class:`FunnelStepRow` directly
    (one writer at a time)."""

    __tablename__ = "funnel_step_delta"

    sequence_id: str = Field(primary_key=True, max_length=100)
    step_id: str = Field(primary_key=True, max_length=100)
    backend: int = Field(
        primary_key=True, sa_type=Integer(), sa_column_kwargs={"autoincrement": False}
    )
    sent: int = Field(default=0)
    unknown: int = Field(default=0)
    delivered: int = Field(default=0)
    opened: int = Field(default=0)
    clicked: int = Field(default=0)


class FunnelMarkRow(SQLModel, table=True):
    """That a send was counted once as delivered, opened or clicked: a second
    event of the same kind for it (the provider's and ours) counts nothing."""

    __tablename__ = "funnel_mark"

    send_id: int = Field(
        primary_key=True, sa_type=Integer(), sa_column_kwargs={"autoincrement": False}
    )
    mark: str = Field(primary_key=True, max_length=20)
    sequence_id: str = Field(max_length=100)
    step_id: str = Field(max_length=100)


class FunnelRevenueRow(SQLModel, table=True):
    """Orders credited to a step and their sum, per currency, in
    ten-thousandths (exact: ``purchase.amount`` is NUMERIC(18, 4))."""

    __tablename__ = "funnel_revenue"

    sequence_id: str = Field(primary_key=True, max_length=100)
    step_id: str = Field(primary_key=True, max_length=100)
    currency: str = Field(primary_key=True, max_length=3)
    orders: int = Field(default=0)
    amount_e4: int = Field(default=0, sa_type=BigInteger())
