"""The database goes away: PostgreSQL restarts in the middle of a worker's run.

The test starts a PostgreSQL server of its own (``initdb`` into a temporary
folder, a free port; as the ``postgres`` user when run as root, which initdb
refuses), a ``nurture worker`` on it sending 400 emails to a fake SendGrid,
and restarts the server (``pg_ctl restart -m fast``: every connection is cut)
once the worker is well into its run. The worker logs the failed pass, keeps
ticking, reconnects (``pool_pre_ping``) and sends on; a catch-up pass then
reconciles what the broken pass left claimed, and sends it. The invariants of the crash
test hold: nothing accepted twice, nothing unknown to the ledger, at most
``send_concurrency`` emails in doubt, each with its reason, nothing stuck.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from nurture.testing.fake_sendgrid import FakeSendGrid
from nurture.testing.fake_sendgrid_process import FakeSendGridProcess
from tests.e2e.workers import API_KEY, WorkerProcess, examine, make_folder, wait_until_nothing_due

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(300)]

BINARIES = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
SUBSCRIBERS = 400
CONCURRENCY = 4
LEASE = 3.0


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _as_postgres(command: list[str]) -> list[str]:
    """``command`` run as the ``postgres`` user when we are root (initdb refuses root)."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


class Server:
    """A throwaway PostgreSQL server: its own data folder, socket folder and port."""

    def __init__(self, bin_dir: str, folder: Path) -> None:
        self.bin = Path(bin_dir)
        self.data = folder / "data"
        self.log = folder / "server.log"
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self.folder = folder

    def _pg(self, *args: str) -> None:
        result = subprocess.run(
            _as_postgres([str(self.bin / args[0]), *args[1:]]),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, f"{args[0]}: {result.stderr}"

    def init(self) -> None:
        self._pg("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def pg_ctl(self, action: str, *extra: str) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
        self._pg(
            "pg_ctl", action, "-D", str(self.data), "-l", str(self.log), "-w", "-o", options, *extra
        )


@pytest.fixture
def server() -> Iterator[Server]:
    if not BINARIES:
        pytest.skip("needs PostgreSQL's server binaries (/usr/lib/postgresql/*/bin/initdb)")
    if os.geteuid() == 0 and (shutil.which("runuser") is None or not _has_user("postgres")):
        pytest.skip("as root, initdb needs runuser and a 'postgres' user to run as")
    folder = Path(tempfile.mkdtemp(prefix="nurture-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    instance = Server(BINARIES[-1], folder)
    try:
        instance.init()
        instance.pg_ctl("start")
        yield instance
    finally:
        subprocess.run(
            _as_postgres(
                [str(instance.bin / "pg_ctl"), "stop", "-D", str(instance.data), "-m", "immediate"]
            ),
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def fake() -> Iterator[FakeSendGridProcess]:
    with FakeSendGrid.start_subprocess(latency=0.05, api_key=API_KEY) as process:
        yield process


def wait_until_quiet(
    fake: FakeSendGridProcess, worker: WorkerProcess, quiet: float = 2.0, timeout: float = 120
) -> None:
    """Until the worker has sent nothing for ``quiet`` seconds (four ticks): it
    has sent all it can now."""
    deadline = time.monotonic() + timeout
    last, since = fake.stats()["delivered"], time.monotonic()
    while time.monotonic() - since < quiet:
        assert worker.alive() and time.monotonic() < deadline, worker.text()[-3000:]
        time.sleep(0.2)
        delivered = fake.stats()["delivered"]
        if delivered != last:
            last, since = delivered, time.monotonic()


def test_a_worker_rides_out_a_database_restart(
    tmp_path: Path, server: Server, fake: FakeSendGridProcess
) -> None:
    folder = make_folder(
        tmp_path,
        server.url,
        fake.url,
        subscribers=SUBSCRIBERS,
        settings={
            "batch_size": 25,
            "send_concurrency": CONCURRENCY,
            "lease_seconds": LEASE,
            "rate_limit": 100.0,  # long enough a run to restart the server under it
        },
    )
    logs = tmp_path / "logs"
    logs.mkdir()
    worker = WorkerProcess(folder, logs / "worker.log")
    try:
        deadline = time.monotonic() + 60
        while fake.stats()["delivered"] < SUBSCRIBERS // 4:
            assert worker.alive() and time.monotonic() < deadline, worker.text()[-3000:]
            time.sleep(0.05)
        server.pg_ctl("restart", "-m", "fast")
        restarted_at = fake.stats()["delivered"]
        assert restarted_at < SUBSCRIBERS, "the run ended before the restart"
        while fake.stats()["delivered"] <= restarted_at + CONCURRENCY:  # it is back
            assert worker.alive() and time.monotonic() < deadline + 60, worker.text()[-3000:]
            time.sleep(0.05)
        wait_until_quiet(fake, worker)
        # The batch the restart broke is given back due a minute later
        # (RETRY_FAILED_BATCH), and its email in flight waits for a reconcile
        # (the worker's job runs every minute). One pass as of 90 s from now
        # stands in for that minute: it reconciles, then sends the rest.
        later = (datetime.now(UTC) + timedelta(seconds=90)).isoformat()
        catch_up = folder.run("--now", later, "dispatch")
        assert catch_up.returncode in (0, 1), catch_up.stderr
        wait_until_nothing_due(server.url, [worker], timeout=60)
        assert worker.alive(), worker.text()[-3000:]
    finally:
        code = worker.stop()
    log = worker.text()
    assert code == 0, log[-3000:]

    outcome = examine(folder, fake.send_ids())
    print(f"restart after {restarted_at} delivered:", outcome.describe())  # with -s
    # It noticed, said so, and carried on after the restart.
    assert "dispatch pass failed" in log or "heartbeat" in log, log[-3000:]
    assert fake.stats()["delivered"] > restarted_at
    assert outcome.duplicates == [] and outcome.orphans == [], outcome.describe()
    assert outcome.stuck == [] and outcome.pending == [], outcome.describe()
    assert outcome.unexplained == [], outcome.describe()
    # A restart fails no email: only the requests in flight may be in doubt.
    assert outcome.statuses["failed"] == 0, outcome.describe()
    assert len(outcome.missing) <= CONCURRENCY, outcome.describe()
    assert outcome.accepted + len(outcome.missing) == SUBSCRIBERS, outcome.describe()
