"""The cost of one tick as the tables grow: 1,000 due enrollments among
10,000, then among 1,000,000 (with a million ledger rows).

Run by hand (not in CI):

    .venv/bin/python benchmarks/tick.py                    # 10,000 and 1,000,000
    .venv/bin/python benchmarks/tick.py --sizes 10000 100000

For each size it fills a fresh SQLite file with plain ``executemany`` inserts:
N subscribers, each with one enrollment in the example sequence. 1,000 of them
are due now and 1,000 more a minute later; the rest are due next week and
have already had their first email, so the ledger holds N - 2,000 ``sent``
rows. One worker process (the real dispatcher, in-memory transport) ticks at
``now`` (a fresh process: its first tick reads every page from disk) and
again a minute later (the steady state of a running worker, whose database
pages are cached); each tick sends 1,000 and both are timed (median of
``--repeat`` fresh copies of the file). The goal of issue 12:
the large table's tick costs less than 1.5 times the small one's, because
"what is due" is a range scan on ``ix_enrollment_due`` and every other read
is by the claimed enrollments' keys.

Timings on these machines vary by up to 40% between runs. ``--callgrind``
counts the steady tick's instructions instead (valgrind prints ``Collected :
N`` per process; the files are filled by a child process valgrind does not
follow, so only the ticks run under it)::

    for size in 10000 1000000; do
      valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=/dev/null \
        .venv/bin/python benchmarks/tick.py --sizes $size --repeat 1 --callgrind
    done
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path.cwd()))

from nurture.app.clock import FixedClock
from nurture.app.runtime import build_runtime, freeze_startup_objects
from nurture.app.settings import Settings
from nurture.core.loader import load_sequences
from nurture.store.db import make_engine
from nurture.store.migrate import upgrade
from nurture.testing import MemoryTransport

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 11, 27, 14, 30, tzinfo=UTC)  # Friday 15:30 in Stockholm
DUE = 1000


def _ts(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def fill(path: Path, size: int, version: str) -> None:
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    db = sqlite3.connect(path)
    db.execute("PRAGMA synchronous = OFF")
    now, later, before = _ts(NOW), _ts(NOW + timedelta(days=7)), _ts(NOW - timedelta(days=3))
    minute = _ts(NOW + timedelta(minutes=1))
    db.executemany(
        "INSERT INTO subscriber (id, email, name, locale, timezone, tags, attributes, status, "
        "created_at, updated_at) VALUES (?, ?, ?, 'sv', 'Europe/Stockholm', '[\"b2b\"]', '{}', "
        "'active', ?, ?)",
        ((n, f"s{n}@example.com", f"Person {n}", before, before) for n in range(1, size + 1)),
    )
    db.executemany(
        "INSERT INTO enrollment (id, subscriber_id, sequence_id, sequence_version, position, "
        "status, enrolled_at, next_due_at, updated_at) VALUES (?, ?, 'sales-process', ?, ?, "
        "'active', ?, ?, ?)",
        (
            (
                n,
                n,
                version,
                None if n <= 2 * DUE else "welcome",
                before,
                now if n <= DUE else minute if n <= 2 * DUE else later,
                before,
            )
            for n in range(1, size + 1)
        ),
    )
    db.executemany(
        "INSERT INTO send (key, enrollment_id, subscriber_id, sequence_id, sequence_version, "
        "step_id, status, due_at, decided_at, sent_at, attempts, subject) VALUES "
        "(?, ?, ?, 'sales-process', ?, 'welcome', 'sent', ?, ?, ?, 1, 'Welcome')",
        (
            (f"k{n:031d}", n, n, version, before, before, before)
            for n in range(2 * DUE + 1, size + 1)
        ),
    )
    db.commit()
    db.close()


def instrument(wanted: bool, state: str) -> None:
    """Turn callgrind's instruction counting of this process on or off."""
    if wanted:
        command = ["callgrind_control", "--instr=" + state, str(os.getpid())]
        subprocess.run(command, check=True, capture_output=True)


def two_ticks(path: Path, callgrind: bool = False) -> tuple[float, float]:
    settings = Settings(
        sequences_dir=ROOT / "sequences",
        templates_dir=ROOT / "templates",
        database_url=f"sqlite:///{path}",
        secret_key="benchmark-secret-not-a-placeholder",
        rate_limit=1_000_000.0,
    )
    engine = make_engine(settings.database_url)
    runtime = build_runtime(
        settings, FixedClock(NOW), transport=MemoryTransport(record=False), engine=engine,
        migrate=False,
    )  # fmt: skip
    freeze_startup_objects()
    took = []
    for moment in (NOW, NOW + timedelta(minutes=1)):
        steady = moment != NOW
        instrument(callgrind and steady, "on")
        began = time.perf_counter()
        report = runtime.dispatcher.dispatch(moment)
        took.append(time.perf_counter() - began)
        instrument(callgrind and steady, "off")
        assert report.sent == DUE, report
    runtime.close()
    return took[0], took[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--callgrind",
        action="store_true",
        help="fill in a child process; count only the steady tick under valgrind",
    )
    parser.add_argument("--fill-only", nargs=3, metavar=("PATH", "SIZE", "VERSION"))
    args = parser.parse_args()
    if args.fill_only:
        path, size, version = args.fill_only
        fill(Path(path), int(size), version)
        return
    loaded, _ = load_sequences([ROOT / "sequences"])
    version = loaded["sales-process"].version
    folder = Path(tempfile.mkdtemp(prefix="nurture-tick-"))
    results: dict[int, tuple[float, float]] = {}
    for size in args.sizes:
        template = folder / f"tick-{size}.db"
        began = time.perf_counter()
        if args.callgrind:  # a new process, which valgrind does not follow
            command = [sys.executable, __file__, "--fill-only", str(template), str(size), version]
            subprocess.run(command, check=True)
        else:
            fill(template, size, version)
        print(f"filled {size:,} enrollments in {time.perf_counter() - began:.1f} s")
        first, steady = [], []
        for n in range(args.repeat):
            copy = folder / f"run-{size}-{n}.db"
            shutil.copyfile(template, copy)
            cold, warm = two_ticks(copy, args.callgrind)
            first.append(cold)
            steady.append(warm)
            copy.unlink()
        results[size] = (statistics.median(first), statistics.median(steady))
        print(
            f"{DUE:,} due among {size:>9,}: first tick {results[size][0]:.2f} s, "
            f"steady tick {results[size][1]:.2f} s (medians of {args.repeat})"
        )
    small = results[min(results)]
    for size, (cold, warm) in results.items():
        print(
            f"{size:>9,}: first tick {cold / small[0]:.2f}x, steady tick {warm / small[1]:.2f}x "
            "the smallest"
        )
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
