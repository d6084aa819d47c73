"""The serial sender's ledger: one commit per email, and patient with a busy SQLite."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from nurture.core.vocabulary import SendStatus
from nurture.store import reservations
from nurture.store.arrays import among
from nurture.store.db import BUSY_TIMEOUT_MS, make_engine, session_factory
from nurture.store.migrate import upgrade
from nurture.store.tables import EnrollmentRow, SendRow, SubscriberRow

NOW = datetime(2026, 11, 27, 9, 30, tzinfo=UTC)
LEASE = NOW + timedelta(minutes=5)
SEND = SendRow.__table__  # type: ignore[attr-defined]
ENROLLMENT = EnrollmentRow.__table__  # type: ignore[attr-defined]


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """SQLite in a file (the busy-database tests are about SQLite)."""
    engine = _seeded(f"sqlite:///{tmp_path / 'ledger.db'}")
    yield engine
    engine.dispose()


@pytest.fixture
def any_engine(db_url: str) -> Iterator[Engine]:
    """SQLite and PostgreSQL."""
    engine = _seeded(db_url)
    yield engine
    engine.dispose()


def _seeded(url: str) -> Engine:
    engine = make_engine(url)
    upgrade(engine)
    with session_factory(engine)() as session:
        for number in range(2):
            subscriber = SubscriberRow(
                email=f"s{number}@example.com", created_at=NOW, updated_at=NOW
            )
            session.add(subscriber)
            session.flush()
            assert subscriber.id is not None
            enrollment = EnrollmentRow(
                subscriber_id=subscriber.id,
                sequence_id="welcome",
                sequence_version="v1",
                status="active",
                enrolled_at=NOW,
                next_due_at=NOW,
                updated_at=NOW,
                claimed_by="me",
                claimed_until=LEASE,
            )
            session.add(enrollment)
            session.flush()
            assert enrollment.id is not None
            session.add(
                SendRow(
                    key=f"k{number}",
                    enrollment_id=enrollment.id,
                    subscriber_id=subscriber.id,
                    sequence_id="welcome",
                    sequence_version="v1",
                    step_id="hello",
                    status=SendStatus.QUEUED,
                    due_at=NOW,
                    decided_at=NOW,
                )
            )
        session.commit()
    return engine


def statuses(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return {row.key: row.status for row in conn.execute(select(SEND.c.key, SEND.c.status))}


def answer(key: str) -> reservations.Settle:
    return reservations.Settle(
        key=key,
        expected=SendStatus.RESERVED,
        status=SendStatus.SENT,
        reason=None,
        attempts=1,
        next_attempt_at=None,
        sent_at=NOW,
        provider_message_id="<m@example.com>",
        transport="memory",
    )


def test_one_commit_settles_the_last_answer_and_reserves_the_next(any_engine: Engine) -> None:
    engine = any_engine
    with reservations.SerialLedger(engine, "me", "memory") as ledger:
        assert ledger.step(None, "k0", LEASE) is True
        assert statuses(engine) == {"k0": "reserved", "k1": "queued"}
        assert ledger.step(answer("k0"), "k1", LEASE) is True
        assert statuses(engine) == {"k0": "sent", "k1": "reserved"}
        # Another worker's key, or one already reserved: not reserved again.
        assert ledger.step(None, "k1", LEASE) is False
    with reservations.SerialLedger(engine, "someone-else", "memory") as ledger:
        assert ledger.step(answer("k1"), None, LEASE) is False
    assert statuses(engine) == {"k0": "sent", "k1": "sent"}


def test_a_pool_round_reserves_only_what_this_worker_holds(any_engine: Engine) -> None:
    """The send pool's reservation of a round (one statement on PostgreSQL,
    one per key on SQLite): the keys reserved come back, with their lease and counted
    attempt; a key already reserved, unknown, or of an enrollment another
    worker took, is not."""
    engine = any_engine
    with engine.begin() as conn:
        conn.execute(
            update(ENROLLMENT)
            .where(
                ENROLLMENT.c.subscriber_id.in_(
                    select(SEND.c.subscriber_id).where(SEND.c.key == "k1")
                )
            )
            .values(claimed_by="someone-else")
        )
    with engine.begin() as conn:
        got = reservations.reserve(conn, ["k0", "k1", "absent"], "me", LEASE, "sendgrid")
    assert got == {"k0"}
    assert statuses(engine) == {"k0": "reserved", "k1": "queued"}
    with engine.connect() as conn:
        row = conn.execute(select(SEND).where(SEND.c.key == "k0")).one()
    assert (row.attempts, row.transport, row.lease_until) == (1, "sendgrid", LEASE)
    with engine.begin() as conn:
        assert reservations.reserve(conn, ["k0"], "me", LEASE, "sendgrid") == set()
        assert reservations.reserve(conn, ["k1"], "someone-else", LEASE, "sendgrid") == {"k1"}
        assert reservations.reserve(conn, [], "me", LEASE, "sendgrid") == set()
    assert statuses(engine) == {"k0": "reserved", "k1": "reserved"}


def test_among_finds_each_value_and_nothing_for_none(any_engine: Engine) -> None:
    with any_engine.connect() as conn:

        def keys(values: list[str]) -> set[str]:
            return set(
                conn.execute(select(SEND.c.key).where(among(conn, SEND.c.key, values))).scalars()
            )

        assert keys(["k1", "absent", "k0", "k1"]) == {"k0", "k1"}
        assert keys(["k1"]) == {"k1"}
        assert keys([]) == set()


def test_a_busy_database_is_waited_for_not_an_error(engine: Engine) -> None:
    """Another process holds SQLite's write lock: the step waits for it (with
    short sleeps of its own, not SQLite's millisecond ones) and then commits."""
    other = make_engine(str(engine.url))
    locked, release = threading.Event(), threading.Event()

    def hold_the_lock() -> None:
        with other.connect() as conn:
            driver = conn.connection.driver_connection
            assert driver is not None
            driver.isolation_level = None
            driver.execute("BEGIN IMMEDIATE")
            locked.set()
            release.wait(10)
            driver.execute("COMMIT")

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    try:
        assert locked.wait(10)
        threading.Timer(0.2, release.set).start()
        with reservations.SerialLedger(engine, "me", "memory") as ledger:
            assert ledger.step(None, "k0", LEASE) is True
        assert release.is_set(), "the step committed while another writer held the lock"
    finally:
        release.set()
        holder.join()
        other.dispose()
    assert statuses(engine)["k0"] == "reserved"


