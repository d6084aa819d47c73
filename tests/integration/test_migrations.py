"""The migrations build the schema the models declare, on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import CheckConstraint, delete, insert, inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, StatementError
from sqlmodel import Session, SQLModel, col, select

from nurture.core.vocabulary import EnrollmentStatus, EventKind, SendStatus, SubscriberStatus
from nurture.store.db import make_engine, session_factory
from nurture.store.migrate import (
    check_models_match_migrations,
    current_revision,
    downgrade,
    head_revision,
    upgrade,
)
from nurture.store.tables import EnrollmentRow, EventRow, SendRow, SubscriberRow
from nurture.store.types import UTCDateTime

NOW = datetime(2025, 3, 4, 9, 30, tzinfo=UTC)


def _subscriber(session: Session, email: str = "anna@example.com") -> SubscriberRow:
    row = SubscriberRow(email=email, created_at=NOW, updated_at=NOW)
    session.add(row)
    session.flush()
    return row


def _enrollment(
    session: Session, subscriber: SubscriberRow, status: str = "active"
) -> EnrollmentRow:
    assert subscriber.id is not None
    row = EnrollmentRow(
        subscriber_id=subscriber.id,
        sequence_id="welcome",
        sequence_version="v1",
        status=status,
        enrolled_at=NOW,
        next_due_at=NOW,
        updated_at=NOW,
    )
    session.add(row)
    session.flush()
    return row


def _send(session: Session, enrollment: EnrollmentRow, key: str, step_id: str = "hello") -> SendRow:
    assert enrollment.id is not None
    row = SendRow(
        key=key,
        enrollment_id=enrollment.id,
        subscriber_id=enrollment.subscriber_id,
        sequence_id=enrollment.sequence_id,
        sequence_version=enrollment.sequence_version,
        step_id=step_id,
        status="sent",
        due_at=NOW,
        decided_at=NOW,
    )
    session.add(row)
    session.flush()
    return row


# --------------------------------------------------------------------------- the schema


def test_upgrade_from_empty_creates_every_table(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        assert current_revision(engine) is None
        assert inspect(engine).get_table_names() == []

        upgrade(db_url)  # a URL works as well as an engine

        assert current_revision(engine) == head_revision()
        tables = set(inspect(engine).get_table_names())
        assert tables == set(SQLModel.metadata.tables) | {"alembic_version"}
    finally:
        engine.dispose()


def test_downgrade_to_base_and_up_again(engine: Engine) -> None:
    downgrade(engine, "base")
    assert current_revision(engine) is None
    assert inspect(engine).get_table_names() == ["alembic_version"]

    upgrade(engine)
    assert current_revision(engine) == head_revision()
    assert check_models_match_migrations(engine) == []


def _schema(engine: Engine) -> dict[str, tuple[object, ...]]:
    """What a migration could change: columns, indexes, constraints per table."""
    found = inspect(engine)
    return {
        table: (
            [(c["name"], str(c["type"]), c["nullable"]) for c in found.get_columns(table)],
            sorted(str(ix["name"]) for ix in found.get_indexes(table)),
            sorted(str(uq["name"]) for uq in found.get_unique_constraints(table)),
            sorted(str(ck["name"]) for ck in found.get_check_constraints(table)),
            sorted(str(fk["name"]) for fk in found.get_foreign_keys(table)),
        )
        for table in found.get_table_names()
    }


def test_upgrade_twice_is_a_no_op(engine: Engine) -> None:
    # Not only "it did not raise": the schema and the rows are as they were.
    with session_factory(engine)() as session:
        _send(session, _enrollment(session, _subscriber(session)), key="k1")
        session.commit()
    before = _schema(engine)

    upgrade(engine)

    assert current_revision(engine) == head_revision()
    assert _schema(engine) == before
    with session_factory(engine)() as session:
        assert [row.key for row in session.exec(select(SendRow)).all()] == ["k1"]
        assert len(session.exec(select(EnrollmentRow)).all()) == 1


def _metadata_checks() -> set[tuple[str, str]]:
    return {
        (table.name, str(constraint.name))
        for table in SQLModel.metadata.tables.values()
        for constraint in table.constraints
        if isinstance(constraint, CheckConstraint)
    }


def _database_checks(engine: Engine) -> set[tuple[str, str]]:
    found = inspect(engine)
    return {
        (table, str(check["name"]))
        for table in found.get_table_names()
        for check in found.get_check_constraints(table)
    }


def test_check_constraints_are_those_of_the_models(engine: Engine) -> None:
    # Autogenerate does not compare CHECK constraints: compare their names here.
    assert _metadata_checks() == {
        ("subscriber", "ck_subscriber_status"),
        ("enrollment", "ck_enrollment_status"),
        ("send", "ck_send_status"),
        ("event", "ck_event_kind"),
    }
    assert _database_checks(engine) == _metadata_checks()


def test_processes_starting_together_migrate_once(db_url: str) -> None:
    # Workers and the web app may all start at once against one database;
    # each migrates on startup. Separate processes: that is the real case.
    script = "import sys; from nurture.store.migrate import upgrade; upgrade(sys.argv[1])"
    processes = [
        subprocess.Popen([sys.executable, "-c", script, db_url], stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    failures = [p.communicate(timeout=60)[1] for p in processes if p.wait(timeout=60) != 0]
    assert failures == []
    engine = make_engine(db_url)
    try:
        assert current_revision(engine) == head_revision()
        assert check_models_match_migrations(engine) == []
    finally:
        engine.dispose()


def test_models_and_migrations_agree(engine: Engine) -> None:
    diff = check_models_match_migrations(engine)
    assert diff == [], f"models and migrations differ, write a revision: {diff}"


def test_model_check_notices_a_difference(engine: Engine) -> None:
    # The check is only worth having if it can fail.
    with engine.begin() as connection:
        connection.execute(text("DROP INDEX ix_send_reserved"))
    diff = check_models_match_migrations(engine)
    assert [(kind, index.name) for kind, index in diff] == [("add_index", "ix_send_reserved")]


def test_active_enrollment_index_is_partial(engine: Engine) -> None:
    indexes = {ix["name"]: ix for ix in inspect(engine).get_indexes("enrollment")}
    active = indexes["uq_enrollment_active"]
    assert active["unique"]
    assert active["column_names"] == ["subscriber_id", "sequence_id"]
    where = active["dialect_options"][f"{engine.dialect.name}_where"]
    assert "active" in str(where)
    assert indexes["ix_enrollment_due"]["column_names"] == ["status", "next_due_at", "id"]


def test_a_workers_lease_renewal_reads_only_what_it_holds(engine: Engine) -> None:
    """``ix_enrollment_claimed_by`` (0009) holds only claimed enrollments, and
    both of renew_leases' statements find the worker's rows through it rather
    than reading every enrollment (0.36 s a tick at a million)."""
    from sqlalchemy import event

    from nurture.store.reservations import renew_leases

    indexes = {ix["name"]: ix for ix in inspect(engine).get_indexes("enrollment")}
    claimed = indexes["ix_enrollment_claimed_by"]
    assert claimed["column_names"] == ["claimed_by"]
    where = str(claimed["dialect_options"][f"{engine.dialect.name}_where"])
    assert "claimed_by IS NOT NULL" in where, where
    if engine.dialect.name != "sqlite":
        return  # PostgreSQL plans by statistics: on a near-empty table, a scan is right
    statements: list[tuple[str, object]] = []

    def record(_c: object, _cur: object, sql: str, params: object, *_: object) -> None:
        statements.append((sql, params))

    with engine.begin() as conn:
        event.listen(conn, "before_cursor_execute", record)
        renew_leases(conn, "worker-1", NOW)
        event.remove(conn, "before_cursor_execute", record)
        plans = [
            " / ".join(row[3] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params))
            for sql, params in statements
        ]
    assert len(plans) == 2, statements
    for plan in plans:
        assert "INDEX ix_enrollment_claimed_by (claimed_by=?)" in plan, plan
        assert "SCAN enrollment" not in plan, plan


def test_foreign_keys_have_their_on_delete_rules(engine: Engine) -> None:
    rules = {
        (table, fk["constrained_columns"][0]): (fk["referred_table"], fk["options"].get("ondelete"))
        for table in ("enrollment", "send", "event")
        for fk in inspect(engine).get_foreign_keys(table)
    }
    assert rules == {
        ("enrollment", "subscriber_id"): ("subscriber", "CASCADE"),
        ("send", "enrollment_id"): ("enrollment", "CASCADE"),
        ("send", "subscriber_id"): ("subscriber", "CASCADE"),
        ("event", "subscriber_id"): ("subscriber", "CASCADE"),
        ("event", "send_id"): ("send", "SET NULL"),
    }


# --------------------------------------------------------------------------- invariants


def test_two_active_enrollments_are_refused(session: Session) -> None:
    anna = _subscriber(session)
    _enrollment(session, anna)
    with pytest.raises(IntegrityError):
        _enrollment(session, anna)


def test_history_does_not_block_a_new_active_enrollment(session: Session) -> None:
    anna = _subscriber(session)
    _enrollment(session, anna, status="completed")
    _enrollment(session, anna, status="exited")
    _enrollment(session, anna, status="active")
    session.commit()
    assert len(session.exec(select(EnrollmentRow)).all()) == 3


def test_active_enrollments_of_different_subscribers_coexist(session: Session) -> None:
    _enrollment(session, _subscriber(session, "anna@example.com"))
    _enrollment(session, _subscriber(session, "bo@example.com"))
    session.commit()


def test_a_step_is_recorded_once_per_enrollment(session: Session) -> None:
    enrollment = _enrollment(session, _subscriber(session))
    _send(session, enrollment, key="k1", step_id="hello")
    _send(session, enrollment, key="k2", step_id="offer")
    with pytest.raises(IntegrityError):
        _send(session, enrollment, key="k3", step_id="hello")


def test_email_is_unique(session: Session) -> None:
    _subscriber(session)
    with pytest.raises(IntegrityError):
        _subscriber(session)


def test_deleting_a_subscriber_cascades_and_events_keep_their_history(
    session: Session,
) -> None:
    anna = _subscriber(session)
    bo = _subscriber(session, "bo@example.com")
    send = _send(session, _enrollment(session, anna), key="k1")
    # An event of Bo's that points at Anna's send (only to see SET NULL alone).
    session.add(
        EventRow(
            provider_event_id="e1",
            kind=EventKind.OPENED,
            subscriber_id=bo.id,
            send_id=send.id,
            occurred_at=NOW,
            received_at=NOW,
        )
    )
    session.commit()

    session.execute(delete(SubscriberRow).where(col(SubscriberRow.id) == anna.id))
    session.commit()
    session.expunge_all()

    assert session.exec(select(EnrollmentRow)).all() == []
    assert session.exec(select(SendRow)).all() == []
    event = session.exec(select(EventRow)).one()
    assert event.send_id is None


# --------------------------------------------------------------------------- UTCDateTime


def test_timestamps_come_back_aware_utc(engine: Engine) -> None:
    stockholm_summer = timezone(timedelta(hours=2))
    when = datetime(2025, 6, 1, 9, 0, tzinfo=stockholm_summer)
    factory = session_factory(engine)
    with factory() as session:
        session.add(SubscriberRow(email="anna@example.com", created_at=when, updated_at=NOW))
        session.commit()
    with factory() as session:
        row = session.exec(select(SubscriberRow)).one()
    assert row.created_at == when
    assert row.created_at.tzinfo == UTC
    assert row.created_at.hour == 7


def test_due_times_compare_in_utc(engine: Engine) -> None:
    # The due-time range scan compares stored values: the offset must not matter.
    factory = session_factory(engine)
    with factory() as session:
        enrollment = _enrollment(session, _subscriber(session))
        enrollment.next_due_at = datetime(2025, 6, 1, 9, 0, tzinfo=timezone(timedelta(hours=2)))
        session.commit()
        due = select(EnrollmentRow).where(
            col(EnrollmentRow.next_due_at) <= datetime(2025, 6, 1, 7, 0, tzinfo=UTC)
        )
        assert len(session.exec(due).all()) == 1
        not_yet = select(EnrollmentRow).where(
            col(EnrollmentRow.next_due_at) <= datetime(2025, 6, 1, 6, 59, tzinfo=UTC)
        )
        assert session.exec(not_yet).all() == []


def test_naive_timestamps_are_refused(session: Session) -> None:
    session.add(
        SubscriberRow(email="anna@example.com", created_at=datetime(2025, 1, 1), updated_at=NOW)
    )
    with pytest.raises(StatementError, match="naive"):
        session.flush()


# --------------------------------------------------------------------------- 0002: one vocabulary

OLD_KINDS = ("delivered", "open", "click", "bounce", "spamreport", "unsubscribe", "purchase")


def _old_rows(engine: Engine) -> None:
    """At revision 0001: a subscriber with an enrollment, a send, and one event
    of each kind 0001's code wrote (``unknown`` aside), all pointing at the send."""
    stamp = "2025-03-04 09:30:00"
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO subscriber (id, email, name, tags, attributes, status,"
                " created_at, updated_at) VALUES (1, 'anna@example.com', '', '[]', '{}',"
                " 'unconfirmed', :t, :t)"
            ),
            {"t": stamp},
        )
        conn.execute(
            text(
                "INSERT INTO enrollment (id, subscriber_id, sequence_id, sequence_version,"
                " status, enrolled_at, updated_at) VALUES (1, 1, 'welcome', 'v1', 'converted',"
                " :t, :t)"
            ),
            {"t": stamp},
        )
        conn.execute(
            text(
                "INSERT INTO send (id, key, enrollment_id, subscriber_id, sequence_id,"
                " sequence_version, step_id, status, due_at, decided_at, attempts)"
                " VALUES (1, 'k1', 1, 1, 'welcome', 'v1', 'hello', 'retry', :t, :t, 1)"
            ),
            {"t": stamp},
        )
        for kind in (*OLD_KINDS, "no-such-kind"):
            conn.execute(
                text(
                    "INSERT INTO event (provider_event_id, kind, subscriber_id, send_id,"
                    " occurred_at, received_at, payload)"
                    " VALUES (:id, :kind, 1, 1, :t, :t, :payload)"
                ),
                {"id": f"e-{kind}", "kind": kind, "t": stamp, "payload": f'{{"event": "{kind}"}}'},
            )


