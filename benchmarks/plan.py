"""``nurture plan`` at scale: time, output lines and peak memory for N subscribers.

Run by hand (not in CI):

    .venv/bin/python benchmarks/plan.py                         # 10,000 subscribers, this tree
    .venv/bin/python benchmarks/plan.py --tree before=../old-checkout --tree after=.

It builds one SQLite database the way a live one gets there: N subscribers in
four time zones, inserted through the store's tables in one transaction, then
moved along by the real dispatcher (in-memory transport) so their ledgers are
real: 20 % enrolled on Friday have had 'welcome' (and 'three-models' where
Monday 09:30 has come), 70 % enrolled on Monday have had 'welcome' (where the
send window is open), 7 % enrolled since have had nothing, and 3 % completed
the series earlier. Then the example sequence is edited as
in issue 10 (a step inserted first, another after 'three-models') and
``nurture plan`` runs as a subprocess once per tree and output format,
alternately, ``--rounds`` times. Each run's wall time, CPU time, output size
and peak RSS (its own, from ``wait4``) are printed; the database is shared,
so every tree answers the same question. Start-up (imports, reading and
checking the sequence files) is in every figure: ``--count 0`` shows it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

FRIDAY = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
MONDAY = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
PLAN_AT = MONDAY + timedelta(minutes=30)
ZONES = ("Europe/Stockholm", "Europe/London", "America/New_York", "Africa/Lagos")

INTRO = """\
  - id: intro
    wait: 0
    subject: {sv: "Hej och välkommen", en: "Hello and welcome"}
    template: welcome.md

"""
BONUS = """\
  - id: bonus
    wait: 1 day
    subject: {sv: "En bonus", en: "A bonus"}
    template: choosing.md

