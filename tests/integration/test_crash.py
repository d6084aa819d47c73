"""The crash test: ``nurture dispatch --once`` SIGKILLed at random moments loses
almost nothing and sends nothing twice.

A real ``nurture`` process sends 2,000 emails (1,000 subscribers, two steps due
at once) through the SendGrid transport to a fake SendGrid running as its own
process, so it counts every request across the sender's deaths. The sender is
killed mid-pass round after round (seeded, so a failure can be replayed),
restarted once its lease has run out, and finally allowed to finish. Then:

* no (enrollment, step) was accepted by the provider twice;
* the emails that never reached the provider and will not be sent again (a
  ledger row ``unknown`` the fake never saw, a step passed over without a send)
  number at most ``send_concurrency`` per kill: only the requests in flight at
  the instant of the kill may be ambiguous;
* nothing is left ``reserved``/``queued``/``retry`` under a finished
  enrollment, and the last pass left nothing due behind.

The same run one send at a time (300 emails, 8 kills) tests the serial
sender: on SQLite its send journal, on PostgreSQL a commit per email. There a
kill may leave at most one ``unknown`` row.

The clock given to each process (``--now``, which leases are kept on) is a
fixed base plus the real time elapsed, and after each kill it is moved on past
the killed pass's lease instead of waiting for the lease to run out in real
time. Runs in ``make test``; deselect with ``-m "not slow"``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.pool import NullPool

from nurture.store.db import make_engine
from nurture.store.tables import EnrollmentRow, SendRow
from nurture.testing.fake_sendgrid import FakeSendGrid
from nurture.testing.fake_sendgrid_process import FakeSendGridProcess
from tests.factories import POSTAL_ADDRESS, sequence_dict

# Twelve kills, each a new process: about a minute on a quiet machine, so the
# suite's 120 s default is no margin on a busy one.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
NURTURE = [sys.executable, "-m", "nurture"]
API_KEY = "SG.crash-test-key.not-a-real-one"
BASE = datetime(2026, 3, 3, 10, 0, tzinfo=UTC)  # a Tuesday morning
SUBSCRIBERS = 1_000
STEPS = ("welcome", "offer")  # both due at once: 2,000 emails
CONCURRENCY = 8
BATCH = 200
LEASE = 2.0  # seconds: short, so a killed sender's work is free again soon
KILLS = 12
LATENCY = 0.03  # per request at the fake: a kill lands with requests in flight
KILL_WITHIN = 0.5  # seconds after the first request of a round
SEED = 20_261_130
IN_FLIGHT = frozenset({"reserved", "queued", "retry"})
SEND = SendRow.__table__  # type: ignore[attr-defined]
ENROLLMENT = EnrollmentRow.__table__  # type: ignore[attr-defined]


@dataclass
class Folder:
    path: Path
    env: dict[str, str]
    started: float  # time.monotonic() at BASE

    def now(self) -> str:
        """BASE plus the real time elapsed (and any skipped): an ever-advancing ``--now``."""
        return (BASE + timedelta(seconds=time.monotonic() - self.started)).isoformat()

    def skip(self, seconds: float) -> None:
        """Move ``now`` on by ``seconds`` at once, as if they had passed."""
        self.started -= seconds

    def command(self, *args: str, now: str | None = None) -> list[str]:
        return [*NURTURE, "--now", now or self.now(), *args]

    def run(self, *args: str, now: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*args, now=now),
            cwd=self.path,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )


@pytest.fixture
def fake() -> Iterator[FakeSendGridProcess]:
    with FakeSendGrid.start_subprocess(latency=LATENCY, api_key=API_KEY) as process:
        yield process


@dataclass(frozen=True)
class Plan:
    """How big a crash run is: subscribers (two emails each), the sender's
    concurrency, and how many times it is killed."""

    subscribers: int = SUBSCRIBERS
    concurrency: int = CONCURRENCY
    kills: int = KILLS


POOLED = Plan()
# One send at a time (on SQLite, the send journal): fewer emails, as each
# takes the fake's whole latency.
SERIAL = Plan(subscribers=150, concurrency=1, kills=8)


def make_folder(tmp_path: Path, db_url: str, fake_url: str, plan: Plan = POOLED) -> Folder:
    """A working folder: a two-step sequence on the example templates, SendGrid
    pointed at the fake, and the plan's subscribers imported in one CSV."""
    work = tmp_path / "work"
    shutil.copytree(ROOT / "templates", work / "templates")
    steps = sequence_dict()["steps"]
    for step in steps:
        step["wait"] = 0
    definition = sequence_dict(id="crash", timezone="UTC", trigger={"tags": ["crash"]}, steps=steps)
    (work / "sequences").mkdir()
    # JSON is YAML: the sequence file is written from the factory's dict.
    (work / "sequences" / "crash.yaml").write_text(json.dumps(definition), encoding="utf-8")
    (work / "nurture.toml").write_text(
        'transport = "sendgrid"\n'
        'base_url = "https://mail.example.se"\n'
        f'postal_address = "{POSTAL_ADDRESS}"\n'
        f'sendgrid_api_host = "{fake_url}"\n'
        "sendgrid_timeout = 5.0\n"
        'secret_key = "crash-test-secret-not-a-placeholder"\n'
        f"batch_size = {BATCH}\n"
        f"send_concurrency = {plan.concurrency}\n"
        "rate_limit = 100000.0\n"
        f"lease_seconds = {LEASE}\n",
        encoding="utf-8",
    )
    rows = ["email,name,tags"] + [
        f"person{i:04d}@example.com,Person {i},crash" for i in range(plan.subscribers)
    ]
    (work / "people.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    env.update(COLUMNS="200", NURTURE_DATABASE_URL=db_url, NURTURE_SENDGRID_API_KEY=API_KEY)
    folder = Folder(work, env, time.monotonic())
    enrolled = (BASE - timedelta(hours=1)).isoformat()
    imported = folder.run("subscribers", "import", "people.csv", now=enrolled)
    assert imported.returncode == 0, imported.stderr
    assert f"{plan.subscribers} new enrollments" in imported.stdout, imported.stdout
    return folder


def kill_mid_pass(folder: Folder, fake: FakeSendGridProcess, rng: random.Random) -> bool:
    """Start a pass, SIGKILL it a random moment after its first request reaches
    the fake; True if it was killed (False: it finished first)."""
    before = fake.stats()["received"]
    process = subprocess.Popen(
        folder.command("dispatch", "--once"),
        cwd=folder.path,
        env=folder.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            if fake.stats()["received"] > before:
                break
            time.sleep(0.01)
        time.sleep(rng.uniform(0, KILL_WITHIN))
        if process.poll() is not None:
            return False
        process.kill()
        return True
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


@dataclass
class Outcome:
    kills: int
    concurrency: int
    duplicates: list[str]  # send ids accepted more than once
    orphans: list[str]  # send ids the fake received that no ledger row has
    lost: list[tuple[int, str, str]]  # (enrollment, step, why) never sent, not due again
    unknown_reached: int  # unknown rows whose request did reach the provider
    pending: list[tuple[int, str]]  # still to send after the last pass
    stuck: list[tuple[int, str, str, str]]  # (enrollment, step, send status, enrollment status)
    statuses: Counter[str]

    def describe(self) -> str:
        return (
            f"{self.kills} kills: {len(self.lost)} lost "
            f"(limit {self.concurrency * self.kills}), {len(self.duplicates)} accepted twice, "
            f"{self.unknown_reached} unknown that reached the provider, "
            f"{len(self.pending)} still due, {len(self.stuck)} stuck; "
            f"ledger {dict(sorted(self.statuses.items()))}"
        )


def examine(
    db_url: str, received: dict[str, dict[str, int]], kills: int, concurrency: int
) -> Outcome:
    engine = make_engine(db_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            enrollments = {
                row.id: row.status
                for row in conn.execute(select(ENROLLMENT.c.id, ENROLLMENT.c.status))
            }
            ledger = {
                (row.enrollment_id, row.step_id): (row.key, row.status)
                for row in conn.execute(
                    select(SEND.c.enrollment_id, SEND.c.step_id, SEND.c.key, SEND.c.status)
                )
            }
    finally:
        engine.dispose()
    keys = {key for key, _ in ledger.values()}
    accepted = {key for key, counts in received.items() if counts["accepted"] >= 1}
    lost: list[tuple[int, str, str]] = []
    pending: list[tuple[int, str]] = []
    stuck: list[tuple[int, str, str, str]] = []
    unknown_reached = 0
    for enrollment, enrollment_status in enrollments.items():
        for step in STEPS:
            key, status = ledger.get((enrollment, step), (None, None))
            if status in IN_FLIGHT and enrollment_status != "active":
                stuck.append((enrollment, step, str(status), enrollment_status))
            if key in accepted:
                unknown_reached += status == "unknown"
                continue
            if enrollment_status == "active" and (status is None or status in IN_FLIGHT):
                pending.append((enrollment, step))
            else:
                lost.append((enrollment, step, str(status or f"no send, {enrollment_status}")))
    return Outcome(
        kills=kills,
        concurrency=concurrency,
        duplicates=sorted(key for key, counts in received.items() if counts["accepted"] > 1),
        orphans=sorted(set(received) - keys),
        lost=lost,
        unknown_reached=unknown_reached,
        pending=pending,
        stuck=stuck,
        statuses=Counter(str(status) for _, status in ledger.values()),
    )


@pytest.mark.parametrize("plan", [POOLED, SERIAL], ids=["pool", "serial"])
def test_sigkill_at_random_moments_loses_at_most_the_requests_in_flight(
    tmp_path: Path, db_url: str, fake: FakeSendGridProcess, plan: Plan
) -> None:
    folder = make_folder(tmp_path, db_url, fake.url, plan)
    rng = random.Random(SEED)
    kills = 0
    while kills < plan.kills and kill_mid_pass(folder, fake, rng):
        kills += 1
        folder.skip(LEASE + 0.5)  # past the killed pass's lease
    before_last = fake.stats()["delivered"]
    last = folder.run("dispatch", "--once")
    assert last.returncode == 0, last.stderr
    again = folder.run("dispatch", "--once")
    assert again.returncode == 0, again.stderr

    outcome = examine(db_url, fake.send_ids(), kills, plan.concurrency)
    print(outcome.describe(), f"({before_last} accepted before the last pass)")  # with -s
    assert outcome.duplicates == [], outcome.describe()
    assert outcome.orphans == [], f"sent without a ledger row: {outcome.orphans[:5]}"
    assert outcome.stuck == [], f"{outcome.stuck[:5]}: {outcome.describe()}"
    assert outcome.pending == [], f"{outcome.pending[:5]}: {outcome.describe()}"
    lost = len(outcome.lost)
    assert lost <= plan.concurrency * kills, outcome.describe()
    if plan.concurrency == 1:
        # One call in flight at a kill: every answer before it was written
        # (in the ledger, or in the send journal that reconcile reads back).
        assert outcome.statuses["unknown"] <= kills, outcome.describe()
    # Every email is accounted for: sent once, or among the few lost.
    sent = sum(counts["accepted"] for counts in fake.send_ids().values())
    assert sent + len(outcome.lost) == plan.subscribers * len(STEPS), outcome.describe()
    # The harness itself: every kill landed while there was work in flight.
    assert kills == plan.kills, f"a pass finished before it was killed ({before_last} accepted)"
