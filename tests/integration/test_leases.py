"""Leases, late workers and a worker that dies mid-pass (issue 8), on SQLite and
PostgreSQL.

Dispatchers that share one database keep their leases on a shared, manual wall
clock (:class:`WallClock`). Time passes only when a transport's hook or the test
moves that clock, never by sleeping; threads are ordered with events and every
wait is bounded by :data:`TIMEOUT`, so a hang fails the test instead of the run.

* **Lease**: a pass longer than its lease. When the worker cannot renew (all its
  sends are held by the provider while the clock runs on) another worker takes
  its enrollments; the late worker then loses quietly: no exception, no second
  email, no stuck row. When it can renew, nobody takes its rows.
* **Crash**: a worker dies (or hangs and is abandoned) after some sends; after
  its lease, ``reconcile`` makes exactly the emails that never reached the
  provider due again, and the next pass sends them once.
* **Store**: a worker whose rows were taken cannot reserve them.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from nurture.core.loader import LoadedSequence
from nurture.core.planner import plan_batch
from nurture.sending.dispatcher import Dispatcher, DispatchReport
from nurture.store import batches, journal, queries, reservations
from nurture.testing import MemoryTransport
from nurture.transports.base import OutgoingEmail
from tests.integration.test_dispatcher import ENROLLMENT, FRIDAY, SEND, Setup, make_setup

TIMEOUT = 30.0
"""Seconds any wait may take before the test fails (nothing waits this long
unless something is stuck)."""

LEASE = timedelta(seconds=10)
STEPS = 5  # the example sequence, for a b2b subscriber who is not a customer
STUCK = ("reserved", "queued", "retry")


class Killed(BaseException):
    """The process dying in the middle of a provider call: not an ``Exception``,
    so nothing on the way up classifies it as a send error."""


class WallClock:
    """The workers' shared wall clock: moves only when told to."""

    def __init__(self, start: datetime) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, by: timedelta) -> None:
        with self._lock:
            self._now += by

    def move_to(self, moment: datetime) -> None:
        """Forward to ``moment`` (never backwards: leases were taken on it)."""
        with self._lock:
            self._now = max(self._now, moment)


class Gate:
    """A :class:`MemoryTransport` hook. The first ``free`` sends go through, each
    moving ``clock`` on by ``step`` (the time a send takes); every later send is
    held until :attr:`release` is set, then goes through, or with ``die`` never
    reaches the provider and raises :class:`Killed` instead."""

    def __init__(
        self, clock: WallClock, *, free: int, step: timedelta = timedelta(0), die: bool = False
    ) -> None:
        self.clock = clock
        self.free = free
        self.step = step
        self.die = die
        self.release = threading.Event()
        self.calls = 0
        self.held = 0
        self._cond = threading.Condition()

    def __call__(self, email: OutgoingEmail) -> None:
        with self._cond:
            number = self.calls
            self.calls += 1
            if number >= self.free:
                self.held += 1
                self._cond.notify_all()
        if number < self.free:
            self.clock.advance(self.step)
            return
        if not self.release.wait(TIMEOUT):
            raise AssertionError("the test never released a held send")
        if self.die:
            raise Killed

    def wait_held(self, count: int) -> bool:
        """Block until ``count`` sends are held (False after TIMEOUT)."""
        with self._cond:
            return self._cond.wait_for(lambda: self.held >= count, TIMEOUT)


class Running:
    """``dispatcher.dispatch(now)`` in its own thread."""

    def __init__(self, dispatcher: Dispatcher, now: datetime) -> None:
        self.report: DispatchReport | None = None
        self.error: BaseException | None = None

        def run() -> None:
            try:
                self.report = dispatcher.dispatch(now)
            except BaseException as exc:  # handed to the test by result()
                self.error = exc

        self.thread = threading.Thread(target=run, name="dispatch-under-test", daemon=True)
        self.thread.start()

    def finished(self, timeout: float = TIMEOUT) -> bool:
        self.thread.join(timeout)
        return not self.thread.is_alive()