"""


def make_folder(folder: Path) -> None:
    for name in ("sequences", "templates"):
        shutil.copytree(ROOT / name, folder / name)
    (folder / "nurture.toml").write_text(
        f'database_url = "sqlite:///{folder / "bench.db"}"\n'
        'transport = "outbox"\nsecret_key = "benchmark-secret-not-a-placeholder"\n'
        "rate_limit = 1000000.0\nbatch_size = 1000\nsend_concurrency = 1\n",
        encoding="utf-8",
    )


def _subscribers(first: int, count: int) -> list[dict[str, Any]]:
    return [
        {
            "email": f"subscriber{n}@example.com",
            "name": f"Subscriber Number{n}",
            "locale": "sv" if n % 2 else "en",
            "timezone": ZONES[n % len(ZONES)],
            "tags": ["b2b"],
            "attributes": {"company": f"Company {n}"},
            "status": "active",
            "created_at": FRIDAY,
            "updated_at": FRIDAY,
        }
        for n in range(first, first + count)
    ]


def enroll(url: str, first: int, count: int, version: str, at: datetime, status: str) -> None:
    """``count`` subscribers from number ``first``, enrolled at ``at`` with ``status``."""
    from sqlalchemy import insert, select

    from nurture.store import queries
    from nurture.store.db import make_engine

    if count == 0:
        return
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(insert(queries.SUBSCRIBER), _subscribers(first, count))
        ids = [
            row.id
            for row in conn.execute(
                select(queries.SUBSCRIBER.c.id).where(
                    queries.SUBSCRIBER.c.email.in_(
                        [f"subscriber{n}@example.com" for n in range(first, first + count)]
                    )
                )
            )
        ]
        active = status == "active"
        conn.execute(
            insert(queries.ENROLLMENT),
            [
                {
                    "subscriber_id": sid,
                    "sequence_id": "sales-process",
                    "sequence_version": version,
                    "status": status,
                    "position": None if active else "offer",
                    "enrolled_at": at,
                    "next_due_at": at if active else None,
                    "updated_at": at,
                }
                for sid in ids
            ],
        )
    engine.dispose()


def dispatch(folder: Path, now: datetime) -> int:
    from nurture.app.clock import FixedClock
    from nurture.app.runtime import build_runtime, freeze_startup_objects
    from nurture.app.settings import load_settings
    from nurture.testing import MemoryTransport

    runtime = build_runtime(
        load_settings(folder), FixedClock(now), transport=MemoryTransport(record=False)
    )
    freeze_startup_objects()
    try:
        return runtime.dispatcher.dispatch(now).sent
    finally:
        runtime.close()


def seed(folder: Path, count: int) -> None:
    """Runs in a child process (``--seed``): the parent stays small, and a
    child's peak RSS as ``wait4`` reports it includes its parent's at fork."""
    sys.path.insert(0, str(ROOT))
    from nurture.app.settings import load_settings
    from nurture.store.db import make_engine
    from nurture.store.migrate import upgrade

    settings = load_settings(folder)
    upgrade(make_engine(settings.database_url))
    from nurture.core.loader import load_sequences

    loaded, _ = load_sequences([settings.sequences_dir])
    version = loaded["sales-process"].version
    early, main, done = count * 20 // 100, count * 70 // 100, count * 3 // 100
    fresh = count - early - main - done
    url = settings.database_url
    enroll(url, 0, early, version, FRIDAY, "active")
    enroll(url, early, done, version, FRIDAY - timedelta(days=30), "completed")
    sent = dispatch(folder, FRIDAY)
    enroll(url, early + done, main, version, MONDAY, "active")
    sent += dispatch(folder, MONDAY)
    enroll(url, early + done + main, fresh, version, MONDAY + timedelta(minutes=5), "active")
    print(
        f"seeded {count:,} subscribers: {early:,} enrolled on Friday, {main:,} on Monday, "
        f"{fresh:,} since the last pass, {done:,} completed earlier; the dispatcher sent "
        f"{sent:,} emails (New York's morning had not come yet)"
    )
    path = folder / "sequences" / "sales-process.yaml"
    text = path.read_text(encoding="utf-8")
    text = text.replace("steps:\n", "steps:\n" + INTRO, 1)
    text = text.replace("  # 3. From idea", BONUS + "  # 3. From idea", 1)
    path.write_text(text, encoding="utf-8")


def measure(tree: Path, folder: Path, extra: list[str]) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    env.update(PYTHONPATH=str(tree), COLUMNS="120")
    command = [sys.executable, "-m", "nurture", "--now", PLAN_AT.isoformat(), "plan", *extra]
    started = time.perf_counter()
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(
            command, cwd=folder, env=env, stdout=output, stderr=subprocess.PIPE
        )
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        errors = process.stderr.read().decode() if process.stderr else ""
        output.seek(0)
        text = output.read().decode()
    if process.returncode != 0:
        raise SystemExit(f"{tree}: plan {' '.join(extra)} failed:\n{errors[-2000:]}")
    return {
        "seconds": elapsed,
        "lines": len(text.splitlines()),
        "bytes": len(text.encode()),
        "cpu": usage.ru_utime + usage.ru_stime,
        "peak_mb": usage.ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--tree",
        action="append",
        metavar="NAME=PATH",
        help="a checkout to time (default: this one); its `plan --json` is timed too "
        "when it has that option",
    )
    parser.add_argument("--keep", action="store_true", help="keep the working folder")
    parser.add_argument("--seed", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.seed is not None:
        seed(args.seed, args.count)
        return
    trees = [tuple(item.split("=", 1)) for item in args.tree or [f"this={ROOT}"]]
    folder = Path(tempfile.mkdtemp(prefix="nurture-plan-bench-"))
    try:
        make_folder(folder)
        subprocess.run(
            [sys.executable, __file__, "--seed", str(folder), "--count", str(args.count)],
            check=True,
        )
        print(
            f"{'tree':<10}{'format':<8}{'seconds':>9}{'CPU s':>8}{'lines':>9}{'bytes':>11}"
            f"{'peak MB':>9}"
        )
        for _ in range(args.rounds):
            for name, path in trees:
                formats = [("table", [])]
                help_text = subprocess.run(
                    [sys.executable, "-m", "nurture", "plan", "--help"],
                    env={**os.environ, "PYTHONPATH": path}, cwd=folder, capture_output=True,
                    text=True, check=False,
                ).stdout  # fmt: skip
                if "--json" in help_text:
                    formats.append(("json", ["--json"]))
                for label, extra in formats:
                    result = measure(Path(path).resolve(), folder, extra)
                    print(
                        f"{name:<10}{label:<8}{result['seconds']:>9.2f}{result['cpu']:>8.2f}"
                        f"{result['lines']:>9,}{result['bytes']:>11,}{result['peak_mb']:>9.0f}"
                    )
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
