"""Workers die independently: the crash test of ``tests/integration/test_crash.py``
with four ``nurture worker`` processes on one PostgreSQL database.

1,000 emails (500 subscribers, two steps due at once) go through the SendGrid
transport to a fake SendGrid in its own process, which counts every request by
``nurture_send_id`` across the workers' deaths. While they send, a random
worker is SIGKILLed every fraction of a second (seeded, so a failure can be
replayed) while the provider is receiving, and started again a random moment
later, while the others carry on.
Then the workers are left to finish, a ``nurture dispatch`` reconciles what the
dead left behind (after their leases ran out) and sends it, and:

* no (enrollment, step) was accepted by the provider twice, and the provider
  received nothing the ledger does not know;
* nothing is lost beyond the requests in flight at the kills: at most
  ``send_concurrency`` emails per kill never reached the provider and will not
  be sent again (the documented ``unknown`` path), each with its reason;
* nothing is left ``reserved``/``queued``/``retry`` or due.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nurture.testing.fake_sendgrid import FakeSendGrid
from nurture.testing.fake_sendgrid_process import FakeSendGridProcess
from tests.conftest import PG_ENV
from tests.e2e.workers import (
    API_KEY,
    WorkerProcess,
    examine,
    make_folder,
    start_workers,
    wait_until_nothing_due,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        not os.environ.get(PG_ENV),
        reason=f"several workers share one database only on PostgreSQL: set {PG_ENV}",
    ),
]

SUBSCRIBERS = 500
STEPS = ("welcome", "offer")
WORKERS = 4
CONCURRENCY = 8
LEASE = 3.0  # seconds: a killed worker's rows are free again soon
KILLS = 10
LATENCY = 0.1  # per request at the fake: a kill lands with requests in flight
SEED = 20_261_201


@pytest.fixture
def fake() -> Iterator[FakeSendGridProcess]:
    with FakeSendGrid.start_subprocess(latency=LATENCY, api_key=API_KEY) as process:
        yield process


def requests_arriving(fake: FakeSendGridProcess, within: float = 5.0) -> bool:
    """Whether a mail send reaches the fake within ``within`` seconds: the moment
    to kill, when some worker has requests in flight."""
    before = fake.stats()["received"]
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if fake.stats()["received"] > before:
            return True
        time.sleep(0.02)
    return False


def test_four_workers_killed_at_random_moments_lose_at_most_the_requests_in_flight(
    tmp_path: Path, pg_schema_url: str, fake: FakeSendGridProcess
) -> None:
    folder = make_folder(
        tmp_path,
        pg_schema_url,
        fake.url,
        subscribers=SUBSCRIBERS,
        steps=STEPS,
        settings={"batch_size": 50, "send_concurrency": CONCURRENCY, "lease_seconds": LEASE},
    )
    total = SUBSCRIBERS * len(STEPS)
    rng = random.Random(SEED)
    logs = tmp_path / "logs"
    workers = start_workers(folder, logs, WORKERS)
    restarts: dict[int, float] = {}  # slot -> when its worker starts again
    kills = 0
    began = time.monotonic()
    try:
        # Kill while the provider is still receiving: each kill lands mid-run.
        while kills < KILLS and fake.stats()["delivered"] < total * 0.9:
            time.sleep(rng.uniform(0.1, 0.5))
            now = time.monotonic()
            for slot, at in list(restarts.items()):
                if at <= now:
                    workers[slot] = WorkerProcess(folder, workers[slot].log)
                    del restarts[slot]
            # Only a worker that got as far as sending: a kill during start-up
            # (imports, migrations) tests nothing.
            alive = [s for s in range(WORKERS) if s not in restarts and workers[s].ready()]
            if not alive or not requests_arriving(fake):
                continue
            time.sleep(rng.uniform(0.0, LATENCY))
            slot = rng.choice(alive)
            workers[slot].kill()
            kills += 1
            restarts[slot] = now + rng.uniform(0.0, 2.0)
        for slot in restarts:
            workers[slot] = WorkerProcess(folder, workers[slot].log)
        # The dead workers' leases run out; then one pass reconciles their
        # rows (reserved -> unknown, queued -> due again) and sends the rest.
        print(f"kills over at {time.monotonic() - began:.1f}s", fake.stats())
        time.sleep(LEASE + 0.5)
        reconciled = folder.run("dispatch")
        print(f"reconciled at {time.monotonic() - began:.1f}s", reconciled.stdout)
        assert reconciled.returncode in (0, 1), reconciled.stderr
        wait_until_nothing_due(pg_schema_url, workers, timeout=180)
        print(f"nothing due at {time.monotonic() - began:.1f}s")
    finally:
        codes = [worker.stop() for worker in workers]
    assert codes == [0] * WORKERS, [worker.text()[-2000:] for worker in workers]
    final = folder.run("dispatch")
    assert final.returncode in (0, 1), final.stderr
    assert "Traceback" not in final.stderr, final.stderr

    received = fake.send_ids()
    outcome = examine(folder, received)
    print(f"{kills} kills:", outcome.describe())  # with -s
    assert kills >= KILLS // 2, f"the run finished before the kills ({kills})"
    assert outcome.duplicates == [], outcome.describe()
    assert outcome.orphans == [], outcome.describe()
    assert outcome.stuck == [] and outcome.pending == [], outcome.describe()
    assert outcome.unexplained == [], outcome.describe()
    assert len(outcome.missing) <= CONCURRENCY * kills, outcome.describe()
    # Every email is accounted for: accepted once, or among the few in doubt.
    assert outcome.accepted + len(outcome.missing) == total, outcome.describe()
    assert set(outcome.statuses) <= {"sent", "unknown", "failed"}, outcome.describe()
