"""Benchmark: ``import_csv`` of N new subscribers into a fresh SQLite file.

Writes a CSV of N rows (email, name, tags, two extra attribute columns, about
one bad row in 500), migrates a new SQLite database, and times one
``import_csv`` call with the example sequences (the ``b2b`` rows are enrolled).
Prints rows/s and the peak RSS.

nurture is imported from the current directory's tree (sys.path[0]), so the
same script times an older checkout::

    .venv/bin/python benchmarks/import.py --count 100000
    cd /tmp/old-tree && /path/to/.venv/bin/python /path/to/benchmarks/import.py

Timings on these machines vary by up to 40% from run to run. ``--callgrind``
counts instructions instead, which do not: run under valgrind with
instrumentation off, and only the ``import_csv`` call is counted (valgrind
prints ``Collected : N``; about 50x slower, so use a few thousand rows)::

    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=/dev/null \
        .venv/bin/python benchmarks/import.py --count 5000 --callgrind
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path.cwd()
sys.path.insert(0, str(ROOT))

from sqlmodel import Session  # noqa: E402

from nurture.app.runtime import freeze_startup_objects  # noqa: E402
from nurture.audience.csv_import import import_csv  # noqa: E402
from nurture.core.loader import load_sequences  # noqa: E402
from nurture.store.db import make_engine  # noqa: E402
from nurture.store.migrate import upgrade  # noqa: E402

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
TAGS = ("b2b", "newsletter", "b2b;webinar", "", "customer|vip")


def write_csv(path: Path, count: int) -> int:
    """N data rows; returns how many of them are bad (an invalid address)."""
    bad = 0
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Email Address", "Name", "Tags", "Company", "Plan"])
        for n in range(count):
            if n % 500 == 499:
                email = f"not-an-address-{n}"
                bad += 1
            else:
                email = f"Person.{n}@Example{n % 97}.com"
            writer.writerow(
                [email, f"Person Number{n}", TAGS[n % len(TAGS)], f"Company {n % 1000}", "pro"]
            )
    return bad


def instrument(wanted: bool, state: str) -> None:
    """Turn callgrind's instruction counting of this process on or off."""
    if wanted:
        command = ["callgrind_control", "--instr=" + state, str(os.getpid())]
        subprocess.run(command, check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument(
        "--callgrind",
        action="store_true",
        help="switch valgrind's callgrind instrumentation on for the import only",
    )
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="nurture-import-bench-"))
    source = folder / "people.csv"
    bad = write_csv(source, args.count)
    engine = make_engine(f"sqlite:///{folder / 'bench.db'}")
    upgrade(engine)
    sequences, _ = load_sequences([ROOT / "sequences"])
    freeze_startup_objects()  # as the CLI does: see nurture.app.runtime
    with Session(engine) as session:
        instrument(args.callgrind, "on")
        started, cpu = time.perf_counter(), time.process_time()
        report = import_csv(session, source, sequences=sequences, now=NOW)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        instrument(args.callgrind, "off")
    engine.dispose()
    assert report.imported == args.count - bad, (report.imported, bad)
    assert len(report.errors) == bad
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{ROOT}: {args.count} rows ({bad} bad) in {elapsed:.2f} s: "
        f"{args.count / elapsed:,.0f} rows/s (CPU {cpu:.2f} s: {args.count / cpu:,.0f} rows/s); "
        f"{report.enrolled} enrolled; peak RSS {peak:.0f} MiB"
    )


if __name__ == "__main__":
    main()
