"""SIGTERM stops ``nurture worker`` whatever its main thread was doing.

Python runs a signal handler on the main thread between two bytecodes, so it
may run in the middle of a log call, holding the log handler's lock. The
worker once stopped from inside its handler: it joined the dispatching
thread, which waited for that lock to log the end of its pass, and the
process hung until killed (seen in CI: ``nurture worker`` outlived SIGTERM by
a minute). This test makes that moment happen on purpose: a log handler sends
the signal from inside ``emit`` on the main thread while a pass is in flight
(the scheduler logged there then); where the main thread logs nothing during
a pass, the signal comes from another thread, still while the pass runs.

And a second signal, while the first waits for a provider that hangs, ends
``nurture worker`` and ``nurture run`` at once, as SIGKILL would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from nurture.store.db import make_engine
from nurture.testing.fake_sendgrid import FakeSendGrid
from tests.e2e.folders import enable_example, public_settings
from tests.e2e.test_cli_engine import NOW, NURTURE, free_port
from tests.e2e.test_cli_engine import env as cli_env
from tests.e2e.test_cli_engine import run as run_cli

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "SG.e2e-signal-key.not-a-real-one"

SCRIPT = r"""
import logging, os, signal, sys, threading, time
from datetime import UTC, datetime
from pathlib import Path

from nurture.app.clock import FixedClock
from nurture.app.runtime import build_runtime
from nurture.app.worker import Worker
from nurture.audience.subscribers import add_subscriber
from nurture.store.db import session_factory
from nurture.testing import MemoryTransport
from tests.factories import example_workdir

work, mode = Path(sys.argv[1]), sys.argv[2]
NOW = datetime(2026, 11, 27, 14, 30, tzinfo=UTC)
settings = example_workdir(work).model_copy(
    update={"database_url": f"sqlite:///{work / 'nurture.db'}", "dispatch_interval": 0.05}
)
transport = MemoryTransport()
runtime = build_runtime(settings, FixedClock(NOW), transport=transport)
with session_factory(runtime.engine)() as session:
    for n in range(20):
        add_subscriber(
            session, email=f"p{n}@example.com", tags=("b2b",), locale="en",
            consent_source="test", now=NOW, sequences=runtime.registry.sequences(),
        )
    session.commit()

in_flight = threading.Event()
signalled = threading.Event()
first_held = threading.Lock()


def signal_now() -> None:
    if not signalled.is_set():
        signalled.set()
        os.kill(os.getpid(), signal.SIGTERM)


class SignalInsideEmit(logging.Handler):
    # The signal arrives while this handler's lock is held (``handle`` holds
    # it around ``emit``): the moment that deadlocked the worker.
    def emit(self, record: logging.LogRecord) -> None:
        if threading.current_thread() is threading.main_thread() and in_flight.is_set():
            signal_now()
            time.sleep(0.2)  # the Python-level handler runs here, lock still held


def hold_the_pass(_email: object) -> None:
    in_flight.set()
    if mode == "trap":
        # The first email of the pass: wait for the signal, so that the pass
        # is still running (and logs its end) when the worker is asked to stop.
        threading.Timer(1.0, signal_now).start()
        signalled.wait(5)
    else:
        # "hang": the provider never answers; only a second signal ends this.
        # (Every send thread of the pool comes here: one says so.)
        if first_held.acquire(blocking=False):
            print("held", flush=True)
        threading.Event().wait(120)


runtime.dispatcher.sender.after_send = hold_the_pass
logging.basicConfig(level=logging.INFO, format="%(threadName)s %(message)s")
if mode == "trap":
    logging.getLogger().addHandler(SignalInsideEmit())
worker = Worker(runtime)
worker.run_blocking()
from nurture.store.heartbeat import worker_ticks
with runtime.engine.connect() as conn:
    print("heartbeats", len(worker_ticks(conn)))
