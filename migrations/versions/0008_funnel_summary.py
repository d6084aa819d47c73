"""The funnel summary: per (sequence, step) counters kept by triggers.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01

A sequence's funnel (sent, delivered, human opens and clicks, orders and
revenue per currency) read from the raw tables is a GROUP BY over the whole
ledger: far too slow on a million rows. So three small tables hold it, and
database triggers keep them current in the same transaction as the row that
changes a figure, whichever code path writes it (the dispatcher's confirms,
the serial ledger, the send journal's reconcile, an admin's resolution, the
provider's events, tracked clicks, purchases, an erasure):

* ``funnel_step``: per (sequence, step) the ledger rows that are ``sent`` and
  ``unknown``, and the sends with at least one delivered, human-opened and
  human-clicked event.
* ``funnel_mark``: one row per (send, delivered|opened|clicked): the send was
  counted once for that mark. Its primary key makes a second event of the
  same kind for the same send (SendGrid's and ours, a second open) a no-op,
  also between concurrent transactions on PostgreSQL.
* ``funnel_revenue``: per (sequence, step, currency) the orders credited to
  the step and their sum in ten-thousandths (``amount_e4``: exact integers,
  as ``purchase.amount`` is NUMERIC(18, 4); SQLite would sum REALs).

The dispatcher's hot path pays only the trigger's WHEN test on each status
change and one upsert into ``funnel_step`` when a row becomes ``sent``.

``nurture stats --rebuild`` (:func:`nurture.store.funnels.rebuild`)
recomputes all three from the raw tables; this revision runs it once for the
rows already there. A later revision that copies ``send``, ``event`` or
``purchase`` (SQLite's batch mode) drops their triggers: it must create them
again (``create_triggers``); a test checks they exist at head.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TRIGGERS = (
    ("funnel_send_insert", "send"),
    ("funnel_send_status", "send"),
    ("funnel_send_delete", "send"),
    ("funnel_mark_insert", "funnel_mark"),
    ("funnel_mark_delete", "funnel_mark"),
    ("funnel_event_insert", "event"),
    ("funnel_event_update", "event"),
    ("funnel_event_delete", "event"),
    ("funnel_purchase_insert", "purchase"),
    ("funnel_purchase_update", "purchase"),
    ("funnel_purchase_delete", "purchase"),
)
PG_FUNCTIONS = (
    "funnel_on_send()",
    "funnel_on_mark()",
    "funnel_on_event()",
    "funnel_on_purchase()",
    "funnel_step_add(varchar, varchar, integer, integer, integer, integer, integer)",
)

# --- SQLite -----------------------------------------------------------------

_STEP_UPSERT = """
INSERT INTO funnel_step (sequence_id, step_id, sent, unknown, delivered, opened, clicked)
VALUES ({seq}, {step}, {sent}, {unknown}, {delivered}, {opened}, {clicked})
ON CONFLICT (sequence_id, step_id) DO UPDATE SET
  sent = sent + excluded.sent, unknown = unknown + excluded.unknown,
  delivered = delivered + excluded.delivered, opened = opened + excluded.opened,
  clicked = clicked + excluded.clicked;
"""


def _upsert(row: str, *, sign: str = "", status: bool = False, mark: bool = False) -> str:
    def flag(column: str, word: str) -> str:
        return f"{sign}({row}.{column} = '{word}')"

    zero = "0"
    return _STEP_UPSERT.format(
        seq=f"{row}.sequence_id",
        step=f"{row}.step_id",
        sent=flag("status", "sent") if status else zero,
        unknown=flag("status", "unknown") if status else zero,
        delivered=flag("mark", "delivered") if mark else zero,
        opened=flag("mark", "opened") if mark else zero,
        clicked=flag("mark", "clicked") if mark else zero,
    )


def _counted(row: str) -> str:
    """A human event of a counted kind, about a send."""
    return (
        f"{row}.send_id IS NOT NULL AND NOT {row}.machine AND ({row}.kind = 'delivered' "
        f"OR {row}.kind = 'opened' OR {row}.kind = 'clicked')"
    )


_UNMARK = """
DELETE FROM funnel_mark WHERE {when} send_id = OLD.send_id AND mark = OLD.kind
  AND NOT EXISTS (SELECT 1 FROM event WHERE event.send_id = OLD.send_id
                  AND event.kind = OLD.kind AND NOT event.machine);
