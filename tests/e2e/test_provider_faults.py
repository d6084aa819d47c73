"""Provider faults over a full run: a real ``nurture worker`` against a fake
SendGrid that misbehaves in bursts while it sends 300 emails.

In order, each burst after the worker has delivered some more: 429s with a
reset time, 500s and 503s, requests that hang past the client's timeout,
connections dropped after the request body, connections reset, answers lost
after the provider accepted the email, and finally a 401. Then:

* the worker stays up through all of it; after the 401 it sends nothing more
  (dispatching halts, the process lives on to say so);
* a 429's ``X-RateLimit-Reset`` is honoured: no email is tried again before
  the time the provider named;
* after a restart (the key fixed) the run finishes, and the tally keeps the
  invariants: no email accepted twice — not even one whose answer was lost —,
  nothing the ledger does not know, every transient failure sent in the end,
  and only the ambiguous requests (hang, drop, reset, lost answer) ``unknown``,
  each with its reason.

It runs on a SQLite file: what is tested is the worker's side of the provider.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nurture.testing.fake_sendgrid import FakeSendGrid
from nurture.testing.fake_sendgrid_process import FakeSendGridProcess
from tests.e2e.workers import (
    API_KEY,
    WorkerProcess,
    examine,
    make_folder,
    wait_until_nothing_due,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SUBSCRIBERS = 300
TIMEOUT = 1.0  # sendgrid_timeout: a hang of 1.6 s outlives it
HANG = 1.6
# Bursts of at most five in a row: ten transient failures in a row would open
# the outage breaker (a 30 s pause, tested in tests/unit/test_send_guard.py).
BURSTS: list[tuple[str, dict[str, float | int]]] = [
    ("429", {"times": 5, "reset_in": 2.0}),
    ("500", {"times": 3}),
    ("503", {"times": 2}),
    ("hang", {"times": 2, "seconds": HANG}),
    ("drop", {"times": 2}),
    ("reset", {"times": 2}),
    ("lost-answer", {"times": 2}),
]
AMBIGUOUS = {"hang", "drop", "reset", "lost-answer"}


@pytest.fixture
def fake() -> Iterator[FakeSendGridProcess]:
    with FakeSendGrid.start_subprocess(latency=0.01, api_key=API_KEY) as process:
        yield process


def wait_for(
    condition: str, check: Callable[[], bool], worker: WorkerProcess, timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert worker.alive(), f"the worker exited waiting for {condition}: {worker.text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {condition} after {timeout}s"
        time.sleep(0.05)


def more_deliveries(fake: FakeSendGridProcess, worker: WorkerProcess, count: int = 10) -> None:
    """Wait until the worker has delivered ``count`` more emails."""
    target = fake.stats()["delivered"] + count
    wait_for("deliveries", lambda: fake.stats()["delivered"] >= target, worker)


def test_a_worker_rides_out_every_provider_fault_and_keeps_the_invariants(
    tmp_path: Path, fake: FakeSendGridProcess
) -> None:
    db_url = f"sqlite:///{tmp_path / 'nurture.db'}"
    folder = make_folder(
        tmp_path,
        db_url,
        fake.url,
        subscribers=SUBSCRIBERS,
        settings={
            "batch_size": 25,
            "send_concurrency": 2,
            "rate_limit": 150.0,  # the run lasts long enough for every burst
            "sendgrid_timeout": TIMEOUT,
            "retry_base": 0.5,
            "retry_max": 1.0,
        },
    )
    logs = tmp_path / "logs"
    logs.mkdir()
    worker = WorkerProcess(folder, logs / "worker.log")
    restarted: WorkerProcess | None = None
    try:
        for kind, options in BURSTS:
            more_deliveries(fake, worker)
            fake.enqueue(kind, **options)
        more_deliveries(fake, worker)
        assert fake.stats()["delivered"] < SUBSCRIBERS, "the run ended before the 401"
        fake.enqueue("401")
        wait_for("the halt", lambda: "dispatching stopped" in worker.text(), worker)
        # The fake counts a hung request when its hang ends, after the client
        # gave up on it: let any still hanging finish before counting.
        time.sleep(HANG)
        received = fake.stats()["received"]
        time.sleep(2.0)  # four ticks: a halted worker sends nothing more, and lives
        assert worker.alive(), worker.text()[-3000:]
        assert fake.stats()["received"] == received
        assert worker.stop() == 0, worker.text()[-3000:]

        restarted = WorkerProcess(folder, logs / "worker.log")  # the key was fixed
        wait_until_nothing_due(db_url, [restarted], timeout=120)
    finally:
        worker.kill()
        if restarted is not None:
            assert restarted.stop() == 0, restarted.text()[-3000:]

    outcome = examine(folder, fake.send_ids())
    print(outcome.describe())  # with -s
    assert "Traceback" not in worker.text() + (restarted.text() if restarted else "")
    assert outcome.duplicates == [] and outcome.orphans == [], outcome.describe()
    assert outcome.pending == [] and outcome.stuck == [], outcome.describe()
    assert outcome.unexplained == [], outcome.describe()

    history = fake.send_history()
    faults = {kind: 0 for kind, _ in BURSTS}
    for send_id, requests in history.items():
        for request, after in zip(requests, [*requests[1:], None], strict=True):
            if request["behaviour"] in faults:
                faults[request["behaviour"]] += 1
            if request["behaviour"] == "429":
                assert after is not None, f"{send_id}: never tried again after a 429"
                assert after["at"] >= request["reset"] - 0.05, f"{send_id} came back early"
            if request["behaviour"] in AMBIGUOUS:
                # Never resent blindly: the provider may have it.
                assert after is None, f"{send_id} was sent again after a {request['behaviour']}"
    assert faults == {kind: options["times"] for kind, options in BURSTS}, faults
    ambiguous = sum(faults[kind] for kind in AMBIGUOUS)
    lost_answers = faults["lost-answer"]
    # Only the ambiguous requests are unknown; every transient failure went out.
    assert outcome.statuses == {"sent": SUBSCRIBERS - ambiguous, "unknown": ambiguous}
    assert outcome.unknown_reached == lost_answers, outcome.describe()
    assert len(outcome.missing) == ambiguous - lost_answers, outcome.describe()