print("sent", len(transport.sent), flush=True)
"""


def test_sigterm_while_the_main_thread_holds_a_log_lock_still_stops_the_worker(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(tmp_path), "trap"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired as hung:
        raise AssertionError(f"the worker did not stop on SIGTERM:\n{hung.stderr!r}") from None
    assert done.returncode == 0, done.stderr
    assert "signal 15: finishing the emails in flight, then exiting" in done.stderr
    assert "stopped" in done.stderr.splitlines()[-1]
    # The ticks skipped while the held pass ran (every 0.05 s for a second)
    # are the design (one pass at a time), not a warning on every interval.
    assert "Running job" in done.stderr
    assert "skipped: maximum number of running instances" not in done.stderr
    # The pass in flight finished what it had handed over before exiting.
    sent = int(done.stdout.split()[-1])
    assert 1 <= sent <= 20
    # A clean exit takes the worker's heartbeat row with it.
    assert "heartbeats 0" in done.stdout


@pytest.mark.timeout(180)
def test_a_second_sigterm_exits_at_once_while_a_send_hangs(tmp_path: Path) -> None:
    """The first signal waits for the emails in flight; when the provider
    hangs, a second one (Ctrl-C again, or an impatient supervisor) leaves at
    once, as SIGKILL would: the hung email stays reserved, for reconcile to
    make unknown, never to be sent twice."""
    process = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(tmp_path), "hang"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "held"
        process.send_signal(signal.SIGTERM)
        time.sleep(1.5)
        assert process.poll() is None  # still waiting for the hung send
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "finishing the emails in flight" in stderr
    assert "signal 15 again: exiting now" in stderr
    engine = make_engine(f"sqlite:///{tmp_path / 'nurture.db'}")
    try:
        with engine.connect() as conn:
            statuses = dict(
                conn.execute(text("SELECT status, count(*) FROM send GROUP BY status")).all()
            )
    finally:
        engine.dispose()
    assert statuses.get("reserved", 0) >= 1
    assert "sent" not in statuses  # nothing was confirmed after the forced exit


@pytest.mark.timeout(240)
@pytest.mark.parametrize("command", ["worker", "run", "dispatch"])
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_second_signal_ends_the_command_while_the_provider_hangs(
    tmp_path: Path, db_url: str, command: str
) -> None:
    """The same through the real executables: `nurture run` (its worker
    stops in the web app's shutdown, which blocks the loop that would act on
    uvicorn's own second-signal flag) and the one pass of `nurture dispatch`
    (a second Ctrl-C waited for the hung send as well, and then for the send
    threads at the interpreter's exit)."""
    with FakeSendGrid(api_key=API_KEY) as fake:
        work = _project_on(fake, tmp_path, db_url)
        fake.enqueue("hang", seconds=90)  # the provider never answers in time
        args = ["run", "--port", str(free_port())] if command == "run" else [command]
        process = subprocess.Popen(
            [*NURTURE, "--now", NOW, *args],
            cwd=work,
            env={**cli_env(db_url), "NURTURE_SENDGRID_API_KEY": API_KEY},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            _wait_for_a_connection(fake)
            process.send_signal(signal.SIGTERM)
            time.sleep(2)
            assert process.poll() is None  # the first signal waits for the hung send
            process.send_signal(signal.SIGTERM)
            output, _ = process.communicate(timeout=20)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        assert process.returncode == 128 + signal.SIGTERM, output
        assert "signal 15 again: exiting now" in output
        assert fake.stats()["delivered"] == 0


@pytest.mark.timeout(180)
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_one_signal_ends_a_dispatch_pass_cleanly(tmp_path: Path, db_url: str) -> None:
    """One Ctrl-C or SIGTERM during `nurture dispatch`: the send with the
    provider is waited for and recorded (here the provider drops it: unknown,
    never resent), the summary is printed, and the exit code says a signal
    ended the pass (it used to raise KeyboardInterrupt wherever the main
    thread was)."""
    with FakeSendGrid(api_key=API_KEY) as fake:
        work = _project_on(fake, tmp_path, db_url)
        fake.enqueue("hang", seconds=3)  # then the connection closes: unknown
        process = subprocess.Popen(
            [*NURTURE, "--now", NOW, "dispatch"],
            cwd=work,
            env={**cli_env(db_url), "NURTURE_SENDGRID_API_KEY": API_KEY},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            _wait_for_a_connection(fake)
            process.send_signal(signal.SIGTERM)
            stdout, stderr = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "signal 15: finishing the emails with the provider" in stderr
    assert "stopped by signal 15 before the pass ended" in stderr
    assert "unknown 1, first: karin@example.com (sales-process/welcome)" in stdout
    listed = run_cli("sends", "list", "--status", "unknown", cwd=work, db_url=db_url)
    assert "karin@example.com" in listed.stdout, listed.stdout


def _project_on(fake: FakeSendGrid, tmp_path: Path, db_url: str) -> Path:
    """A project sending through ``fake``, with one subscriber due now."""
    assert run_cli("init", "work", cwd=tmp_path, db_url=db_url).returncode == 0
    work = tmp_path / "work"
    enable_example(work)
    toml = work / "nurture.toml"
    config = toml.read_text("utf-8").replace(
        'transport = "outbox"',
        f'transport = "sendgrid"\nsendgrid_api_host = "{fake.url}"\nsendgrid_timeout = 60',
    )
    toml.write_text(
        public_settings(config),
        "utf-8",
    )
    added = run_cli(
        "--now", NOW, "subscribers", "add", "karin@example.com", "--tag", "b2b",
        cwd=work, db_url=db_url,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    return work


def _wait_for_a_connection(fake: FakeSendGrid) -> None:
    """Until the sender is with ``fake`` (a mail send is counted only when
    answered: a connection is the sign)."""
    deadline = time.monotonic() + 60
    while fake.stats()["connections"] == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert fake.stats()["connections"] == 1
    time.sleep(0.5)  # the request reaches the hang