def test_the_connection_goes_back_to_the_pool_as_it_came(engine: Engine) -> None:
    # One pooled connection, so the test sees the very connection the ledger used.
    single = make_engine(str(engine.url), pool_size=1, max_overflow=0)
    try:
        with reservations.SerialLedger(single, "me", "memory") as ledger:
            assert ledger.step(None, "k0", LEASE) is True
        with single.connect() as conn:
            driver = conn.connection.driver_connection
            assert driver is not None
            assert driver.execute("PRAGMA busy_timeout").fetchone() == (BUSY_TIMEOUT_MS,)
            assert driver.isolation_level == ""  # SQLAlchemy's default: transactions
    finally:
        single.dispose()


def test_postgresql_writes_the_provider_id_in_the_step_and_returns_the_connection(
    any_engine: Engine,
) -> None:
    engine = any_engine
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's serial step (SQLite writes the id with the batch's confirm)")
    single = make_engine(str(engine.url.render_as_string(hide_password=False)), pool_size=1,
                         max_overflow=0)  # fmt: skip
    try:
        with reservations.SerialLedger(single, "me", "memory") as ledger:
            assert ledger.writes_message_ids
            assert ledger.step(None, "k0", LEASE) is True
            assert ledger.step(answer("k0"), "k1", LEASE) is True
        with single.connect() as conn:
            driver = conn.connection.driver_connection
            assert driver is not None
            assert driver.autocommit is False  # as SQLAlchemy hands it out
            rows = conn.execute(select(SEND.c.key, SEND.c.status, SEND.c.provider_message_id))
            found = {row.key: (row.status, row.provider_message_id) for row in rows}
        assert found == {"k0": ("sent", "<m@example.com>"), "k1": ("reserved", None)}
    finally:
        single.dispose()