"""
_MARK = """
INSERT OR IGNORE INTO funnel_mark (send_id, mark, sequence_id, step_id)
SELECT send.id, NEW.kind, send.sequence_id, send.step_id FROM send
WHERE send.id = NEW.send_id {when};
"""
_E4 = "CAST(ROUND({row}.amount * 10000) AS INTEGER)"
_REVENUE_ADD = f"""
INSERT INTO funnel_revenue (sequence_id, step_id, currency, orders, amount_e4)
SELECT NEW.sequence_id, NEW.step_id, NEW.currency, 1, {_E4.format(row="NEW")}
WHERE NEW.sequence_id IS NOT NULL AND NEW.step_id IS NOT NULL
ON CONFLICT (sequence_id, step_id, currency) DO UPDATE SET
  orders = orders + excluded.orders, amount_e4 = amount_e4 + excluded.amount_e4;
"""
_REVENUE_SUB = f"""
UPDATE funnel_revenue SET orders = orders - 1, amount_e4 = amount_e4 - {_E4.format(row="OLD")}
WHERE sequence_id = OLD.sequence_id AND step_id = OLD.step_id AND currency = OLD.currency;
"""
_SENT_OR_UNKNOWN = "({row}.status = 'sent' OR {row}.status = 'unknown')"

SQLITE = (
    f"""CREATE TRIGGER funnel_send_insert AFTER INSERT ON send
WHEN {_SENT_OR_UNKNOWN.format(row="NEW")}
BEGIN {_upsert("NEW", status=True)} END""",
    f"""CREATE TRIGGER funnel_send_status AFTER UPDATE OF status ON send
WHEN OLD.status IS NOT NEW.status
  AND ({_SENT_OR_UNKNOWN.format(row="OLD")} OR {_SENT_OR_UNKNOWN.format(row="NEW")})
BEGIN
{_upsert("NEW", status=True)}
{_upsert("OLD", sign="-", status=True)}
END""",
    """CREATE TRIGGER funnel_send_delete AFTER DELETE ON send
BEGIN
DELETE FROM funnel_mark WHERE send_id = OLD.id;
UPDATE funnel_step
SET sent = sent - (OLD.status = 'sent'), unknown = unknown - (OLD.status = 'unknown')
WHERE sequence_id = OLD.sequence_id AND step_id = OLD.step_id;
END""",
    f"""CREATE TRIGGER funnel_mark_insert AFTER INSERT ON funnel_mark
BEGIN {_upsert("NEW", mark=True)} END""",
    """CREATE TRIGGER funnel_mark_delete AFTER DELETE ON funnel_mark
BEGIN
UPDATE funnel_step SET delivered = delivered - (OLD.mark = 'delivered'),
  opened = opened - (OLD.mark = 'opened'), clicked = clicked - (OLD.mark = 'clicked')
WHERE sequence_id = OLD.sequence_id AND step_id = OLD.step_id;
END""",
    f"""CREATE TRIGGER funnel_event_insert AFTER INSERT ON event
WHEN {_counted("NEW")}
BEGIN {_MARK.format(when="")} END""",
    f"""CREATE TRIGGER funnel_event_update AFTER UPDATE OF send_id, kind, machine ON event
BEGIN
{_UNMARK.format(when=_counted("OLD") + " AND")}
{_MARK.format(when="AND " + _counted("NEW"))}
END""",
    f"""CREATE TRIGGER funnel_event_delete AFTER DELETE ON event
WHEN {_counted("OLD")}
BEGIN {_UNMARK.format(when="")} END""",
    f"""CREATE TRIGGER funnel_purchase_insert AFTER INSERT ON purchase
BEGIN {_REVENUE_ADD} END""",
    f"""CREATE TRIGGER funnel_purchase_update
AFTER UPDATE OF sequence_id, step_id, currency, amount ON purchase
BEGIN {_REVENUE_SUB} {_REVENUE_ADD} END""",
    f"""CREATE TRIGGER funnel_purchase_delete AFTER DELETE ON purchase
BEGIN {_REVENUE_SUB} END""",
)

# --- PostgreSQL -------------------------------------------------------------

_PG_COUNTED = (
    "{row}.send_id IS NOT NULL AND NOT {row}.machine "
    "AND {row}.kind IN ('delivered', 'opened', 'clicked')"
)
POSTGRESQL = (
    """CREATE FUNCTION funnel_step_add(seq varchar, step varchar, d_sent integer,
  d_unknown integer, d_delivered integer, d_opened integer, d_clicked integer)
