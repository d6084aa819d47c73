"""PostgreSQL's plans for the per-email and per-round statements, with the
statistics a real database has: taken while this worker held nothing.

A worker's id is new at each start, so whenever ANALYZE runs (autovacuum, or
the import's) no enrollment is claimed by it, and PostgreSQL takes
``claimed_by = :me`` for one row. Statements that also name the row by its
key or primary key must not start from ``ix_enrollment_claimed_by`` then: it
reads every enrollment the worker holds, once per email or round.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import bindparam, text
from sqlalchemy.engine import Engine

from nurture.core.batch import EnrollmentChange
from nurture.core.vocabulary import EnrollmentStatus, SendStatus
from nurture.store import batches
from nurture.store.db import make_engine
from nurture.store.migrate import upgrade
from nurture.store.prepared import prepared_for
from nurture.store.queries import claim_due_enrollments
from nurture.store.reservations import (
    Settle,
    reserve_many_statement,
    reserve_one_statement,
    settle_statement,
)
from nurture.store.rounds import keyed_round_plans, reserve_and_confirm, round_statement

NOW = datetime(2026, 11, 27, 9, 30, tzinfo=UTC)
PEOPLE = 3000
ROUND = 128
DUE_AT_ONCE = 30_000
POOL = 10
"""Keys reserved in a round of a small pool (the default is 8): as many as
PostgreSQL's generic plan takes an array parameter to hold."""
"""Keys reserved in one round: a pool of 128 (the SendGrid benchmark's) starts with that many."""


@pytest.fixture
def claimed(pg_schema_url: str) -> Iterator[Engine]:
    """3,000 enrollments analysed while unclaimed and without a ledger row,
    then a queued email each, and 1,000 of them claimed by the worker ``me``."""
    engine = make_engine(pg_schema_url)
    upgrade(engine)
    _enrolled(engine, PEOPLE)  # the ledger analysed empty: its rows come with the passes after
    _queue(engine, 1, PEOPLE)
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE enrollment SET claimed_by = 'me', claimed_until = :until"
                " WHERE id IN (SELECT id FROM enrollment ORDER BY id LIMIT 1000)"
            ),
            {"until": NOW + timedelta(minutes=5)},
        )
    yield engine
    engine.dispose()


def plan(engine: Engine, sql: str, params: dict[str, Any]) -> str:
    with engine.connect() as conn:
        cursor = conn.connection.cursor()
        cursor.execute("EXPLAIN " + sql, params)
        return "\n".join(row[0] for row in cursor.fetchall())


def test_a_reservation_finds_its_row_by_key_whatever_the_worker_holds(claimed: Engine) -> None:
    statement = prepared_for(claimed.dialect, "reserve_one_plan", reserve_one_statement)
    found = plan(
        claimed,
        statement.sql,
        statement.params({"one_key": "k500", "me": "me", "lease": NOW, "transport": "sendgrid"}),
    )
    assert "uq_send_key" in found
    assert "ix_enrollment_claimed_by" not in found, found


def test_a_pool_round_finds_its_rows_by_key(claimed: Engine) -> None:
    statement = prepared_for(claimed.dialect, "reserve_many_plan", reserve_many_statement)
    keys = [f"k{n}" for n in range(500, 500 + ROUND)]
    found = plan(
        claimed,
        statement.sql,
        statement.params({"keys": keys, "me": "me", "lease": NOW, "transport": "sendgrid"}),
    )
    assert "uq_send_key" in found, found
    assert "ix_enrollment_claimed_by" not in found, found


def test_a_rounds_enrollment_updates_find_their_rows_by_id(claimed: Engine) -> None:
    ids = list(range(400, 408))
    found = plan(
        claimed,
        batches.update_enrollments_sql(claimed.dialect),
        batches.update_enrollments_values(claimed.dialect, "me", [_moved_on(n) for n in ids], NOW),
    )
    assert "pk_enrollment" in found, found
    assert "ix_enrollment_claimed_by" not in found, found


