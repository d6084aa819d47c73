"""Real ``nurture worker`` processes on one PostgreSQL schema, sending to a fake SendGrid.

The scale-out, crash and fault tests share this: a working folder (a sequence
whose steps are all due at once, SendGrid pointed at the fake, subscribers
imported from one CSV), workers started and stopped (or SIGKILLed) as
subprocesses with their log in a file, "is anything still due?", and the one
examination of the ledger against what the fake received.

The workers run on the real clock (a sequence without a sending window, so
the day and hour do not matter): leases of killed workers then expire as they
would in production.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.pool import NullPool

from nurture.store.db import make_engine
from nurture.store.reports import due_enrollment_count
from nurture.store.tables import EnrollmentRow, SendRow
from tests.factories import POSTAL_ADDRESS, sequence_dict

ROOT = Path(__file__).resolve().parents[2]
NURTURE = [sys.executable, "-m", "nurture"]
API_KEY = "SG.worker-test-key.not-a-real-one"
IN_FLIGHT = frozenset({"reserved", "queued", "retry"})
SEND = SendRow.__table__  # type: ignore[attr-defined]
ENROLLMENT = EnrollmentRow.__table__  # type: ignore[attr-defined]
SENT_IN_LOG = re.compile(r"dispatch at \S+: sent (\d+),")


@dataclass
class Folder:
    path: Path
    env: dict[str, str]
    db_url: str
    steps: tuple[str, ...]

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*NURTURE, *args],
            cwd=self.path,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def make_folder(
    tmp_path: Path,
    db_url: str,
    fake_url: str,
    *,
    subscribers: int,
    steps: tuple[str, ...] = ("offer",),
    settings: Mapping[str, object] | None = None,
) -> Folder:
    """A working folder whose ``subscribers`` are all due now, for every step in
    ``steps`` at once (waits of 0; a sequence ends in its offer step), sending
    through SendGrid to ``fake_url``."""
    work = tmp_path / "work"
    shutil.copytree(ROOT / "templates", work / "templates")
    all_steps = {step["id"]: step for step in sequence_dict()["steps"]}
    chosen = [{**all_steps[name], "wait": 0} for name in steps]
    definition = sequence_dict(
        id="scale", timezone="UTC", trigger={"tags": ["scale"]}, steps=chosen
    )
    (work / "sequences").mkdir()
    # JSON is YAML: the sequence file is written from the factory's dict.
    (work / "sequences" / "scale.yaml").write_text(json.dumps(definition), encoding="utf-8")
    values: dict[str, object] = {
        "transport": "sendgrid",
        "base_url": "https://mail.example.se",
        "postal_address": POSTAL_ADDRESS,
        "sendgrid_api_host": fake_url,
        "sendgrid_timeout": 5.0,
        "secret_key": "worker-test-secret-not-a-placeholder",
        "batch_size": 250,
        "send_concurrency": 8,
        "rate_limit": 100_000.0,
        "lease_seconds": 30.0,
        "dispatch_interval": 0.5,
        "track_clicks": False,
        **(settings or {}),
    }
    (work / "nurture.toml").write_text(
        "".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items()),
        encoding="utf-8",
    )
    rows = ["email,name,tags"] + [
        f"person{i:05d}@example.com,Person {i},scale" for i in range(subscribers)
    ]
    (work / "people.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    env.update(COLUMNS="200", NURTURE_DATABASE_URL=db_url, NURTURE_SENDGRID_API_KEY=API_KEY)
    # A worker that hangs is sent SIGABRT: every thread's stack lands in its log.
    env["PYTHONFAULTHANDLER"] = "1"
    folder = Folder(work, env, db_url, steps)
    imported = folder.run("subscribers", "import", "people.csv")
    assert imported.returncode == 0, imported.stderr
    assert f"{subscribers} new enrollments" in imported.stdout, imported.stdout
    return folder


@dataclass
class WorkerProcess:
    """One ``nurture worker`` subprocess; its log goes to a file of its own."""

    folder: Folder
    log: Path
    process: subprocess.Popen[bytes] = field(init=False)
    offset: int = field(init=False)  # where this process's lines start in the log

    def __post_init__(self) -> None:
        self.offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [*NURTURE, "worker"],
                cwd=self.folder.path,
                env=self.folder.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def alive(self) -> bool:
        return self.process.poll() is None

    def ready(self) -> bool:
        """It has started its scheduler (its first pass begins at once)."""
        with self.log.open("rb") as log:
            log.seek(self.offset)
            return b" started (dispatch every " in log.read()

    def kill(self) -> None:
        """SIGKILL: no goodbye, whatever it was doing."""
        if self.alive():
            self.process.kill()
        self.process.wait(timeout=30)

    def stop(self) -> int:
        """SIGTERM, as systemd stops it: it finishes the emails in flight; the exit code."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGABRT)  # the stacks, to the log
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            stacks = self.text()[-6000:]
            raise AssertionError(f"{self.log.name}: hung on SIGTERM: {stacks}") from None

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def sent(self) -> int:
        """Emails this worker (and any earlier process that wrote this log) sent."""
        return sum(int(n) for n in SENT_IN_LOG.findall(self.text()))