RETURNS void LANGUAGE sql AS $$
INSERT INTO funnel_step AS f (sequence_id, step_id, sent, unknown, delivered, opened, clicked)
VALUES (seq, step, d_sent, d_unknown, d_delivered, d_opened, d_clicked)
ON CONFLICT (sequence_id, step_id) DO UPDATE SET
  sent = f.sent + EXCLUDED.sent, unknown = f.unknown + EXCLUDED.unknown,
  delivered = f.delivered + EXCLUDED.delivered, opened = f.opened + EXCLUDED.opened,
  clicked = f.clicked + EXCLUDED.clicked
$$""",
    """CREATE FUNCTION funnel_on_send() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    DELETE FROM funnel_mark WHERE send_id = OLD.id;
  END IF;
  IF TG_OP <> 'INSERT' THEN
    IF OLD.status IN ('sent', 'unknown') THEN
      PERFORM funnel_step_add(OLD.sequence_id, OLD.step_id, -((OLD.status = 'sent')::int),
        -((OLD.status = 'unknown')::int), 0, 0, 0);
    END IF;
  END IF;
  IF TG_OP <> 'DELETE' THEN
    IF NEW.status IN ('sent', 'unknown') THEN
      PERFORM funnel_step_add(NEW.sequence_id, NEW.step_id, (NEW.status = 'sent')::int,
        (NEW.status = 'unknown')::int, 0, 0, 0);
    END IF;
  END IF;
  RETURN NULL;
END
$$""",
    """CREATE FUNCTION funnel_on_mark() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    PERFORM funnel_step_add(NEW.sequence_id, NEW.step_id, 0, 0, (NEW.mark = 'delivered')::int,
      (NEW.mark = 'opened')::int, (NEW.mark = 'clicked')::int);
  ELSE
    PERFORM funnel_step_add(OLD.sequence_id, OLD.step_id, 0, 0, -((OLD.mark = 'delivered')::int),
      -((OLD.mark = 'opened')::int), -((OLD.mark = 'clicked')::int));
  END IF;
  RETURN NULL;
END
$$""",
    f"""CREATE FUNCTION funnel_on_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP <> 'INSERT' THEN
    IF {_PG_COUNTED.format(row="OLD")} THEN
      DELETE FROM funnel_mark WHERE send_id = OLD.send_id AND mark = OLD.kind
        AND NOT EXISTS (SELECT 1 FROM event WHERE event.send_id = OLD.send_id
                        AND event.kind = OLD.kind AND NOT event.machine);
    END IF;
  END IF;
  IF TG_OP <> 'DELETE' THEN
    IF {_PG_COUNTED.format(row="NEW")} THEN
      INSERT INTO funnel_mark (send_id, mark, sequence_id, step_id)
      SELECT send.id, NEW.kind, send.sequence_id, send.step_id FROM send
      WHERE send.id = NEW.send_id
      ON CONFLICT DO NOTHING;
    END IF;
  END IF;
  RETURN NULL;
END
$$""",
    """CREATE FUNCTION funnel_on_purchase() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP <> 'INSERT' THEN
    IF OLD.sequence_id IS NOT NULL AND OLD.step_id IS NOT NULL THEN
      UPDATE funnel_revenue SET orders = orders - 1,
        amount_e4 = amount_e4 - round(OLD.amount * 10000)::bigint
      WHERE sequence_id = OLD.sequence_id AND step_id = OLD.step_id
        AND currency = OLD.currency;
    END IF;
  END IF;
  IF TG_OP <> 'DELETE' THEN
    IF NEW.sequence_id IS NOT NULL AND NEW.step_id IS NOT NULL THEN
      INSERT INTO funnel_revenue AS r (sequence_id, step_id, currency, orders, amount_e4)
      VALUES (NEW.sequence_id, NEW.step_id, NEW.currency, 1, round(NEW.amount * 10000)::bigint)
      ON CONFLICT (sequence_id, step_id, currency) DO UPDATE SET
        orders = r.orders + 1, amount_e4 = r.amount_e4 + EXCLUDED.amount_e4;
    END IF;
  END IF;
  RETURN NULL;
END
$$""",
    """CREATE TRIGGER funnel_send_insert AFTER INSERT ON send FOR EACH ROW