def test_an_answer_finds_its_row_by_key_however_many_are_in_flight(claimed: Engine) -> None:
    """The settle names the status it expects (``reserved``), which is also
    ``ix_send_reserved``'s condition: with the ledger analysed empty and a
    round in flight, it must still go by the key, not read every email in
    flight."""
    with claimed.begin() as conn:
        conn.execute(
            text(
                "UPDATE send SET status = 'reserved', lease_until = :until"
                " WHERE enrollment_id IN (SELECT id FROM enrollment WHERE claimed_by = 'me')"
            ),
            {"until": NOW + timedelta(minutes=5)},
        )
    statement = prepared_for(claimed.dialect, "settle_plan", settle_statement)
    found = plan(
        claimed,
        statement.sql,
        statement.params(
            {
                "_key": "k500",
                "_expected": "reserved",
                "_status": "sent",
                "_reason": None,
                "_attempts": 1,
                "_next": None,
                "_sent": NOW,
                "_pid": "provider-1",
                "_transport": "sendgrid",
            }
        ),
    )
    assert "uq_send_key" in found, found
    assert "ix_send_reserved" not in found, found


def _answer(key: str, expected: SendStatus) -> Settle:
    return Settle(
        key=key,
        expected=expected,
        status=SendStatus.SENT,
        reason=None,
        attempts=1,
        next_attempt_at=None,
        sent_at=NOW,
        provider_message_id=f"provider-{key}",
        transport="sendgrid",
    )


def _moved_on(enrollment_id: int) -> EnrollmentChange:
    return EnrollmentChange(
        id=enrollment_id,
        status=EnrollmentStatus.ACTIVE,
        status_reason=None,
        next_due_at=NOW + timedelta(days=2),
        position="hello",
    )


def test_a_pool_round_in_one_statement_goes_by_key_and_id(claimed: Engine) -> None:
    """A send pool's round on PostgreSQL (answers settled, their enrollments
    moved on, the next keys reserved: one statement) reads the ledger by key
    and the enrollments by id, with a round in flight and stale statistics."""
    with claimed.begin() as conn:
        conn.execute(
            text("UPDATE send SET status = 'reserved' WHERE key IN ('k1', 'k2', 'k3', 'k4')")
        )
    sql, values = round_statement(
        claimed.dialect,
        [f"k{n}" for n in range(500, 500 + ROUND)],
        "me",
        NOW,
        "sendgrid",
        [_answer(f"k{n}", SendStatus.RESERVED) for n in range(1, 5)],
        [_moved_on(n) for n in range(1, 5)],
        NOW,
    )
    found = plan(claimed, sql, values)
    assert found.count("uq_send_key") == 2, found
    assert "pk_enrollment" in found, found
    for unwanted in ("ix_send_reserved", "ix_enrollment_claimed_by", "Seq Scan"):
        assert unwanted not in found, found


def _ledger(engine: Engine) -> dict[str, tuple[str, str | None]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT key, status, provider_message_id FROM send WHERE key IN :keys").bindparams(
                bindparam("keys", expanding=True)
            ),
            {"keys": ["k1", "k2", "k3", "k2001"]},
        ).all()
    return {key: (status, pid) for key, status, pid in rows}