def worker(
    engine: Engine, tmp_path: Path, clock: WallClock, transport: MemoryTransport, **settings: Any
) -> Setup:
    """A dispatcher of its own (its own worker id) on the shared database and clock."""
    made = make_setup(engine, tmp_path, transport, lease_seconds=LEASE.total_seconds(), **settings)
    made.runtime.dispatcher.sender.wall_clock = clock
    return made


def journaled(engine: Engine, concurrency: int) -> bool:
    """Does a sender at this concurrency keep a send journal on this database?"""
    return concurrency == 1 and journal.directory_for(engine) is not None


def hold_second_claim(setup: Setup, release: threading.Event) -> None:
    """With a send pool the pass claims again while its first batch is with the
    provider; here it waits for ``release`` first, so the other worker's moves
    happen while this one is held at a known place (with a lease it can only
    renew from its send pool)."""
    dispatcher = setup.runtime.dispatcher
    sequences = dispatcher.sequences
    calls = [0]

    def gated() -> dict[str, LoadedSequence]:
        calls[0] += 1
        # Call 1 starts the pass, call 2 is the first claim, call 3 the next.
        if calls[0] == 3 and not release.wait(TIMEOUT):
            raise AssertionError("the test never released the second claim")
        return sequences()

    dispatcher.sequences = gated


def add(setup: Setup, count: int, *, now: datetime = FRIDAY, prefix: str = "s") -> None:
    for number in range(count):
        setup.add(f"{prefix}{number:03}@example.com", now=now)


def statuses(engine: Engine) -> Counter[str]:
    with engine.connect() as conn:
        return Counter(row.status for row in conn.execute(select(SEND.c.status)))


def until(condition: Callable[[], bool]) -> bool:
    """Wait for a state another thread reaches (it signals nothing we could
    wait on); checked every 10 ms, False after TIMEOUT."""
    stop = threading.Event()
    for _ in range(int(TIMEOUT / 0.01)):
        if condition():
            return True
        stop.wait(0.01)
    return False


def accepted(*transports: MemoryTransport) -> Counter[tuple[str, str]]:
    """(recipient, step) accepted by the provider, over every worker: each
    subscriber has one enrollment, so this is (enrollment, step)."""
    return Counter((e.to_email, e.step_id) for t in transports for e in t.sent)


