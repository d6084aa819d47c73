"""PostgreSQL: the funnel's counters never make two transactions wait on each
other, nor deadlock (migration 0010), and folding them changes no figure.

Before 0010 every email that became ``sent`` added to one ``funnel_step`` row
per (sequence, step), locked until its transaction committed: two workers
confirming emails of two steps in opposite orders deadlocked, and PostgreSQL
aborted one of them. The scenes here are built with plain SQL so that each
transaction's order of writes is the test's, not the dispatcher's.
"""

from __future__ import annotations

import threading

import psycopg
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine, make_url

from nurture.store import funnels
from nurture.store.migrate import current_revision, downgrade, upgrade

pytestmark = pytest.mark.postgres

STEPS = ("welcome", "offer")


def _driver_url(engine: Engine) -> str:
    """The engine's URL for psycopg itself (its search_path included)."""
    return make_url(engine.url).set(drivername="postgresql").render_as_string(hide_password=False)


def _reserved_sends(engine: Engine, people: int) -> dict[tuple[int, str], str]:
    """``people`` subscribers, each with one send per step, reserved: their keys."""
    keys: dict[tuple[int, str], str] = {}
    with engine.begin() as conn:
        for n in range(people):
            subscriber = conn.execute(
                text(
                    "INSERT INTO subscriber (email, name, tags, attributes, status, created_at, "
                    "updated_at) VALUES (:email, 'P', '[]', '{}', 'active', now(), now()) "
                    "RETURNING id"
                ),
                {"email": f"p{n}@example.com"},
            ).scalar_one()
            enrollment = conn.execute(
                text(
                    "INSERT INTO enrollment (subscriber_id, sequence_id, sequence_version, "
                    "status, enrolled_at, updated_at) VALUES (:s, 'seq', 'v1', 'active', now(), "
                    "now()) RETURNING id"
                ),
                {"s": subscriber},
            ).scalar_one()
            for step in STEPS:
                keys[(n, step)] = f"k{n}-{step}"
                conn.execute(
                    text(
                        "INSERT INTO send (key, enrollment_id, subscriber_id, sequence_id, "
                        "sequence_version, step_id, status, due_at, decided_at, attempts) "
                        "VALUES (:key, :e, :s, 'seq', 'v1', :step, 'reserved', now(), now(), 1)"
                    ),
                    {"key": keys[(n, step)], "e": enrollment, "s": subscriber, "step": step},
                )
    return keys


def _sent_per_step(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {c.step_id: c.sent for c in funnels.step_counts(conn, "seq")}


def _delta_rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(select(func.count()).select_from(funnels.FUNNEL_STEP_DELTA)).scalar_one()
        )


