"""One vocabulary: event kinds renamed to the normalised names, CHECKs on statuses and kinds.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30

Event kinds were SendGrid's words (``open``, ``click``, ``spamreport`` ...);
they become django-anymail's normalised event names (``opened``, ``clicked``,
``complained`` ...), see ``nurture/core/vocabulary.py``. Then every status
column and ``event.kind`` gets a CHECK constraint, so a typo can no longer be
stored.

The word lists are written out here rather than read from the enums: this
revision must build the same constraints forever, whatever the enums become
later (adding a word means a new revision replacing the constraint).

SQLite cannot add a constraint to a table: batch mode copies the table. That
drops the old table, which, with foreign keys enforced, would cascade to the
rows referring to it; ``nurture.store.migrate`` turns enforcement off around
the migration (SQLite's documented procedure for schema changes) and checks
the foreign keys before committing.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SUBSCRIBER_STATUSES = ("active", "unconfirmed", "unsubscribed", "invalid", "bounced", "complained")
ENROLLMENT_STATUSES = ("active", "completed", "exited", "converted")
SEND_STATUSES = ("reserved", "sent", "skipped", "failed", "unknown", "retry")
EVENT_KINDS = (
    "queued", "sent", "rejected", "failed", "bounced", "deferred", "delivered",
    "autoresponded", "opened", "clicked", "complained", "unsubscribed", "subscribed",
    "purchased", "unknown",
)  # fmt: skip

# 0001's words that changed (delivered and unknown kept theirs).
RENAMED_KINDS = {
    "open": "opened",
    "click": "clicked",
    "bounce": "bounced",
    "spamreport": "complained",
    "unsubscribe": "unsubscribed",
    "purchase": "purchased",
}

# (table, column, constraint name, allowed words)
CHECKS = (
    ("subscriber", "status", "ck_subscriber_status", SUBSCRIBER_STATUSES),
    ("enrollment", "status", "ck_enrollment_status", ENROLLMENT_STATUSES),
    ("send", "status", "ck_send_status", SEND_STATUSES),
    ("event", "kind", "ck_event_kind", EVENT_KINDS),
)


def _one_of(column: str, words: Sequence[str]) -> str:
    # The same text as nurture.store.tables.one_of renders: ``a = 'x' OR a = 'y'``
    # rather than ``a IN ('x', 'y')``, which SQLite evaluates by building a
    # temporary index on every row written (it doubled the cost of a ledger write).
    return " OR ".join(f"{column} = {word!r}" for word in words)


def _rename_kinds(renames: dict[str, str]) -> None:
    event = sa.table("event", sa.column("kind", sa.String()))
    for old, new in renames.items():
        op.execute(event.update().where(event.c.kind == old).values(kind=new))


def upgrade() -> None:
    _rename_kinds(RENAMED_KINDS)
    # 0001 let only its own words in (nurture.audience.events checked them),
    # but a hand-inserted row would make the CHECK below fail the whole
    # upgrade: it becomes `unknown`, as an unrecognised provider event does
    # (its payload still says what it was).
    event = sa.table("event", sa.column("kind", sa.String()))
    op.execute(event.update().where(event.c.kind.not_in(EVENT_KINDS)).values(kind="unknown"))
    for table, column, name, words in CHECKS:
        with op.batch_alter_table(table) as batch:
            batch.create_check_constraint(op.f(name), _one_of(column, words))


def downgrade() -> None:
    for table, _column, name, _words in reversed(CHECKS):
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(op.f(name), type_="check")
    # The words 0001 had go back to its spelling; the new words (queued,
    # deferred ...) have no old spelling and stay as they are: 0001 had no
    # constraint, and its code reads only the kinds it knows.
    _rename_kinds({new: old for old, new in RENAMED_KINDS.items()})