def stuck_under_finished(engine: Engine) -> list[tuple[str, str, str]]:
    """Ledger rows still waiting to be sent under an enrollment that is over."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(SEND.c.step_id, SEND.c.status, ENROLLMENT.c.status.label("enrollment"))
            .join(ENROLLMENT, ENROLLMENT.c.id == SEND.c.enrollment_id)
            .where(SEND.c.status.in_(STUCK), ENROLLMENT.c.status != "active")
        )
        return [(row.step_id, row.status, row.enrollment) for row in rows]


def finish(clock: WallClock, *setups: Setup) -> None:
    """Later passes, a day apart, by every worker in turn (each after a
    reconcile), until the example sequence is over for everyone."""
    for day in range(0, 20):
        now = FRIDAY + timedelta(days=day, minutes=5)
        clock.move_to(now)
        for setup in setups:
            setup.runtime.dispatcher.reconcile(now)
            setup.runtime.dispatcher.dispatch(now)


def enrollment_statuses(engine: Engine) -> Counter[str]:
    with engine.connect() as conn:
        return Counter(row.status for row in conn.execute(select(ENROLLMENT.c.status)))


@pytest.fixture
def closing() -> Iterator[list[Callable[[], object]]]:
    """What to do after the test, in order: release held passes, then close the
    dispatchers (their send pools and coordinators)."""
    todo: list[Callable[[], object]] = []
    yield todo
    for step in todo:
        step()


# Lease test ----------------------------------------------------------------

SUBSCRIBERS = 12
FREE = 4  # sends that go through before the rest are held


@pytest.mark.parametrize("concurrency", [1, 4])
@pytest.mark.parametrize("reconcile_first", [False, True], ids=["taken", "reconciled-then-taken"])
def test_a_worker_whose_lease_ran_out_mid_pass_loses_quietly(
    engine: Engine,
    tmp_path: Path,
    closing: list[Callable[[], object]],
    concurrency: int,
    reconcile_first: bool,
) -> None:
    clock = WallClock(FRIDAY)
    gate = Gate(clock, free=FREE)
    late = worker(engine, tmp_path, clock, MemoryTransport(hook=gate), send_concurrency=concurrency)
    other = worker(engine, tmp_path, clock, MemoryTransport(), send_concurrency=concurrency)
    closing.extend([late.runtime.dispatcher.close, other.runtime.dispatcher.close])
    assert late.runtime.dispatcher.worker_id != other.runtime.dispatcher.worker_id
    add(late, SUBSCRIBERS)
    hold_second_claim(late, gate.release)

    # A claims all twelve, sends four, and then the provider holds its sends.
    run = Running(late.runtime.dispatcher, FRIDAY)
    assert gate.wait_held(concurrency)
    # The four answers are written while the rest is held (without a pool,
    # each with the next reservation, or in the journal with the next call's
    # start); after that the late worker writes nothing until released (it
    # cannot renew).
    if not journaled(engine, concurrency):
        assert until(lambda: statuses(engine)["sent"] == FREE)
    clock.advance(LEASE * 6)  # the late worker's lease ran out long ago

    if reconcile_first:
        other.runtime.dispatcher.reconcile(clock())
    # The other worker's pass starts a minute after the first one's.
    report = other.runtime.dispatcher.dispatch(clock())
    in_flight = concurrency  # reserved, not answered
    # A journaled batch (one send at a time on a SQLite file) is reserved as
    # a whole: until a reconcile fences its journal, nobody else may send any
    # of it, and the late worker, once released, sends the rest itself.
    kept = journaled(engine, concurrency) and not reconcile_first
    handed_over = 0 if kept else SUBSCRIBERS - FREE - concurrency
    assert report.sent == handed_over  # what A had not handed over
    gate.release.set()
    assert run.finished(), "the late worker's pass never ended"
    assert run.error is None, f"the late worker's pass raised {run.error!r}"

    assert len(late.transport.sent) == SUBSCRIBERS - handed_over
    both = accepted(late.transport, other.transport)
    assert len(both) == SUBSCRIBERS and max(both.values()) == 1
    ledger = statuses(engine)
    if reconcile_first:
        # Reserved and unanswered when reconciled: unknown, and the late answer
        # does not overwrite what reconcile (or an admin) decided.
        assert ledger == {"sent": SUBSCRIBERS - in_flight, "unknown": in_flight}
    else:
        assert ledger == {"sent": SUBSCRIBERS}

    finish(clock, late, other)
    both = accepted(late.transport, other.transport)
    assert len(both) == SUBSCRIBERS * STEPS and max(both.values()) == 1
    assert enrollment_statuses(engine) == {"completed": SUBSCRIBERS}
    assert stuck_under_finished(engine) == []
    assert not set(statuses(engine)) & set(STUCK)


@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_pass_longer_than_its_lease_keeps_its_rows_by_renewing(
    engine: Engine, tmp_path: Path, closing: list[Callable[[], object]], concurrency: int
) -> None:
    # Every send takes 2 s of wall clock: after eight of them the pass has run
    # 16 s on a 10 s lease. Then another worker passes (with work of its own:
    # subscribers who joined after the first pass's `now`). It must not take
    # any of the first worker's enrollments.
    clock = WallClock(FRIDAY)
    gate = Gate(clock, free=8, step=timedelta(seconds=2))
    slow = worker(engine, tmp_path, clock, MemoryTransport(hook=gate), send_concurrency=concurrency)
    other = worker(engine, tmp_path, clock, MemoryTransport(), send_concurrency=concurrency)
    closing.extend([slow.runtime.dispatcher.close, other.runtime.dispatcher.close])
    add(slow, SUBSCRIBERS + 4)
    hold_second_claim(slow, gate.release)

    run = Running(slow.runtime.dispatcher, FRIDAY)
    assert gate.wait_held(concurrency)
    if not journaled(engine, concurrency):  # else the answers are in the journal
        assert until(lambda: statuses(engine)["sent"] == 8)
    # With a pool the enrollments of those answers move on at once; without
    # one, with the batch's confirm (the answers themselves are written).
    confirmed = 8 if concurrency > 1 else 0
    assert clock() - FRIDAY == timedelta(seconds=16) > LEASE

    joined = FRIDAY + timedelta(seconds=30)
    add(other, 3, now=joined, prefix="late")
    report = other.runtime.dispatcher.dispatch(joined + timedelta(seconds=30))
    # Every enrollment of the slow worker whose email is not confirmed yet is
    # still its own: the other worker did not claim (and move on) any of them.
    with engine.connect() as conn:
        holders = Counter(row.claimed_by for row in conn.execute(select(ENROLLMENT.c.claimed_by)))
    assert holders == {
        slow.runtime.dispatcher.worker_id: SUBSCRIBERS + 4 - confirmed,
        None: confirmed + 3,
    }
    gate.release.set()
    assert run.finished(), "the slow worker's pass never ended"
    assert run.error is None, f"the slow worker's pass raised {run.error!r}"

    assert report.sent == 3
    assert sorted(e.to_email for e in other.transport.sent) == [
        "late000@example.com", "late001@example.com", "late002@example.com",
    ]  # fmt: skip
    assert {e.to_email for e in slow.transport.sent} == {
        f"s{number:03}@example.com" for number in range(SUBSCRIBERS + 4)
    }
    both = accepted(slow.transport, other.transport)
    assert max(both.values()) == 1
    assert statuses(engine) == {"sent": SUBSCRIBERS + 4 + 3}


def test_without_a_writable_journal_folder_the_serial_sender_commits_per_email(
    engine: Engine, tmp_path: Path, closing: list[Callable[[], object]]
) -> None:
    directory = journal.directory_for(engine)
    if directory is None:
        pytest.skip("send journals are kept for SQLite files only")
    directory.write_text("a file where the journal folder would go\n", encoding="utf-8")
    setup = worker(engine, tmp_path, WallClock(FRIDAY), MemoryTransport(), send_concurrency=1)
    closing.append(setup.runtime.dispatcher.close)
    add(setup, 5)
    report = setup.runtime.dispatcher.dispatch(FRIDAY)
    assert report.sent == 5
    assert statuses(engine) == {"sent": 5}


# Crash test ----------------------------------------------------------------

CRASH_SUBSCRIBERS = 20
CRASH_AFTER = 6


@dataclass
class Crash:
    """What a worker that died mid-pass left, after ``reconcile``."""

    reached: set[str]  # ledger keys the provider accepted from the dead worker
    ledger: dict[str, str]  # key -> status, after reconcile
    attempts: dict[str, int]
    unknown: int  # what reconcile returned
    survivor: Setup
    dead: Setup
    clock: WallClock


def crash(
    engine: Engine,
    tmp_path: Path,
    closing: list[Callable[[], object]],
    *,
    concurrency: int,
    how: str,
) -> Crash:
    """A worker sends CRASH_AFTER emails and then dies: ``die`` raises
    :class:`Killed` from the provider call (the exception unwinds the pass);
    ``hang`` holds its calls forever and the worker is abandoned, as a killed
    process would be (nothing of it runs again until the test releases it).
    Then, after its lease, another worker reconciles."""
    clock = WallClock(FRIDAY)
    gate = Gate(clock, free=CRASH_AFTER, die=how == "die")
    dead = worker(engine, tmp_path, clock, MemoryTransport(hook=gate), send_concurrency=concurrency)
    survivor = worker(engine, tmp_path, clock, MemoryTransport(), send_concurrency=concurrency)
    closing.extend([dead.runtime.dispatcher.close, survivor.runtime.dispatcher.close])
    add(dead, CRASH_SUBSCRIBERS)
    if how == "die":
        gate.release.set()
        with pytest.raises(Killed):
            dead.runtime.dispatcher.dispatch(FRIDAY)
    else:
        hold_second_claim(dead, gate.release)
        run = Running(dead.runtime.dispatcher, FRIDAY)
        assert gate.wait_held(concurrency)
        if not journaled(engine, concurrency):  # else the answers are in the journal
            assert until(lambda: statuses(engine)["sent"] == CRASH_AFTER)

        # Released at teardown, before the dispatchers close: its held calls
        # then go through (to a row reconcile settled; the late answer is
        # dropped) and the pass ends.
        def let_go() -> None:
            gate.release.set()
            run.finished()

        closing.insert(0, let_go)
    reached = {e.send_id for e in dead.transport.sent}
    assert len(reached) == CRASH_AFTER
    clock.advance(LEASE + timedelta(seconds=1))
    unknown = survivor.runtime.dispatcher.reconcile(clock())
    with engine.connect() as conn:
        rows = conn.execute(select(SEND.c.key, SEND.c.status, SEND.c.attempts)).all()
    return Crash(
        reached,
        {row.key: row.status for row in rows},
        {row.key: row.attempts for row in rows},
        unknown,
        survivor,
        dead,
        clock,
    )


CRASH_CASES = [
    pytest.param(1, "die", id="serial-die"),
    pytest.param(1, "hang", id="serial-hang"),
    pytest.param(4, "hang", id="pool-hang"),
]


@pytest.mark.parametrize(("concurrency", "how"), CRASH_CASES)
def test_after_a_crash_what_never_reached_the_provider_is_due_again_and_sent_once(
    engine: Engine, tmp_path: Path, closing: list[Callable[[], object]], concurrency: int, how: str
) -> None:
    left = crash(engine, tmp_path, closing, concurrency=concurrency, how=how)
    never_reached = set(left.ledger) - left.reached
    assert len(left.ledger) == CRASH_SUBSCRIBERS
    # Everything that reached the provider is settled one way or the other.
    assert {left.ledger[key] for key in left.reached} <= {"sent", "unknown"}
    if concurrency == 1:
        # One call at a time: each answer was written before the next call
        # (to the ledger, or to the send journal that reconcile read back).
        assert {left.ledger[key] for key in left.reached} == {"sent"}
        directory = journal.directory_for(engine)
        if directory is not None:  # the journal was read and removed
            assert list(directory.glob("*.log")) == []
    # Of the rest, at most the calls in flight at the crash are `unknown`; every
    # other one is due again, without an attempt spent.
    lost = {key for key in never_reached if left.ledger[key] != "retry"}
    assert {left.ledger[key] for key in lost} <= {"unknown"}
    assert len(lost) <= concurrency
    assert {left.attempts[key] for key in never_reached - lost} == {0}

    later = left.clock() + timedelta(minutes=2)
    left.clock.move_to(later)
    report = left.survivor.runtime.dispatcher.dispatch(later)
    assert report.sent == len(never_reached - lost)
    assert {e.send_id for e in left.survivor.transport.sent} == never_reached - lost
    both = accepted(left.dead.transport, left.survivor.transport)
    assert sum(both.values()) == CRASH_SUBSCRIBERS - len(lost)
    assert max(both.values()) == 1
    assert not set(statuses(engine)) & set(STUCK)


@pytest.mark.parametrize(
    ("concurrency", "how"),
    [
        pytest.param(1, "die", id="serial-die"),
        pytest.param(1, "hang", id="serial-hang"),
        pytest.param(4, "hang", id="pool-hang"),
    ],
)
def test_a_crash_leaves_at_most_send_concurrency_unknown_rows(
    engine: Engine, tmp_path: Path, closing: list[Callable[[], object]], concurrency: int, how: str
) -> None:
    left = crash(engine, tmp_path, closing, concurrency=concurrency, how=how)
    assert left.unknown == Counter(left.ledger.values())["unknown"]
    assert left.unknown <= concurrency


def test_a_send_thread_that_dies_does_not_hang_the_pass(engine: Engine, tmp_path: Path) -> None:
    # The serial case of this is `serial-die` above: Killed unwinds dispatch.
    # If this fails, the pass's threads are left behind (daemons, idle): nothing
    # can stop them, so the dispatcher is deliberately not closed.
    clock = WallClock(FRIDAY)
    gate = Gate(clock, free=CRASH_AFTER, die=True)
    gate.release.set()
    dying = worker(engine, tmp_path, clock, MemoryTransport(hook=gate), send_concurrency=4)
    add(dying, CRASH_SUBSCRIBERS)
    run = Running(dying.runtime.dispatcher, FRIDAY)
    assert run.finished(timeout=5.0), "the pass hung after a send thread died"
    dying.runtime.dispatcher.close()
    assert isinstance(run.error, BaseException)
    assert len(dying.transport.sent) == CRASH_AFTER


# A late worker at the store ------------------------------------------------


def test_a_worker_whose_rows_were_taken_cannot_reserve_them(
    engine: Engine, tmp_path: Path, closing: list[Callable[[], object]]
) -> None:
    setup = make_setup(engine, tmp_path)
    closing.append(setup.runtime.dispatcher.close)
    add(setup, 2)
    sequences = setup.runtime.registry.sequences()
    lease = FRIDAY + LEASE

    def claim(worker_id: str, wall: datetime) -> list[int]:
        with engine.begin() as conn:
            return queries.claim_due_enrollments(
                conn,
                now=FRIDAY,
                lease_until=wall + LEASE,
                worker_id=worker_id,
                sequence_ids=list(sequences),
                limit=10,
                lease_now=wall,
            )

    # Worker A claims both enrollments and queues their emails.
    ids = claim("A", FRIDAY)
    with engine.begin() as conn:
        plan = plan_batch(
            batches.load_batch(conn, ids, FRIDAY),
            sequences,
            FRIDAY,
            compose=setup.runtime.dispatcher.compose,
            new_key=lambda: uuid.uuid4().hex,
        )
        mine, lost = batches.write_plan(conn, plan, "A", lease, FRIDAY)
    assert len(ids) == 2 and lost == set()
    first, second = (email.key for email in mine.emails)
    assert statuses(engine) == {"queued": 2}

    # Within the lease nobody else can take them; once it ran out, B takes both.
    assert claim("B", lease - timedelta(seconds=1)) == []
    later = lease + timedelta(seconds=1)
    taken = claim("B", later)
    assert sorted(taken) == sorted(ids)

    # A, late, tries to reserve them both ways: neither works, nothing changes.
    with engine.begin() as conn:
        assert reservations.reserve(conn, [first, second], "A", later + LEASE, "memory") == set()
        assert reservations.reserve(conn, [first], "A", later + LEASE, "memory") == set()
    assert reserve_one(engine, "A", second, later + LEASE) is False
    assert statuses(engine) == {"queued": 2}

    # B, the owner now, can.
    with engine.begin() as conn:
        assert reservations.reserve(conn, [first], "B", later + LEASE, "memory") == {first}
    assert reserve_one(engine, "B", second, later + LEASE) is True
    assert statuses(engine) == {"reserved": 2}
    with engine.connect() as conn:
        count = conn.execute(
            select(func.count()).select_from(SEND).where(SEND.c.attempts == 1)
        ).scalar_one()
    assert count == 2


def reserve_one(engine: Engine, worker_id: str, key: str, lease_until: datetime) -> bool:
    """The reservation a sender without a pool makes, for one email."""
    with reservations.SerialLedger(engine, worker_id, "memory") as ledger:
        return ledger.step(None, key, lease_until)