def start_workers(folder: Folder, logs: Path, count: int) -> list[WorkerProcess]:
    logs.mkdir(parents=True, exist_ok=True)
    return [WorkerProcess(folder, logs / f"worker-{i}.log") for i in range(count)]


def due_now(db_url: str) -> int:
    engine = make_engine(db_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return due_enrollment_count(conn, datetime.now(UTC) + timedelta(seconds=1))
    finally:
        engine.dispose()


def wait_until_nothing_due(
    db_url: str, workers: Iterable[WorkerProcess], *, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while (due := due_now(db_url)) > 0:
        dead = [w.log.name for w in workers if not w.alive()]
        assert not dead, f"workers exited: {dead}"
        assert time.monotonic() < deadline, f"{due} enrollments still due after {timeout}s"
        time.sleep(0.5)


@dataclass
class Outcome:
    """The ledger against what the fake received."""

    emails: int  # (enrollment, step) pairs that should have gone out
    duplicates: list[str]  # send ids accepted more than once
    orphans: list[str]  # send ids the fake received that no ledger row has
    missing: list[tuple[int, str, str]]  # (enrollment, step, ledger status) never accepted
    unknown_reached: int  # unknown rows whose request did reach the provider
    pending: list[tuple[int, str]]  # still to send
    stuck: list[tuple[int, str, str, str]]  # in flight under a finished enrollment
    unexplained: list[tuple[int, str, str]]  # failed/unknown without a reason
    statuses: Counter[str]
    accepted: int  # 202s the fake gave for our send ids

    def describe(self) -> str:
        return (
            f"{self.emails} emails: {self.accepted} accepted, {len(self.missing)} not, "
            f"{len(self.duplicates)} accepted twice, {len(self.orphans)} orphans, "
            f"{self.unknown_reached} unknown that reached the provider, "
            f"{len(self.pending)} still due, {len(self.stuck)} stuck, "
            f"{len(self.unexplained)} without a reason; "
            f"ledger {dict(sorted(self.statuses.items()))}"
        )


def examine(folder: Folder, received: dict[str, dict[str, int]]) -> Outcome:
    engine = make_engine(folder.db_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            enrollments = {
                row.id: row.status
                for row in conn.execute(select(ENROLLMENT.c.id, ENROLLMENT.c.status))
            }
            ledger = {
                (row.enrollment_id, row.step_id): (row.key, row.status, row.reason)
                for row in conn.execute(
                    select(
                        SEND.c.enrollment_id,
                        SEND.c.step_id,
                        SEND.c.key,
                        SEND.c.status,
                        SEND.c.reason,
                    )
                )
            }
    finally:
        engine.dispose()
    keys = {key for key, _, _ in ledger.values()}
    accepted = {key for key, counts in received.items() if counts["accepted"] >= 1}
    missing: list[tuple[int, str, str]] = []
    pending: list[tuple[int, str]] = []
    stuck: list[tuple[int, str, str, str]] = []
    unexplained: list[tuple[int, str, str]] = []
    unknown_reached = 0
    for enrollment, enrollment_status in enrollments.items():
        for step in folder.steps:
            key, status, reason = ledger.get((enrollment, step), (None, None, None))
            if status in IN_FLIGHT and enrollment_status != "active":
                stuck.append((enrollment, step, str(status), enrollment_status))
            if status in ("failed", "unknown") and not reason:
                unexplained.append((enrollment, step, str(status)))
            if key in accepted:
                unknown_reached += status == "unknown"
                continue
            if enrollment_status == "active" and (status is None or status in IN_FLIGHT):
                pending.append((enrollment, step))
            else:
                missing.append((enrollment, step, str(status or f"no send, {enrollment_status}")))
    return Outcome(
        emails=len(enrollments) * len(folder.steps),
        duplicates=sorted(key for key, counts in received.items() if counts["accepted"] > 1),
        orphans=sorted(set(received) - keys),
        missing=missing,
        unknown_reached=unknown_reached,
        pending=pending,
        stuck=stuck,
        unexplained=unexplained,
        statuses=Counter(str(status) for _, status, _ in ledger.values()),
        accepted=sum(counts["accepted"] for key, counts in received.items() if key in keys),
    )
