"""Scale out: four ``nurture worker`` processes share one PostgreSQL database.

10,000 enrollments are due at once; four real worker processes claim them
(``FOR UPDATE SKIP LOCKED``) and send through the SendGrid transport to a fake
SendGrid in a process of its own, which counts every request by the
``nurture_send_id`` it carries. Once nothing is due the workers are stopped as
systemd would (SIGTERM), and then: every email was received and accepted
exactly once, the ledger has one ``sent`` row per (enrollment, step) and
nothing else, none is missing, and every worker did part of the work.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from nurture.testing.fake_sendgrid import FakeSendGrid
from nurture.testing.fake_sendgrid_process import FakeSendGridProcess
from tests.conftest import PG_ENV
from tests.e2e.workers import API_KEY, examine, make_folder, start_workers, wait_until_nothing_due

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        not os.environ.get(PG_ENV),
        reason=f"several workers share one database only on PostgreSQL: set {PG_ENV}",
    ),
]

SUBSCRIBERS = 10_000
WORKERS = 4


@pytest.fixture
def fake() -> Iterator[FakeSendGridProcess]:
    with FakeSendGrid.start_subprocess(latency=0.002, api_key=API_KEY) as process:
        yield process


def test_four_workers_send_every_email_exactly_once(
    tmp_path: Path, pg_schema_url: str, fake: FakeSendGridProcess
) -> None:
    folder = make_folder(tmp_path, pg_schema_url, fake.url, subscribers=SUBSCRIBERS)
    workers = start_workers(folder, tmp_path / "logs", WORKERS)
    try:
        wait_until_nothing_due(pg_schema_url, workers, timeout=240)
    finally:
        codes = [worker.stop() for worker in workers]
    assert codes == [0] * WORKERS, [worker.text()[-2000:] for worker in workers]

    received = fake.send_ids()
    outcome = examine(folder, received)
    print(outcome.describe(), [worker.sent() for worker in workers])  # with -s
    assert outcome.statuses == {"sent": SUBSCRIBERS}, outcome.describe()
    assert outcome.duplicates == [] and outcome.missing == [], outcome.describe()
    assert outcome.orphans == [], outcome.describe()
    # Exactly one request per email: no worker sent a step another had claimed.
    assert sorted({counts["received"] for counts in received.values()}) == [1]
    assert outcome.accepted == SUBSCRIBERS
    shares = [worker.sent() for worker in workers]
    assert sum(shares) == SUBSCRIBERS, shares
    assert all(share > 0 for share in shares), f"a worker sent nothing: {shares}"