def test_a_pool_round_in_one_statement_writes_only_what_it_may(claimed: Engine) -> None:
    """Each part keeps its condition: a key whose enrollment this worker does
    not hold is not reserved, an answer whose row is not in the status it
    expects is not written, and only the enrollments moved on are released."""
    with claimed.connect() as conn:
        first = reserve_and_confirm(
            conn,
            round_statement(
                claimed.dialect, ["k1", "k2", "k2001"], "me", NOW, "memory", [], [], NOW
            ),
        )
    assert first == {"k1", "k2"}  # enrollment 2001 is not this worker's
    with claimed.connect() as conn:
        second = reserve_and_confirm(
            conn,
            round_statement(
                claimed.dialect,
                ["k3"],
                "me",
                NOW,
                "memory",
                [_answer("k1", SendStatus.RESERVED), _answer("k2", SendStatus.QUEUED)],
                [_moved_on(1)],
                NOW,
            ),
        )
    assert second == {"k3"}
    assert _ledger(claimed) == {
        "k1": ("sent", "provider-k1"),
        "k2": ("reserved", None),  # it expected queued: left as it was
        "k3": ("reserved", None),
        "k2001": ("queued", None),
    }
    with claimed.connect() as conn:
        claims = dict(
            conn.execute(
                text("SELECT id, claimed_by FROM enrollment WHERE id IN (1, 2, 3) ORDER BY id")
            ).all()
        )
    assert claims == {1: None, 2: "me", 3: "me"}


@pytest.mark.parametrize("kept", [False, True], ids=["planned-each-round", "prepared-once"])
def test_a_pool_round_reads_by_key_on_a_ledger_that_grew_under_it(
    pg_schema_url: str, kept: bool
) -> None:
    """A worker's rounds start on a new ledger of a few rows and go on while
    it grows (with autovacuum off, nothing analyses it): the round read on a
    ledger of thousands is still by key, however many rounds ran on it
    small. Planned at each round, or prepared once as a pool's coordinator
    holds its connection (``kept``): a generic plan made on the small ledger
    without :func:`keyed_round_plans`' settings scanned the whole ledger at
    every round."""
    engine = make_engine(pg_schema_url)
    upgrade(engine)
    try:
        with engine.connect() as conn:
            if not _superuser(conn):
                pytest.skip("reading the plan of a round needs LOAD 'auto_explain' (a superuser)")
        _enrolled(engine, PEOPLE, claimed_by="me")
        _queue(engine, 1, 200)  # the ledger of a new install: a few pages
        plans: list[str] = []
        with engine.connect() as conn, keyed_round_plans(conn) if kept else nullcontext():
            answered: list[int] = []
            for round_ in range(17):
                if round_ == 16:  # the ledger has grown since the first rounds
                    _queue(engine, 201, PEOPLE)
                    for step in range(2, 8):  # the later steps of the first emails
                        _queue(engine, 1, PEOPLE, step=f"step-{step}")
                    plans = _explained(conn, "WITH settled")
                answered = _pool_round(conn, round_, answered)
            kinds = conn.exec_driver_sql(
                "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
                " WHERE statement ~ '^WITH settle[d]'"
            ).all()
            conn.rollback()
        assert len(plans) == 1, plans
        assert "uq_send_key" in plans[0], plans[0]
        assert "Seq Scan on send" not in plans[0], plans[0]
        assert _ledger(engine)["k1"] == ("sent", "provider-k1")
        # Prepared (once per shape of its parameters: the first round has no
        # answers) and run on its generic plan in all 17 rounds; or never prepared.
        if kept:
            assert sum(generic for generic, _ in kinds) == 17, kinds
            assert all(custom == 0 for _, custom in kinds), kinds
        else:
            assert kinds == [], kinds
    finally:
        engine.dispose()


def test_a_connection_held_for_rounds_goes_back_to_the_pool_as_it_came(
    pg_schema_url: str,
) -> None:
    """:func:`keyed_round_plans` changes session settings and stops psycopg
    preparing other statements; the next user of the connection sees none
    of it, and a statement it runs often is prepared again as usual."""
    engine = make_engine(pg_schema_url, pool_size=1, max_overflow=0)
    upgrade(engine)
    try:
        with engine.connect() as conn:
            before = _session(conn)
            threshold = conn.connection.driver_connection.prepare_threshold
            with keyed_round_plans(conn):
                held = _session(conn)
                for _ in range(8):  # more than psycopg's threshold (5)
                    conn.exec_driver_sql("SELECT count(*) FROM enrollment").all()
                prepared_while_held = _prepared(conn, "SELECT count(*) FROM enrollment")
            assert conn.connection.driver_connection.prepare_threshold == threshold
        assert held == ("force_generic_plan", "off")
        assert prepared_while_held == 0
        with engine.connect() as conn:  # the pool's one connection, again
            assert _session(conn) == before == ("auto", "on")
            for _ in range(8):
                conn.exec_driver_sql("SELECT count(*) FROM subscriber").all()
            assert _prepared(conn, "SELECT count(*) FROM subscriber") == 1
    finally:
        engine.dispose()