def test_two_transactions_settling_two_steps_in_opposite_orders_both_commit(
    pg_engine: Engine,
) -> None:
    keys = _reserved_sends(pg_engine, 2)
    url = _driver_url(pg_engine)
    both_hold_their_first = threading.Barrier(2, timeout=10)
    outcome: dict[int, str] = {}

    def confirm(person: int, order: tuple[str, str]) -> None:
        with psycopg.connect(url) as conn:
            conn.execute("SET lock_timeout = '5s'")
            try:
                for i, step in enumerate(order):
                    conn.execute(
                        "UPDATE send SET status = 'sent' WHERE key = %s", (keys[(person, step)],)
                    )
                    if i == 0:
                        both_hold_their_first.wait()
                conn.commit()
                outcome[person] = "committed"
            except psycopg.Error as exc:
                outcome[person] = type(exc).__name__
                conn.rollback()

    threads = [
        threading.Thread(target=confirm, args=(0, ("welcome", "offer"))),
        threading.Thread(target=confirm, args=(1, ("offer", "welcome"))),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    # Before 0010: {0: 'committed', 1: 'DeadlockDetected'} (or the other way).
    assert outcome == {0: "committed", 1: "committed"}
    assert _sent_per_step(pg_engine) == {"welcome": 2, "offer": 2}
    assert _delta_rows(pg_engine) == 4  # two steps by two server processes

    with pg_engine.begin() as conn:
        assert funnels.fold_deltas(conn) == 2  # both steps' counters moved
    assert _delta_rows(pg_engine) == 0
    assert _sent_per_step(pg_engine) == {"welcome": 2, "offer": 2}
    with pg_engine.connect() as conn:
        stored = conn.execute(
            select(funnels.FUNNEL_STEP.c.step_id, funnels.FUNNEL_STEP.c.sent)
        ).all()
    assert dict(stored) == {"welcome": 2, "offer": 2}


def test_a_fold_never_waits_for_an_open_transaction(pg_engine: Engine) -> None:
    keys = _reserved_sends(pg_engine, 2)
    with pg_engine.begin() as conn:
        conn.execute(
            text("UPDATE send SET status = 'sent' WHERE key = :k"), {"k": keys[(0, "welcome")]}
        )
    with psycopg.connect(_driver_url(pg_engine)) as worker:
        worker.execute("UPDATE send SET status = 'sent' WHERE key = %s", (keys[(0, "offer")],))
        worker.commit()  # its process's delta row for 'offer' exists now
        # ... and this open transaction holds it (adding a second email).
        worker.execute("UPDATE send SET status = 'sent' WHERE key = %s", (keys[(1, "offer")],))
        with pg_engine.begin() as conn:
            conn.execute(text("SET LOCAL lock_timeout = '2s'"))  # a wait would fail here
            assert funnels.fold_deltas(conn) == 1  # 'welcome' only; the held row is skipped
        assert _sent_per_step(pg_engine) == {"welcome": 1, "offer": 1}
        worker.commit()
    assert _sent_per_step(pg_engine) == {"welcome": 1, "offer": 2}
    with pg_engine.begin() as conn:
        assert funnels.fold_deltas(conn) == 1
    assert _delta_rows(pg_engine) == 0
    assert _sent_per_step(pg_engine) == {"welcome": 1, "offer": 2}


def test_one_fold_at_a_time(pg_engine: Engine) -> None:
    keys = _reserved_sends(pg_engine, 1)
    with pg_engine.begin() as conn:
        conn.execute(
            text("UPDATE send SET status = 'sent' WHERE key = :k"), {"k": keys[(0, "offer")]}
        )
    with pg_engine.begin() as first:
        first.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": funnels.FOLD_LOCK})
        with pg_engine.begin() as second:
            assert funnels.fold_deltas(second) == 0  # another fold holds the lock
    assert funnels.fold_all(pg_engine) == 1  # in a transaction of its own
    assert _sent_per_step(pg_engine) == {"offer": 1}


def test_downgrading_0010_keeps_the_figures(pg_engine: Engine) -> None:
    keys = _reserved_sends(pg_engine, 2)
    with pg_engine.begin() as conn:
        conn.execute(text("UPDATE send SET status = 'sent' WHERE step_id = 'welcome'"))
        conn.execute(
            text("UPDATE send SET status = 'unknown' WHERE key = :k"), {"k": keys[(0, "offer")]}
        )
    downgrade(pg_engine, "0009")
    assert current_revision(pg_engine) == "0009"
    with pg_engine.connect() as conn:
        rows = conn.execute(
            text("SELECT step_id, sent, unknown FROM funnel_step ORDER BY step_id")
        ).all()
    assert [tuple(r) for r in rows] == [("offer", 0, 1), ("welcome", 2, 0)]
    with pg_engine.begin() as conn:  # 0008's function again: straight into funnel_step
        conn.execute(
            text("UPDATE send SET status = 'sent' WHERE key = :k"), {"k": keys[(1, "offer")]}
        )
        assert (
            conn.execute(text("SELECT sent FROM funnel_step WHERE step_id = 'offer'")).scalar() == 1
        )
    upgrade(pg_engine)
    assert _sent_per_step(pg_engine) == {"welcome": 2, "offer": 1}


def _counter_language(engine: Engine) -> str:
    with engine.connect() as conn:
        return str(
            conn.execute(
                text(
                    "SELECT l.lanname FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang"
                    " WHERE p.proname = 'funnel_step_add'"
                    " AND p.pronamespace = current_schema()::regnamespace"
                )
            ).scalar_one()
        )


def test_0011_keeps_the_upsert_planned_and_counts_the_same_both_ways(pg_engine: Engine) -> None:
    """0011 makes the counters' upsert PL/pgSQL (its plan kept per server
    process, not made again for each settled email); the figures are the
    same before and after, and after its downgrade."""
    keys = _reserved_sends(pg_engine, 2)
    assert _counter_language(pg_engine) == "plpgsql"
    with pg_engine.begin() as conn:
        conn.execute(
            text("UPDATE send SET status = 'sent' WHERE key = :k"), {"k": keys[(0, "welcome")]}
        )
        conn.execute(
            text("UPDATE send SET status = 'unknown' WHERE key = :k"), {"k": keys[(0, "offer")]}
        )
    assert _sent_per_step(pg_engine) == {"welcome": 1, "offer": 0}
    downgrade(pg_engine, "0010")
    assert _counter_language(pg_engine) == "sql"
    with pg_engine.begin() as conn:
        conn.execute(
            text("UPDATE send SET status = 'sent' WHERE key = :k"), {"k": keys[(1, "welcome")]}
        )
    assert _sent_per_step(pg_engine) == {"welcome": 2, "offer": 0}
    upgrade(pg_engine)
    assert _counter_language(pg_engine) == "plpgsql"
    with pg_engine.begin() as conn:
        conn.execute(
            text("UPDATE send SET status = 'sent' WHERE key = :k"), {"k": keys[(0, "offer")]}
        )
    assert _sent_per_step(pg_engine) == {"welcome": 2, "offer": 1}