def _kinds(engine: Engine) -> dict[str, tuple[str, int | None]]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT provider_event_id, kind, send_id FROM event"))
        return {row[0]: (row[1], row[2]) for row in rows}


def test_0002_renames_old_event_kinds_and_keeps_every_row(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        upgrade(engine, "0001")
        _old_rows(engine)

        upgrade(engine, "0002")

        assert _kinds(engine) == {
            "e-delivered": ("delivered", 1),
            "e-open": ("opened", 1),
            "e-click": ("clicked", 1),
            "e-bounce": ("bounced", 1),
            "e-spamreport": ("complained", 1),
            "e-unsubscribe": ("unsubscribed", 1),
            "e-purchase": ("purchased", 1),
            "e-no-such-kind": ("unknown", 1),  # a hand-made row must not stop the upgrade
        }
        with engine.connect() as conn:
            # SQLite copies each table to add its CHECK: no row may be lost
            # on the way (dropping a parent would cascade to its children).
            assert conn.execute(text("SELECT status FROM subscriber")).scalars().all() == [
                "unconfirmed"
            ]
            assert conn.execute(text("SELECT status FROM enrollment")).scalars().all() == [
                "converted"
            ]
            assert conn.execute(text("SELECT status FROM send")).scalars().all() == ["retry"]
            payload = conn.execute(
                text("SELECT payload FROM event WHERE provider_event_id = 'e-spamreport'")
            ).scalar_one()
        assert "spamreport" in str(payload)  # the raw payload is kept as it came
        assert _database_checks(engine) == _metadata_checks()
        if engine.dialect.name == "sqlite":
            with engine.connect() as conn:
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        upgrade(engine)
        assert check_models_match_migrations(engine) == []
    finally:
        engine.dispose()


def test_0002_downgrades_and_upgrades_again(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        upgrade(engine, "0001")
        _old_rows(engine)
        upgrade(engine)

        downgrade(engine, "0001")

        assert current_revision(engine) == "0001"
        assert _database_checks(engine) == set()
        kinds = _kinds(engine)
        assert {kind for kind, _ in kinds.values()} == {*OLD_KINDS, "unknown"}
        assert all(send_id == 1 for _, send_id in kinds.values())

        upgrade(engine)

        assert current_revision(engine) == head_revision()
        assert _kinds(engine)["e-spamreport"] == ("complained", 1)
        assert _database_checks(engine) == _metadata_checks()
        assert check_models_match_migrations(engine) == []
    finally:
        engine.dispose()


BOGUS = [
    ("subscriber", "status", "UPDATE subscriber SET status = 'actve'"),
    ("enrollment", "status", "UPDATE enrollment SET status = 'done'"),
    ("send", "status", "UPDATE send SET status = 'delivered'"),
    ("event", "kind", "UPDATE event SET kind = 'open'"),  # 0001's word, no longer valid
]


@pytest.mark.parametrize(("table", "column", "statement"), BOGUS, ids=[b[0] for b in BOGUS])
def test_a_word_outside_the_vocabulary_is_refused(
    session: Session, table: str, column: str, statement: str
) -> None:
    anna = _subscriber(session)
    send = _send(session, _enrollment(session, anna), key="k1")
    session.add(
        EventRow(
            provider_event_id="e1",
            kind=EventKind.CLICKED,
            subscriber_id=anna.id,
            send_id=send.id,
            occurred_at=NOW,
            received_at=NOW,
        )
    )
    session.commit()
    with pytest.raises(IntegrityError, match=f"ck_{table}_{column}"):
        session.execute(text(statement))


def test_every_word_of_the_vocabulary_is_accepted(engine: Engine) -> None:
    # The migration spells the word lists out: this fails when an enum grows a
    # word and no revision widens its CHECK.
    with session_factory(engine)() as session:
        anna = _subscriber(session)
        enrollment = _enrollment(session, anna, status="completed")
        send = _send(session, enrollment, key="k0")
        session.commit()
    with engine.begin() as conn:
        for status in SubscriberStatus:
            conn.execute(text("UPDATE subscriber SET status = :s"), {"s": status})
        for status in EnrollmentStatus:
            conn.execute(text("UPDATE enrollment SET status = :s"), {"s": status})
        for status in SendStatus:
            conn.execute(text("UPDATE send SET status = :s"), {"s": status})
        conn.execute(
            insert(EventRow.__table__),  # type: ignore[attr-defined]
            [
                {
                    "provider_event_id": f"e-{kind}",
                    "kind": kind,
                    "subscriber_id": anna.id,
                    "send_id": send.id,
                    "occurred_at": NOW,
                    "received_at": NOW,
                    "payload": {},
                }
                for kind in EventKind
            ],
        )
    with engine.connect() as conn:
        stored = set(conn.execute(text("SELECT kind FROM event")).scalars())
    assert stored == {kind.value for kind in EventKind}


# --------------------------------------------------------------------------- 0003: ledger text


def test_0003_ledger_text_holds_any_length_and_keeps_rows(db_url: str) -> None:
    """A subject rendered from a 130,000-character attribute, and a provider's
    long error, fit the ledger (VARCHAR(1000) refused them on PostgreSQL)."""
    engine = make_engine(db_url)
    try:
        upgrade(engine, "0001")
        _old_rows(engine)
        upgrade(engine)
        long_subject = "Hej " + "x" * 130_000
        long_reason = "provider said: " + "y" * 50_000
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE send SET subject = :s, reason = :r WHERE id = 1"),
                {"s": long_subject, "r": long_reason},
            )
            conn.execute(
                text("UPDATE enrollment SET status_reason = :r WHERE id = 1"), {"r": long_reason}
            )
        with engine.connect() as conn:
            row = conn.execute(text("SELECT subject, reason, resolution FROM send")).one()
        assert row == (long_subject, long_reason, None)
    finally:
        engine.dispose()


def test_0003_downgrade_cuts_long_text_to_the_old_width(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        upgrade(engine, "0001")
        _old_rows(engine)
        upgrade(engine)
        with engine.begin() as conn:
            conn.execute(text("UPDATE send SET subject = :s"), {"s": "z" * 5000})
        downgrade(engine, "0002")
        with engine.connect() as conn:
            subject = conn.execute(text("SELECT subject FROM send")).scalar_one()
            columns = {c["name"] for c in inspect(conn).get_columns("send")}
        assert subject == "z" * 1000
        assert "resolution" not in columns
        upgrade(engine)
        assert current_revision(engine) == head_revision()
        assert check_models_match_migrations(engine) == []
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- 0003: queued


def _send_rows(engine: Engine) -> dict[str, tuple[str, datetime | None]]:
    query = text("SELECT key, status, next_attempt_at FROM send").columns(
        next_attempt_at=UTCDateTime()
    )
    with engine.connect() as conn:
        return {row.key: (row.status, row.next_attempt_at) for row in conn.execute(query)}


def test_0003_queued_rows_downgrade_to_retry_due_at_once(db_url: str) -> None:
    """``queued`` exists from 0003 on; 0002's code knows no such row, so the
    downgrade makes it what 0002 would send again: ``retry``, due when it was
    decided, no attempt spent. The other rows keep their status."""
    engine = make_engine(db_url)
    try:
        upgrade(engine)
        with session_factory(engine)() as session:
            enrollment = _enrollment(session, _subscriber(session))
            queued = _send(session, enrollment, key="q1", step_id="hello")
            _send(session, enrollment, key="s1", step_id="offer")
            queued.status = SendStatus.QUEUED
            queued.decided_at = NOW - timedelta(minutes=3)
            session.commit()  # the head's CHECK accepts it
        assert _send_rows(engine) == {"q1": ("queued", None), "s1": ("sent", None)}

        downgrade(engine, "0002")

        assert current_revision(engine) == "0002"
        assert _send_rows(engine) == {
            "q1": ("retry", NOW - timedelta(minutes=3)),
            "s1": ("sent", None),
        }
        with engine.connect() as conn:
            attempts = conn.execute(text("SELECT attempts FROM send WHERE key = 'q1'")).scalar()
        assert attempts == 0
        with pytest.raises(IntegrityError, match="ck_send_status"), engine.begin() as conn:
            conn.execute(text("UPDATE send SET status = 'queued' WHERE key = 'q1'"))

        upgrade(engine)

        assert current_revision(engine) == head_revision()
        assert check_models_match_migrations(engine) == []
        assert _database_checks(engine) == _metadata_checks()
        with engine.begin() as conn:
            conn.execute(text("UPDATE send SET status = 'queued' WHERE key = 'q1'"))
        assert _send_rows(engine)["q1"][0] == "queued"
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- 0004: OR chain


def _check_sql(engine: Engine) -> list[str]:
    """The text of every CHECK in the SQLite schema."""
    with engine.connect() as conn:
        tables = conn.execute(text("SELECT sql FROM sqlite_master WHERE type = 'table'")).all()
    return [line for (sql,) in tables if sql for line in sql.splitlines() if "CHECK" in line]


def test_no_sqlite_check_is_an_in_list(tmp_path: Path) -> None:
    """SQLite evaluates ``CHECK (x IN (...))`` by building a temporary index for
    every row written; each vocabulary is an OR chain instead (the ledger is
    written three times per email)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    try:
        upgrade(engine)
        checks = _check_sql(engine)
        assert any("ck_send_status" in line for line in checks)
        assert [line for line in checks if " IN (" in line] == []
    finally:
        engine.dispose()


def test_0004_rebuilds_a_send_status_check_written_as_in(tmp_path: Path) -> None:
    """A database that ran the first version of 0003 (``status IN (...)``) gets
    the OR chain, and keeps its rows."""
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        upgrade(engine, "0003")
        words = ", ".join(repr(word.value) for word in SendStatus)
        with engine.begin() as conn:
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            operations = Operations(
                MigrationContext.configure(conn, opts={"render_as_batch": True})
            )
            with operations.batch_alter_table("send") as batch:
                batch.drop_constraint("ck_send_status", type_="check")
                batch.create_check_constraint("ck_send_status", text(f"status IN ({words})"))
        assert any(" IN (" in line for line in _check_sql(engine))
        # Raw SQL: the models describe the latest schema, which has more columns.
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO subscriber (id, email, name, tags, attributes, status,"
                    " created_at, updated_at) VALUES (1, 'anna@example.com', '', '[]', '{}',"
                    " 'active', :now, :now)"
                ),
                {"now": NOW.replace(tzinfo=None)},
            )
            conn.execute(
                text(
                    "INSERT INTO enrollment (id, subscriber_id, sequence_id, sequence_version,"
                    " status, enrolled_at, next_due_at, updated_at) VALUES (1, 1, 'welcome',"
                    " 'v1', 'active', :now, :now, :now)"
                ),
                {"now": NOW.replace(tzinfo=None)},
            )
            conn.execute(
                text(
                    "INSERT INTO send (key, enrollment_id, subscriber_id, sequence_id,"
                    " sequence_version, step_id, status, due_at, decided_at, attempts)"
                    " VALUES ('k1', 1, 1, 'welcome', 'v1', 'hello', 'sent', :now, :now, 0)"
                ),
                {"now": NOW.replace(tzinfo=None)},
            )

        upgrade(engine)

        assert current_revision(engine) == head_revision()
        assert [line for line in _check_sql(engine) if " IN (" in line] == []
        assert _database_checks(engine) == _metadata_checks()
        assert set(_send_rows(engine)) == {"k1"}
        with pytest.raises(IntegrityError, match="ck_send_status"), engine.begin() as conn:
            conn.execute(text("UPDATE send SET status = 'bogus' WHERE key = 'k1'"))
    finally:
        engine.dispose()