def test_behind_a_transaction_pooler_nothing_outlives_a_transaction(pg_schema_url: str) -> None:
    """``database_transaction_pooler``: the next transaction may run on
    another server connection, so nothing is prepared and no session setting
    is made, by psycopg or by :func:`keyed_round_plans`; the rounds still
    run, each planned as it comes."""
    engine = make_engine(pg_schema_url, pool_size=1, max_overflow=0, transaction_pooler=True)
    upgrade(engine)
    try:
        _enrolled(engine, 40, claimed_by="me")
        _queue(engine, 1, 40)
        with engine.connect() as conn, keyed_round_plans(conn):
            held = _session(conn)
            answered: list[int] = []
            for round_ in range(4):
                answered = _pool_round(conn, round_, answered)
            for _ in range(8):  # more than psycopg's threshold (5)
                conn.exec_driver_sql("SELECT count(*) FROM enrollment").all()
            prepared = conn.exec_driver_sql("SELECT count(*) FROM pg_prepared_statements").scalar()
            conn.rollback()
        assert held == ("auto", "on")
        assert prepared == 0
        assert _ledger(engine)["k1"] == ("sent", "provider-k1")
    finally:
        engine.dispose()


def _session(conn: Any) -> tuple[str, str]:
    row = conn.exec_driver_sql(
        "SELECT current_setting('plan_cache_mode'), current_setting('enable_seqscan')"
    ).one()
    conn.rollback()
    return (row[0], row[1])


def _prepared(conn: Any, sql: str) -> int:
    count = conn.exec_driver_sql(
        "SELECT count(*) FROM pg_prepared_statements WHERE statement = %(sql)s", {"sql": sql}
    ).scalar_one()
    conn.rollback()
    return int(count)


def _pool_round(conn: Any, round_: int, answered: list[int]) -> list[int]:
    """One round of a pool of :data:`POOL` as the coordinator runs it: the
    ``answered`` enrollments' emails settled and moved on, and the next
    :data:`POOL` keys (``k<id>``, ids from ``POOL * round_ + 1``) reserved,
    all of them. Returns those reserved, the next round's answers."""
    wanted = list(range(POOL * round_ + 1, POOL * (round_ + 1) + 1))
    reserved = reserve_and_confirm(
        conn,
        round_statement(
            conn.dialect,
            [f"k{n}" for n in wanted],
            "me",
            NOW + timedelta(minutes=5),
            "memory",
            [_answer(f"k{n}", SendStatus.RESERVED) for n in answered],
            [_moved_on(n) for n in answered],
            NOW,
        ),
    )
    assert reserved == {f"k{n}" for n in wanted}
    return wanted


