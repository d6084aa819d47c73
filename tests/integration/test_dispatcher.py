"""The dispatcher against a real database (SQLite and PostgreSQL).

The example sequence (sequences/sales-process.yaml) is the one dispatched, so
these tests also show the example works end to end.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy.exc
from sqlalchemy import event, select, text, update
from sqlalchemy.engine import Connection, Engine

from nurture.app.clock import FixedClock
from nurture.app.runtime import Runtime, build_runtime
from nurture.app.settings import Settings
from nurture.audience.enrollment import enroll
from nurture.audience.events import record_event
from nurture.audience.leaving import unsubscribe
from nurture.audience.subscribers import add_subscriber, get_subscriber, subscriber_view
from nurture.core.simulation import simulate
from nurture.core.vocabulary import EventKind
from nurture.errors import (
    AmbiguousSendError,
    AuthenticationError,
    PermanentSendError,
    TransientSendError,
)
from nurture.sending.dispatcher import DispatchHalted
from nurture.sending.guard import OUTAGE_AFTER
from nurture.sending.ratelimit import RateLimiter
from nurture.store import queries
from nurture.store.db import session_factory
from nurture.store.tables import EnrollmentRow, SendRow
from nurture.testing import MemoryTransport
from nurture.testing.fake_sendgrid import FakeSendGrid
from nurture.transports.base import OutgoingEmail, Transport, message_id_of
from nurture.transports.sendgrid import SendGridTransport
from tests.factories import POSTAL_ADDRESS

ROOT = Path(__file__).resolve().parents[2]
STOCKHOLM = ZoneInfo("Europe/Stockholm")
# Friday afternoon in Stockholm.
FRIDAY = datetime(2026, 11, 27, 15, 30, tzinfo=STOCKHOLM).astimezone(UTC)
SEND = SendRow.__table__  # type: ignore[attr-defined]
ENROLLMENT = EnrollmentRow.__table__  # type: ignore[attr-defined]


def settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "sequences_dir": ROOT / "sequences",
        "templates_dir": ROOT / "templates",
        "outbox_dir": tmp_path / "outbox",
        "secret_key": "test-secret-not-a-placeholder",
        "postal_address": POSTAL_ADDRESS,
        "rate_limit": 10_000.0,
        "retry_base": 60.0,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@dataclass
class Setup:
    runtime: Runtime
    transport: MemoryTransport

    def add(
        self,
        email: str,
        *,
        now: datetime,
        tz: str = "Europe/Stockholm",
        tags: tuple[str, ...] = ("b2b",),
    ) -> None:
        with session_factory(self.runtime.engine)() as session:
            add_subscriber(
                session,
                email=email,
                name="Karin Lindqvist",
                tz=tz,
                locale="sv",
                tags=tags,
                consent_source="test",
                now=now,
                sequences=self.runtime.registry.sequences(),
            )
            session.commit()

    def ledger(self) -> list[tuple[str, str]]:
        with self.runtime.engine.connect() as conn:
            rows = conn.execute(select(SEND.c.step_id, SEND.c.status).order_by(SEND.c.id))
            return [(row.step_id, row.status) for row in rows]


def make_setup(
    engine: Engine, tmp_path: Path, sender: Transport | None = None, **overrides: object
) -> Setup:
    """A runtime on ``engine`` at FRIDAY sending through ``sender`` (by default a
    MemoryTransport); ``overrides`` are settings."""
    sender = sender or MemoryTransport()
    runtime = build_runtime(
        settings(tmp_path, **overrides),
        FixedClock(FRIDAY),
        transport=sender,
        engine=engine,
        migrate=False,
    )
    memory = sender if isinstance(sender, MemoryTransport) else MemoryTransport()
    return Setup(runtime, memory)


@pytest.fixture
def setup(engine: Engine, tmp_path: Path) -> Iterator[Setup]:
    made = make_setup(engine, tmp_path)
    yield made
    made.runtime.dispatcher.close()


def test_dispatcher_agrees_with_simulate(setup: Setup) -> None:
    setup.add("karin@example.com", now=FRIDAY)
    loaded = setup.runtime.registry.sequences()["sales-process"]
    with session_factory(setup.runtime.engine)() as session:
        from nurture.audience.subscribers import get_subscriber

        row = get_subscriber(session, "karin@example.com")
        assert row is not None
        view = subscriber_view(row)
    timeline = simulate(loaded.sequence, view, FRIDAY)
    assert [e.action for e in timeline] == ["send"] * 5
    dispatcher = setup.runtime.dispatcher
    for number, entry in enumerate(timeline, start=1):
        due = entry.at.astimezone(UTC)
        # A minute early: nothing new goes out.
        dispatcher.dispatch(due - timedelta(minutes=1))
        assert len(setup.transport.sent) == number - 1
        report = dispatcher.dispatch(due)
        assert report.sent == 1
        assert setup.transport.sent[-1].step_id == entry.step
    with setup.runtime.engine.connect() as conn:
        sent_at = [row.sent_at for row in conn.execute(select(SEND).order_by(SEND.c.id))]
    assert sent_at == [e.at.astimezone(UTC) for e in timeline]
    # Weekend and window rules came through: Monday 09:30 for step two.
    assert timeline[1].at == datetime(2026, 11, 30, 9, 30, tzinfo=STOCKHOLM)
    with setup.runtime.engine.connect() as conn:
        status = conn.execute(select(ENROLLMENT.c.status)).scalar_one()
    assert status == "completed"


def test_after_an_outage_the_overdue_steps_are_spaced_not_sent_at_once(setup: Setup) -> None:
    setup.add("karin@example.com", now=FRIDAY)
    dispatcher = setup.runtime.dispatcher
    assert dispatcher.dispatch(FRIDAY).sent == 1  # welcome
    # The worker is down for over a week: three-models (due Mon 09:30) and
    # choosing (due Wed 09:30) are both overdue when it comes back on Tuesday.
    back = datetime(2026, 12, 8, 9, 0, tzinfo=STOCKHOLM).astimezone(UTC)
    assert dispatcher.dispatch(back).sent == 1
    assert setup.transport.sent[-1].step_id == "three-models"
    # choosing keeps its two days, counted from when three-models went out.
    assert dispatcher.dispatch(back + timedelta(days=2) - timedelta(minutes=1)).sent == 0
    assert dispatcher.dispatch(back + timedelta(days=2)).sent == 1
    assert setup.transport.sent[-1].step_id == "choosing"
    with setup.runtime.engine.connect() as conn:
        rows = conn.execute(select(SEND.c.step_id, SEND.c.due_at).order_by(SEND.c.id)).all()
    # The ledger keeps the schedule it was due on: late, then re-anchored.
    assert rows[1].due_at == datetime(2026, 11, 30, 9, 30, tzinfo=STOCKHOLM)
    assert rows[2].due_at == back + timedelta(days=2)


def test_every_answer_keeps_the_providers_message_id(setup: Setup, engine: Engine) -> None:
    # Without a pool each answer is written with the next reservation, and its
    # message id with the batch's confirm: both must arrive, for every email.
    for number in range(5):
        setup.add(f"s{number}@example.com", now=FRIDAY)
    assert setup.runtime.dispatcher.dispatch(FRIDAY).sent == 5
    given = {(e.send_id, message_id_of(e.message)) for e in setup.transport.sent}
    with engine.connect() as conn:
        stored = {
            (row.key, row.provider_message_id)
            for row in conn.execute(select(SEND).where(SEND.c.status == "sent"))
        }
    assert len(given) == 5 and None not in {pid for _key, pid in given}
    assert stored == given


def test_dispatching_twice_at_the_same_now_sends_nothing_new(setup: Setup) -> None:
    setup.add("karin@example.com", now=FRIDAY)
    setup.add("jamie@example.com", now=FRIDAY, tz="America/New_York")
    first = setup.runtime.dispatcher.dispatch(FRIDAY)
    second = setup.runtime.dispatcher.dispatch(FRIDAY)
    assert first.sent == 2
    assert second.sent == 0
    assert len(setup.transport.sent) == 2


def test_crash_after_provider_accepted_leaves_unknown_and_no_second_email(setup: Setup) -> None:
    setup.add("karin@example.com", now=FRIDAY)
    dispatcher = setup.runtime.dispatcher

    def crash() -> None:
        raise RuntimeError("killed before the confirm commit")

    dispatcher.sender.before_confirm = crash
    with pytest.raises(RuntimeError):
        dispatcher.dispatch(FRIDAY)
    dispatcher.sender.before_confirm = None
    assert len(setup.transport.sent) == 1
    assert setup.ledger() == [("welcome", "reserved")]
    # Within the lease nothing happens; after it, reconcile marks it unknown.
    assert dispatcher.reconcile(FRIDAY + timedelta(minutes=1)) == 0
    later = FRIDAY + timedelta(minutes=10)
    assert dispatcher.reconcile(later) == 1
    assert setup.ledger() == [("welcome", "unknown")]
    dispatcher.dispatch(later)
    dispatcher.dispatch(FRIDAY + timedelta(days=5))
    steps = [email.step_id for email in setup.transport.sent]
    assert steps.count("welcome") == 1
    assert "three-models" in steps  # the sequence goes on after an unknown step


def test_unsubscribed_in_a_claimed_batch_is_not_sent_to(setup: Setup) -> None:
    setup.add("karin@example.com", now=FRIDAY)
    setup.add("leaver@example.com", now=FRIDAY)
    runtime = setup.runtime
    compose = runtime.dispatcher.compose

    def compose_then_unsubscribe(*args: object) -> object:
        message = compose(*args)  # type: ignore[arg-type]
        # The subscriber clicks "unsubscribe" after the batch was claimed.
        with runtime.engine.begin() as conn:
            conn.execute(
                update(queries.SUBSCRIBER)
                .where(queries.SUBSCRIBER.c.email == "leaver@example.com")
                .values(status="unsubscribed")
            )
        return message

    runtime.dispatcher.compose = compose_then_unsubscribe  # type: ignore[assignment]
    report = runtime.dispatcher.dispatch(FRIDAY)
    assert [e.to_email for e in setup.transport.sent] == ["karin@example.com"]
    assert report.sent == 1 and report.skipped == 1
    with runtime.engine.connect() as conn:
        reasons = {
            row.reason for row in conn.execute(select(SEND).where(SEND.c.status == "skipped"))
        }
        statuses = sorted(row.status for row in conn.execute(select(ENROLLMENT)))
    assert reasons == {"not sent: subscriber is unsubscribed (checked just before sending)"}
    assert statuses == ["active", "exited"]


def test_leaving_one_series_or_an_earlier_one_does_not_stop_this_one(setup: Setup) -> None:
    """An unsubscribe from another series ends only that one, and one from
    before an admin enrolled the subscriber again ends nothing now."""
    setup.add("karin@example.com", now=FRIDAY - timedelta(hours=2))
    runtime = setup.runtime
    sequences = runtime.registry.sequences()
    with session_factory(runtime.engine)() as session:
        karin = get_subscriber(session, "karin@example.com")
        assert karin is not None and karin.id is not None
        # Karin left this series an hour ago; the admin enrolled her again since.
        unsubscribe(session, karin, now=FRIDAY - timedelta(hours=1), sequence_id="sales-process")
        enroll(session, karin, sequences["sales-process"], FRIDAY - timedelta(minutes=30))
        # And just now she left another series (its emails only).
        record_event(
            session.connection(), kind=EventKind.UNSUBSCRIBED, subscriber_id=karin.id,
            sequence_id="tips", occurred_at=FRIDAY - timedelta(minutes=1),
            received_at=FRIDAY - timedelta(minutes=1), payload={"scope": "sequence"},
        )  # fmt: skip
        session.commit()
    report = runtime.dispatcher.dispatch(FRIDAY)
    assert [e.to_email for e in setup.transport.sent] == ["karin@example.com"]
    assert report.sent == 1 and report.exited == 0
    with runtime.engine.connect() as conn:
        statuses = sorted(row.status for row in conn.execute(select(ENROLLMENT)))
    assert statuses == ["active", "exited"]  # the one she left, and the one running


def test_invalid_address_fails_and_marks_subscriber(setup: Setup) -> None:
    setup.add("karin@example.com", now=FRIDAY)
    setup.transport.fail_next(
        PermanentSendError("does not exist", status=400, invalid_address=True)
    )
    report = setup.runtime.dispatcher.dispatch(FRIDAY)
    assert report.failed == 1
    assert setup.ledger() == [("welcome", "failed")]
    with setup.runtime.engine.connect() as conn:
        assert conn.execute(select(queries.SUBSCRIBER.c.status)).scalar_one() == "invalid"
        assert conn.execute(select(ENROLLMENT.c.status)).scalar_one() == "exited"


def test_ambiguous_send_is_unknown_and_never_resent(setup: Setup) -> None:
    setup.add("karin@example.com", now=FRIDAY)
    setup.transport.accept_then_raise(AmbiguousSendError("timed out after sending"))
    report = setup.runtime.dispatcher.dispatch(FRIDAY)
    assert report.unknown == 1
    setup.runtime.dispatcher.dispatch(FRIDAY + timedelta(hours=1))
    assert [e.step_id for e in setup.transport.sent] == ["welcome"]
    assert setup.ledger() == [("welcome", "unknown")]


def test_authentication_error_halts_and_loses_nothing(setup: Setup) -> None:
    setup.add("karin@example.com", now=FRIDAY)
    setup.transport.fail_next(AuthenticationError("401: the API key is wrong", status=401))
    with pytest.raises(DispatchHalted, match="API key"):
        setup.runtime.dispatcher.dispatch(FRIDAY)
    assert setup.ledger() == [("welcome", "retry")]
    report = setup.runtime.dispatcher.dispatch(FRIDAY + timedelta(minutes=5))
    assert report.sent == 1
    assert setup.ledger() == [("welcome", "sent")]


def test_error_budget_pauses_the_sequence(engine: Engine, tmp_path: Path) -> None:
    # One send at a time (the pooled case has its own test below).
    setup = make_setup(engine, tmp_path, error_budget=3, send_concurrency=1)
    transport, runtime = setup.transport, setup.runtime
    for number in range(5):
        setup.add(f"s{number}@example.com", now=FRIDAY)
    transport.fail_next(*[PermanentSendError("400 bad request", status=400) for _ in range(5)])
    runtime.dispatcher.sender.policy = runtime.dispatcher.sender.policy.__class__(
        **{**runtime.dispatcher.sender.policy.__dict__, "batch_size": 3}
    )
    runtime.dispatcher.dispatch(FRIDAY)
    with engine.connect() as conn:
        paused = queries.paused_sequences(conn)
    assert "sales-process" in paused
    assert "paused after 3 failed sends in a row" in paused["sales-process"]
    assert len(setup.ledger()) == 3  # the two others wait for `nurture resume`
    runtime.dispatcher.close()


def _pipelined(engine: Engine, tmp_path: Path, transport: MemoryTransport) -> Setup:
    """Batches of two through a pool of two send threads."""
    return make_setup(engine, tmp_path, transport, batch_size=2, send_concurrency=2)


def _reserved(engine: Engine) -> int:
    with engine.connect() as conn:
        return len(conn.execute(select(SEND.c.id).where(SEND.c.status == "reserved")).all())


def _recorded(engine: Engine) -> int:
    """Emails in the ledger, whatever their state: a batch is recorded
    (``queued``) when it is planned, before any of it is reserved."""
    with engine.connect() as conn:
        return len(conn.execute(select(SEND.c.id)).all())


def _wait_for(condition: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def test_with_a_send_pool_the_next_batch_is_queued_while_one_is_in_flight(
    engine: Engine, tmp_path: Path
) -> None:
    seen: dict[str, bool] = {}

    def hold_first_batch(email: Any) -> None:
        # The first batch's emails are held until the next batch has been
        # reserved behind them: that only happens if batches overlap.
        if email.to_email in ("s0@example.com", "s1@example.com"):
            seen[email.to_email] = _wait_for(lambda: _recorded(engine) == 4)

    setup = _pipelined(engine, tmp_path, MemoryTransport(hook=hold_first_batch))
    for number in range(4):
        setup.add(f"s{number}@example.com", now=FRIDAY)
    report = setup.runtime.dispatcher.dispatch(FRIDAY)
    setup.runtime.dispatcher.close()
    assert seen == {"s0@example.com": True, "s1@example.com": True}
    assert report.sent == 4 and report.batches == 2
    assert setup.ledger() == [("welcome", "sent")] * 4


def _answered(address: str) -> tuple[threading.Event, Callable[[OutgoingEmail], None]]:
    """An event set once the provider's answer to ``address`` has been counted by
    the pass, and the ``after_send`` hook that sets it."""
    answered = threading.Event()

    def after_send(email: OutgoingEmail) -> None:
        if email.to_email == address:
            answered.set()

    return answered, after_send


def test_a_refused_key_stops_the_batch_queued_behind(engine: Engine, tmp_path: Path) -> None:
    refused, after_send = _answered("s0@example.com")

    def choreography(email: Any) -> None:
        if email.to_email == "s0@example.com":
            # Refuse once the second batch is queued behind this one.
            assert _wait_for(lambda: _recorded(engine) == 4)
            raise AuthenticationError("401: the API key is wrong", status=401)
        if email.to_email == "s1@example.com":
            # With the provider until the refusal has stopped the pass: then
            # this thread, free again, must find the queued batch held.
            assert refused.wait(10)

    setup = _pipelined(engine, tmp_path, MemoryTransport(hook=choreography))
    setup.runtime.dispatcher.sender.after_send = after_send
    for number in range(4):
        setup.add(f"s{number}@example.com", now=FRIDAY)
    with pytest.raises(DispatchHalted, match="API key"):
        setup.runtime.dispatcher.dispatch(FRIDAY)
    setup.runtime.dispatcher.close()
    assert [e.to_email for e in setup.transport.sent] == ["s1@example.com"]
    with engine.connect() as conn:
        rows = conn.execute(select(SEND.c.status, SEND.c.reason).order_by(SEND.c.id)).all()
    assert [status for status, _ in rows] == ["retry", "sent", "retry", "retry"]
    assert rows[2].reason == rows[3].reason == "not attempted: dispatching halted"
    assert _reserved(engine) == 0  # nothing left for reconcile to call unknown


def test_a_spent_error_budget_stops_the_queued_batch_at_once(
    engine: Engine, tmp_path: Path
) -> None:
    # Budget 1: the first failure spends it. The batch queued behind is not
    # attempted, although it was reserved before the pause was recorded; and
    # the email already in flight succeeding afterwards does not undo the pause.
    failed, after_send = _answered("s0@example.com")

    def choreography(email: Any) -> None:
        if email.to_email == "s0@example.com":
            assert _wait_for(lambda: _recorded(engine) == 4)
            raise PermanentSendError("400 bad request", status=400)
        if email.to_email == "s1@example.com":
            # Succeeds only after the failure has spent the budget.
            assert failed.wait(10)

    setup = make_setup(
        engine,
        tmp_path,
        MemoryTransport(hook=choreography),
        batch_size=2,
        send_concurrency=2,
        error_budget=1,
    )
    runtime = setup.runtime
    runtime.dispatcher.sender.after_send = after_send
    for number in range(4):
        setup.add(f"s{number}@example.com", now=FRIDAY)
    runtime.dispatcher.dispatch(FRIDAY)
    runtime.dispatcher.close()
    with engine.connect() as conn:
        rows = conn.execute(select(SEND.c.status, SEND.c.reason).order_by(SEND.c.id)).all()
        paused = queries.paused_sequences(conn)
    assert [row.status for row in rows] == ["failed", "sent", "retry", "retry"]
    assert {row.reason for row in rows[2:]} == {"not attempted: the sequence was paused"}
    assert "paused after 1 failed send in a row" in paused["sales-process"]


def test_stopping_hands_back_the_queued_emails_at_once(engine: Engine, tmp_path: Path) -> None:
    # SIGTERM while two emails are with the provider and two more are queued:
    # the two finish, the queued two are retried a second later, none is lost.
    stopping = threading.Event()
    setup: Setup

    def choreography(email: Any) -> None:
        if email.to_email == "s0@example.com":
            assert _wait_for(lambda: _recorded(engine) == 4)
            setup.runtime.dispatcher.stop()
            stopping.set()
        elif email.to_email == "s1@example.com":
            assert stopping.wait(10)

    setup = _pipelined(engine, tmp_path, MemoryTransport(hook=choreography))
    for number in range(4):
        setup.add(f"s{number}@example.com", now=FRIDAY)
    report = setup.runtime.dispatcher.dispatch(FRIDAY)
    setup.runtime.dispatcher.close()
    assert report.sent == 2 and report.retried == 2 and report.not_attempted == 2
    assert "retry later 2 (2 not attempted)" in report.summary()
    assert sorted(e.to_email for e in setup.transport.sent) == ["s0@example.com", "s1@example.com"]
    with engine.connect() as conn:
        rows = conn.execute(
            select(SEND.c.status, SEND.c.reason, SEND.c.next_attempt_at).order_by(SEND.c.id)
        ).all()
    assert [row.status for row in rows] == ["sent", "sent", "retry", "retry"]
    assert {row.reason for row in rows[2:]} == {"not attempted: the worker was stopping"}
    assert {row.next_attempt_at for row in rows[2:]} == {FRIDAY + timedelta(seconds=1)}
    assert _reserved(engine) == 0


def _claim(conn: Connection, worker: str) -> list[int]:
    return queries.claim_due_enrollments(
        conn,
        now=FRIDAY,
        lease_until=FRIDAY + timedelta(minutes=5),
        worker_id=worker,
        sequence_ids=["sales-process"],
        limit=40,
    )


def _waiting_on_a_lock(engine: Engine, pid: int) -> bool:
    """Is PostgreSQL backend ``pid`` waiting for a lock?"""
    with engine.connect() as conn:
        waiting = conn.execute(
            text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
        ).scalar()
    return waiting == "Lock"


def _second_while_first_is_open(
    engine: Engine, first: Callable[[Connection], object], second: Callable[[Connection], None]
) -> list[Exception]:
    """Two dispatchers at once, in a fixed order: ``first`` runs in a
    transaction left open while ``second`` runs in another thread; the first
    commits once the second is done or, on PostgreSQL, waiting for the first's
    locks. SQLite runs one writer at a time, whatever the order. Returns what
    the second raised."""
    errors: list[Exception] = []
    pid: list[int] = []

    def run_second() -> None:
        try:
            with engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    pid.append(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
                second(conn)
        except Exception as exc:  # reported to the test
            errors.append(exc)

    with engine.connect() as conn:
        transaction = conn.begin()
        first(conn)
        thread = threading.Thread(target=run_second)
        thread.start()
        if engine.dialect.name == "postgresql":
            assert _wait_for(
                lambda: not thread.is_alive() or bool(pid and _waiting_on_a_lock(engine, pid[0]))
            )
        transaction.commit()
    thread.join(30)
    assert not thread.is_alive()
    return errors


def test_two_dispatchers_never_claim_the_same_enrollment(setup: Setup) -> None:
    # The rows the first claim holds (not committed yet) must be skipped by the
    # second, not claimed again once the first commits.
    for number in range(60):
        setup.add(f"s{number}@example.com", now=FRIDAY)
    first: list[int] = []
    second: list[int] = []
    errors = _second_while_first_is_open(
        setup.runtime.engine,
        lambda conn: first.extend(_claim(conn, "w1")),
        lambda conn: second.extend(_claim(conn, "w2")),
    )
    assert errors == []
    assert len(first) == 40
    everything = first + second
    assert len(everything) == len(set(everything)) == 60


def test_rate_limiter_spaces_calls() -> None:
    moments: list[float] = []
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    limiter = RateLimiter(10.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        limiter.acquire()
        moments.append(now[0])
    assert moments == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])


def test_rate_limiter_lets_one_caller_at_a_time_take_a_slot() -> None:
    # Taking a slot is read-the-clock, read the next free slot, move it on:
    # two callers doing that at once take the same slot, and two emails go out
    # together. The first caller here waits inside acquire (half a second at
    # most) for a second one to get in too; with the limiter's lock it cannot.
    first_inside, second_inside = threading.Event(), threading.Event()
    reads: list[int] = []
    reads_lock = threading.Lock()
    overlapped: list[bool] = []

    def clock() -> float:
        with reads_lock:
            reads.append(len(reads))
            number = len(reads)
        if number == 2:  # the first acquire (read 1 is the constructor's)
            first_inside.set()
            overlapped.append(second_inside.wait(0.5))
        elif number == 3:
            second_inside.set()
        return 0.0

    slept: list[float] = []
    limiter = RateLimiter(10.0, clock=clock, sleep=slept.append)
    first = threading.Thread(target=limiter.acquire)
    second = threading.Thread(target=limiter.acquire)
    first.start()
    assert first_inside.wait(10)
    second.start()
    first.join(10)
    second.join(10)
    assert overlapped == [False]
    assert slept == pytest.approx([0.1])  # one goes at once, the other one slot later


# SendGrid through the fake server ------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeSendGrid]:
    with FakeSendGrid(api_key="SG.test-key") as server:
        yield server


def sendgrid_setup(
    engine: Engine, tmp_path: Path, fake: FakeSendGrid, timeout: float = 2.0, **overrides: object
) -> Setup:
    transport = SendGridTransport("SG.test-key", host=fake.url, timeout=timeout)
    return make_setup(
        engine,
        tmp_path,
        transport,
        transport="sendgrid",
        sendgrid_api_key="SG.test-key",
        base_url="https://mail.example.se",  # a real transport refuses localhost
        **overrides,
    )


def test_sendgrid_answers_come_to_one_thread_not_a_thread_per_email(
    engine: Engine, tmp_path: Path
) -> None:
    """The pooled SendGrid transport is multiplexed: the pass hands it the
    emails from one launcher and its one thread takes every answer."""
    with FakeSendGrid(api_key="SG.test-key", latency=0.1) as slow:
        setup = sendgrid_setup(engine, tmp_path, slow, send_concurrency=16, batch_size=10)
        answered_in: list[str] = []
        setup.runtime.dispatcher.sender.after_send = lambda _email: answered_in.append(
            threading.current_thread().name
        )
        for number in range(30):
            setup.add(f"s{number}@example.com", now=FRIDAY)
        report = setup.runtime.dispatcher.dispatch(FRIDAY)
        threads = {thread.name for thread in threading.enumerate()}
        setup.runtime.close()
    assert report.sent == 30 and slow.stats()["delivered"] == 30
    counts = slow.send_ids()
    assert len(counts) == 30
    assert all(count == {"received": 1, "accepted": 1} for count in counts.values())
    assert set(answered_in) == {"nurture-http"}
    assert "nurture-launch" in threads
    assert not [name for name in threads if name.startswith("nurture-send_")]
    assert setup.ledger() == [("welcome", "sent")] * 30


def test_a_failure_while_counting_an_answer_stops_the_pass_instead_of_hanging_it(
    engine: Engine, tmp_path: Path, fake: FakeSendGrid
) -> None:
    setup = sendgrid_setup(engine, tmp_path, fake, send_concurrency=4)

    def broken(email: OutgoingEmail) -> None:
        if email.to_email == "s1@example.com":
            raise RuntimeError("a bug while counting the answer")

    setup.runtime.dispatcher.sender.after_send = broken
    for number in range(4):
        setup.add(f"s{number}@example.com", now=FRIDAY)
    with pytest.raises(RuntimeError, match="the sender stopped"):
        setup.runtime.dispatcher.dispatch(FRIDAY)
    setup.runtime.close()
    assert len(fake.delivered) == 4
    with engine.connect() as conn:
        subscriber = queries.SUBSCRIBER
        joined = SEND.join(subscriber, subscriber.c.id == SEND.c.subscriber_id)
        rows = dict(
            conn.execute(select(subscriber.c.email, SEND.c.status).select_from(joined)).all()
        )
    # s1's answer was never counted: its row stays reserved, for reconcile
    # to make unknown, never sent again blindly. (So may others' answers not
    # yet confirmed when the pass stopped.)
    assert rows["s1@example.com"] == "reserved"
    assert set(rows.values()) <= {"sent", "reserved"}


def test_429_then_202_delivers_once_after_the_reset(
    engine: Engine, tmp_path: Path, fake: FakeSendGrid
) -> None:
    setup = sendgrid_setup(engine, tmp_path, fake)
    setup.add("karin@example.com", now=FRIDAY)
    fake.enqueue("429", reset_in=30.0)
    report = setup.runtime.dispatcher.dispatch(FRIDAY)
    assert report.retried == 1 and report.sent == 0 and report.not_attempted == 0
    with engine.connect() as conn:
        row = conn.execute(select(SEND)).one()
    assert row.status == "retry"
    wait = (row.next_attempt_at - FRIDAY).total_seconds()
    assert 25 <= wait <= 31  # the reset time, not our own backoff
    assert setup.runtime.dispatcher.dispatch(FRIDAY + timedelta(seconds=10)).sent == 0
    report = setup.runtime.dispatcher.dispatch(FRIDAY + timedelta(seconds=31))
    assert report.sent == 1
    assert len(fake.delivered) == 1
    body = fake.delivered[0]
    assert body["custom_args"]["nurture_send_id"] == row.key
    with engine.connect() as conn:
        row = conn.execute(select(SEND)).one()
    assert (row.status, row.attempts) == ("sent", 2)
    assert row.provider_message_id
    setup.runtime.close()


def test_hanging_server_times_out_into_unknown(
    engine: Engine, tmp_path: Path, fake: FakeSendGrid
) -> None:
    setup = sendgrid_setup(engine, tmp_path, fake, timeout=0.5)
    setup.add("karin@example.com", now=FRIDAY)
    fake.enqueue("hang", seconds=3.0)
    report = setup.runtime.dispatcher.dispatch(FRIDAY)
    assert report.unknown == 1
    setup.runtime.dispatcher.dispatch(FRIDAY + timedelta(hours=1))
    assert setup.ledger() == [("welcome", "unknown")]
    assert len(fake.delivered) == 0  # and nothing was resent
    setup.runtime.close()


def test_false_condition_is_skipped_with_reason_and_the_series_goes_on(setup: Setup) -> None:
    setup.add("ola@example.com", now=FRIDAY, tags=("b2b", "customer"))
    for days in range(0, 16):
        setup.runtime.dispatcher.dispatch(FRIDAY + timedelta(days=days))
    assert [e.step_id for e in setup.transport.sent] == [
        "welcome", "three-models", "choosing", "offer",
    ]  # fmt: skip
    with setup.runtime.engine.connect() as conn:
        skipped = conn.execute(select(SEND).where(SEND.c.status == "skipped")).one()
    assert skipped.step_id == "case-study"
    assert skipped.reason == "condition \"'customer' not in subscriber.tags\" is false"


def test_render_failure_fails_the_step_and_the_series_goes_on(setup: Setup) -> None:
    from nurture.errors import RenderError

    setup.add("karin@example.com", now=FRIDAY)
    compose = setup.runtime.dispatcher.compose

    def broken_welcome(*args: Any) -> Any:
        if args[1].id == "welcome":
            raise RenderError("templates/sv/welcome.md:3: undefined variable")
        return compose(*args)

    setup.runtime.dispatcher.compose = broken_welcome
    report = setup.runtime.dispatcher.dispatch(FRIDAY)
    assert report.failed == 1 and report.sent == 0
    setup.runtime.dispatcher.dispatch(FRIDAY + timedelta(days=3))
    assert setup.ledger() == [("welcome", "failed"), ("three-models", "sent")]


def test_transient_failure_retries_with_backoff_then_sends(setup: Setup) -> None:
    setup.add("karin@example.com", now=FRIDAY)
    setup.transport.fail_next(TransientSendError("503 Service Unavailable", status=503))
    setup.runtime.dispatcher.sender.jitter = lambda: 1.0
    first = setup.runtime.dispatcher.dispatch(FRIDAY)
    assert first.retried == 1
    with setup.runtime.engine.connect() as conn:
        row = conn.execute(select(SEND)).one()
    assert (row.status, row.attempts) == ("retry", 1)
    assert row.next_attempt_at == FRIDAY + timedelta(seconds=60)  # retry_base
    assert setup.runtime.dispatcher.dispatch(FRIDAY + timedelta(seconds=30)).sent == 0
    assert setup.runtime.dispatcher.dispatch(FRIDAY + timedelta(seconds=60)).sent == 1
    assert len(setup.transport.sent) == 1
    assert setup.ledger() == [("welcome", "sent")]


@pytest.mark.parametrize(
    ("error", "first_status"),
    [
        (TransientSendError("503 Service Unavailable", status=503), "retry"),
        (AmbiguousSendError("timed out after sending"), "unknown"),
    ],
)
def test_a_provider_outage_stops_the_pass_and_spends_no_attempts(
    engine: Engine, tmp_path: Path, error: Exception, first_status: str
) -> None:
    # 30 emails due while the provider is down: after OUTAGE_AFTER failures in
    # a row the rest is not attempted (their own attempts are not spent), and
    # nothing is sent for 30 s. A hanging provider leaves 10 `unknown` rows,
    # not 30. Once it is back, the queued emails go out.
    setup = make_setup(engine, tmp_path, send_concurrency=1)
    transport, runtime = setup.transport, setup.runtime
    for number in range(30):
        setup.add(f"s{number:02}@example.com", now=FRIDAY)
    transport.fail_next(*[error] * OUTAGE_AFTER)
    dispatcher = runtime.dispatcher
    dispatcher.dispatch(FRIDAY)
    with engine.connect() as conn:
        rows = conn.execute(
            select(SEND.c.status, SEND.c.reason, SEND.c.attempts).order_by(SEND.c.id)
        ).all()
    assert [row.status for row in rows] == [first_status] * 10 + ["retry"] * 20
    assert {(row.reason, row.attempts) for row in rows[10:]} == {
        ("not attempted: the provider failed 10 times in a row", 0)
    }
    # The pause: nothing is tried for 30 s, though 20 emails are due again.
    assert dispatcher.dispatch(FRIDAY + timedelta(seconds=29)).sent == 0
    assert transport.accepted == 0
    report = dispatcher.dispatch(FRIDAY + timedelta(seconds=30))
    assert report.sent == 20
    assert transport.accepted == 20
    dispatcher.close()


class _BrokenOnce(RateLimiter):
    """A rate limiter with a bug that shows on its second use."""

    def __init__(self) -> None:
        super().__init__(10_000.0)
        self.calls = 0

    def acquire(self) -> None:
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("a bug in the send path")
        super().acquire()


@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_bug_before_the_provider_call_leaves_no_reserved_row(
    engine: Engine, tmp_path: Path, concurrency: int
) -> None:
    setup = make_setup(engine, tmp_path, send_concurrency=concurrency)
    transport, runtime = setup.transport, setup.runtime
    runtime.dispatcher.sender.rate_limiter = _BrokenOnce()
    for number in range(3):
        setup.add(f"s{number}@example.com", now=FRIDAY)
    report = runtime.dispatcher.dispatch(FRIDAY)
    runtime.dispatcher.close()
    assert report.sent == 2 and len(transport.sent) == 2
    with engine.connect() as conn:
        rows = conn.execute(select(SEND.c.status, SEND.c.reason, SEND.c.attempts)).all()
    assert sorted(row.status for row in rows) == ["retry", "sent", "sent"]
    assert [(row.reason, row.attempts) for row in rows if row.status == "retry"] == [
        ("not attempted: internal error (see the worker log)", 0)
    ]


def test_two_dispatchers_recording_the_same_new_version_do_not_collide(engine: Engine) -> None:
    # Two workers that load a new version at the same moment both try to
    # record it; the second insert must do nothing instead of failing the pass.
    versions: dict[tuple[str, str], dict[str, Any]] = {("s", "v1"): {"steps": []}}
    errors = _second_while_first_is_open(
        engine,
        lambda conn: queries.remember_versions(conn, versions, FRIDAY),
        lambda conn: queries.remember_versions(conn, versions, FRIDAY),
    )
    assert errors == []
    with engine.connect() as conn:
        assert queries.load_versions(conn, "s") == {"v1": {"steps": []}}


def test_a_database_that_drops_the_connection_mid_write_fails_no_email(
    setup: Setup, engine: Engine
) -> None:
    # The connection is lost while the plan is written (a server restart):
    # that is not a poison row, so the email must not fail; the pass fails,
    # and a later one sends it.
    setup.add("karin@example.com", now=FRIDAY)
    drops = [1]

    def drop_once(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        # The plan's write begins by holding the batch's claims.
        if drops and re.match(r"\s*UPDATE\s+enrollment\s+SET\s+claimed_until\b", statement, re.I):
            drops.pop()
            raise sqlalchemy.exc.OperationalError(
                statement, None, ConnectionError("server closed the connection unexpectedly")
            )

    event.listen(engine, "before_cursor_execute", drop_once)
    try:
        with pytest.raises(sqlalchemy.exc.OperationalError):
            setup.runtime.dispatcher.dispatch(FRIDAY)
    finally:
        event.remove(engine, "before_cursor_execute", drop_once)
    assert drops == [], "the write was not reached"
    assert setup.ledger() == []  # nothing written, nothing failed
    assert setup.transport.sent == []
    later = FRIDAY + timedelta(minutes=5)  # past the failed batch's pause
    assert setup.runtime.dispatcher.dispatch(later).sent == 1
    assert setup.ledger() == [("welcome", "sent")]


def test_a_pass_after_the_database_failed_mid_pool_is_not_stuck(
    engine: Engine, tmp_path: Path
) -> None:
    # The confirm fails (the database went away) while three sends are still
    # with the provider. Their answers come back after the pass gave up; the
    # next pass must still end (it once waited forever for them).
    calls = iter(range(1_000))

    def latency(_email: object) -> None:
        time.sleep(0.05 if next(calls) == 0 else 0.5)  # the first answers alone

    setup = make_setup(engine, tmp_path, MemoryTransport(hook=latency), send_concurrency=4)
    for number in range(8):
        setup.add(f"s{number}@example.com", now=FRIDAY)
    dispatcher = setup.runtime.dispatcher
    failures = [RuntimeError("the database went away")]

    def fail_once() -> None:
        if failures:
            raise failures.pop()

    dispatcher.sender.before_confirm = fail_once
    with pytest.raises(RuntimeError):
        dispatcher.dispatch(FRIDAY)
    assert failures == []
    time.sleep(1.0)  # the sends in flight answer, to a pass that has ended
    later = FRIDAY + timedelta(minutes=10)
    passes: list[object] = []
    thread = threading.Thread(target=lambda: passes.append(dispatcher.dispatch(later)), daemon=True)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "the next pass hung"
    assert passes, "the next pass raised"
    dispatcher.close()
