"""The migrations build the schema the models declare, on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import delete, inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, StatementError
from sqlmodel import Session, SQLModel, col, select

from nurture.store.db import make_engine, session_factory
from nurture.store.migrate import (
    check_models_match_migrations,
    current_revision,
    downgrade,
    head_revision,
    upgrade,
)
from nurture.store.tables import EnrollmentRow, EventRow, SendRow, SubscriberRow

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


def test_upgrade_twice_is_a_no_op(engine: Engine) -> None:
    upgrade(engine)
    assert current_revision(engine) == head_revision()


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
        connection.execute(text("DROP INDEX ix_send_status"))
    diff = check_models_match_migrations(engine)
    assert [(kind, index.name) for kind, index in diff] == [("add_index", "ix_send_status")]


def test_active_enrollment_index_is_partial(engine: Engine) -> None:
    indexes = {ix["name"]: ix for ix in inspect(engine).get_indexes("enrollment")}
    active = indexes["uq_enrollment_active"]
    assert active["unique"]
    assert active["column_names"] == ["subscriber_id", "sequence_id"]
    where = active["dialect_options"][f"{engine.dialect.name}_where"]
    assert "active" in str(where)
    assert indexes["ix_enrollment_due"]["column_names"] == ["status", "next_due_at"]


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
            kind="open",
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