def _queue(engine: Engine, first: int, last: int, step: str = "hello") -> None:
    """A queued ledger row of ``step`` for enrollments ``first`` to ``last``
    (its key ``k<id>`` for the step ``hello``, ``k<id>-<step>`` for others)."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO send (key, enrollment_id, subscriber_id, sequence_id,"
                " sequence_version, step_id, status, due_at, decided_at, attempts)"
                " SELECT 'k' || id || CASE WHEN :step = 'hello' THEN '' ELSE '-' || :step END,"
                " id, subscriber_id, 'welcome', 'v1', :step, 'queued', :now, :now, 0"
                " FROM enrollment WHERE id BETWEEN :first AND :last"
            ),
            {"now": NOW, "first": first, "last": last, "step": step},
        )


def test_the_claim_reads_a_batch_however_many_are_due(pg_schema_url: str) -> None:
    """Everyone enrolled at one instant (an import) is due at one instant:
    the claim takes its batch in ``ix_enrollment_due``'s order and stops at
    its limit, instead of reading and sorting every due row per batch."""
    engine = make_engine(pg_schema_url)
    upgrade(engine)
    try:
        with engine.connect() as conn:
            if not _superuser(conn):
                pytest.skip("reading the claim's plan needs LOAD 'auto_explain' (a superuser)")
        _enrolled(engine, DUE_AT_ONCE)
        with engine.connect() as conn:
            plans = _explained(conn, "claimed_by")
            with conn.begin():
                claimed = claim_due_enrollments(
                    conn,
                    now=NOW,
                    lease_until=NOW + timedelta(minutes=5),
                    worker_id="me",
                    sequence_ids=["welcome"],
                    limit=1000,
                )
        assert claimed == list(range(1, 1001))  # the oldest, then by id
        assert len(plans) == 1, plans
        assert "ix_enrollment_due" in plans[0], plans[0]
        assert "Sort" not in plans[0], plans[0]
    finally:
        engine.dispose()


_TABLES = ("subscriber", "enrollment", "send")


def _enrolled(engine: Engine, people: int, *, claimed_by: str | None = None) -> None:
    """``people`` subscribers, each enrolled and due at ``NOW`` (held by
    ``claimed_by`` if given), then this schema's tables analysed.

    Those statistics are the only ones the tables get: autovacuum is off on
    them, and the ANALYZE names its tables, since a bare ``ANALYZE`` is the
    whole database's, every other test's schema included, and would analyse
    another test's ledger in the middle of its fixture."""
    with engine.begin() as conn:
        for table in _TABLES:
            conn.execute(text(f"ALTER TABLE {table} SET (autovacuum_enabled = false)"))
        conn.execute(
            text(
                "INSERT INTO subscriber (email, name, status, tags, attributes, created_at,"
                " updated_at) SELECT 's' || g || '@example.com', '', 'active', '[]', '{}',"
                " :now, :now FROM generate_series(1, :n) g"
            ),
            {"now": NOW, "n": people},
        )
        conn.execute(
            text(
                "INSERT INTO enrollment (subscriber_id, sequence_id, sequence_version,"
                " status, enrolled_at, next_due_at, updated_at, trigger_properties,"
                " claimed_by, claimed_until) SELECT id, 'welcome', 'v1', 'active', :now,"
                " :now, :now, '{}', CAST(:me AS VARCHAR),"
                " CASE WHEN :me IS NULL THEN NULL ELSE CAST(:until AS TIMESTAMPTZ) END"
                " FROM subscriber"
            ),
            {"now": NOW, "me": claimed_by, "until": NOW + timedelta(minutes=5)},
        )
    with engine.connect() as conn:
        conn.execute(text(f"ANALYZE {', '.join(_TABLES)}"))
        conn.commit()


def _superuser(conn: Any) -> bool:
    return bool(
        conn.execute(text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")).scalar()
    )


def _explained(conn: Any, marker: str) -> list[str]:
    """From now on, the plan of each statement of ``conn`` whose text holds
    ``marker``, as ``auto_explain`` logs it (a superuser's session only)."""
    found: list[str] = []

    def keep(notice: Any) -> None:
        message = notice.message_primary or ""
        if "Query Text:" in message and marker in message:
            found.append(message)

    conn.connection.driver_connection.add_notice_handler(keep)
    conn.exec_driver_sql("LOAD 'auto_explain'")
    conn.exec_driver_sql("SET auto_explain.log_min_duration = 0")
    conn.exec_driver_sql("SET client_min_messages = log")
    conn.commit()
    return found