WHEN (NEW.status IN ('sent', 'unknown')) EXECUTE PROCEDURE funnel_on_send()""",
    """CREATE TRIGGER funnel_send_status AFTER UPDATE OF status ON send FOR EACH ROW
WHEN (OLD.status IS DISTINCT FROM NEW.status
      AND (OLD.status IN ('sent', 'unknown') OR NEW.status IN ('sent', 'unknown')))
EXECUTE PROCEDURE funnel_on_send()""",
    """CREATE TRIGGER funnel_send_delete AFTER DELETE ON send FOR EACH ROW
EXECUTE PROCEDURE funnel_on_send()""",
    """CREATE TRIGGER funnel_mark_insert AFTER INSERT ON funnel_mark FOR EACH ROW
EXECUTE PROCEDURE funnel_on_mark()""",
    """CREATE TRIGGER funnel_mark_delete AFTER DELETE ON funnel_mark FOR EACH ROW
EXECUTE PROCEDURE funnel_on_mark()""",
    """CREATE TRIGGER funnel_event_insert AFTER INSERT ON event FOR EACH ROW
EXECUTE PROCEDURE funnel_on_event()""",
    """CREATE TRIGGER funnel_event_update AFTER UPDATE OF send_id, kind, machine ON event
FOR EACH ROW EXECUTE PROCEDURE funnel_on_event()""",
    """CREATE TRIGGER funnel_event_delete AFTER DELETE ON event FOR EACH ROW
EXECUTE PROCEDURE funnel_on_event()""",
    """CREATE TRIGGER funnel_purchase_insert AFTER INSERT ON purchase FOR EACH ROW
EXECUTE PROCEDURE funnel_on_purchase()""",
    """CREATE TRIGGER funnel_purchase_update
AFTER UPDATE OF sequence_id, step_id, currency, amount ON purchase FOR EACH ROW
EXECUTE PROCEDURE funnel_on_purchase()""",
    """CREATE TRIGGER funnel_purchase_delete AFTER DELETE ON purchase FOR EACH ROW
EXECUTE PROCEDURE funnel_on_purchase()""",
)


def create_triggers() -> None:
    """The triggers of the dialect in use (also for a later revision that copied a table)."""
    statements = POSTGRESQL if op.get_bind().dialect.name == "postgresql" else SQLITE
    for statement in statements:
        op.execute(statement)


def drop_triggers() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for name, table in TRIGGERS:
        op.execute(
            f"DROP TRIGGER IF EXISTS {name} ON {table}"
            if postgresql
            else f"DROP TRIGGER IF EXISTS {name}"
        )
    if postgresql:
        for function in PG_FUNCTIONS:
            op.execute(f"DROP FUNCTION IF EXISTS {function}")


def upgrade() -> None:
    op.create_table(
        "funnel_step",
        sa.Column("sequence_id", sa.String(length=100), nullable=False),
        sa.Column("step_id", sa.String(length=100), nullable=False),
        sa.Column("sent", sa.Integer(), nullable=False),
        sa.Column("unknown", sa.Integer(), nullable=False),
        sa.Column("delivered", sa.Integer(), nullable=False),
        sa.Column("opened", sa.Integer(), nullable=False),
        sa.Column("clicked", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("sequence_id", "step_id", name="pk_funnel_step"),
    )
    op.create_table(
        "funnel_mark",
        sa.Column("send_id", sa.Integer(), nullable=False),
        sa.Column("mark", sa.String(length=20), nullable=False),
        sa.Column("sequence_id", sa.String(length=100), nullable=False),
        sa.Column("step_id", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("send_id", "mark", name="pk_funnel_mark"),
    )
    op.create_table(
        "funnel_revenue",
        sa.Column("sequence_id", sa.String(length=100), nullable=False),
        sa.Column("step_id", sa.String(length=100), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("orders", sa.Integer(), nullable=False),
        sa.Column("amount_e4", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("sequence_id", "step_id", "currency", name="pk_funnel_revenue"),
    )
    create_triggers()
    # The rows already there. Imported here: the rebuild is the store's one copy.
    from nurture.store.funnels import rebuild

    rebuild(op.get_bind())


def downgrade() -> None:
    drop_triggers()
    op.drop_table("funnel_revenue")
    op.drop_table("funnel_mark")
    op.drop_table("funnel_step")
