"""How fast the sender goes while the dispatching thread plans, and while it waits.

Run by hand (not in CI):

    .venv/bin/python benchmarks/phases.py                      # SQLite, 20,000 due
    .venv/bin/python benchmarks/phases.py --database postgresql+psycopg://postgres@127.0.0.1:5432/test

One worker, the in-memory transport, a send pool of ``--concurrency`` (8,
the default): the ``memory`` scenario of ``dispatch.py``, timed from inside.
A pass has two phases that alternate. The dispatching thread claims, plans
and renders a batch (Python, holding the interpreter lock), then waits while
the sender works through it. This prints the emails the sender reserved
and sent in each phase and its rate there, and a send pool's round
(the coordinator's reservation and settle: one statement on PostgreSQL)
split into its parts: the statement, until its answer is back in Python,
and the rest.

Timing wraps the dispatcher's and the pool's methods in this process, so it
adds a little to every round; compare its figures with each other, and
``dispatch.py``'s for throughput.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import dispatch as bench  # noqa: E402

from nurture.sending import dispatcher as dispatching  # noqa: E402
from nurture.sending import pool  # noqa: E402
from nurture.store import rounds  # noqa: E402

PLANNING, WAITING = "planning", "waiting"


class Phases:
    """What the sender did while the dispatching thread planned or waited."""

    def __init__(self) -> None:
        self.planning = False
        self.lock = threading.Lock()
        self.seconds = {PLANNING: 0.0, WAITING: 0.0}
        self.emails = {PLANNING: 0, WAITING: 0}
        self.rounds = {PLANNING: 0, WAITING: 0}
        self.statement: dict[str, list[float]] = {PLANNING: [], WAITING: []}
        self._since: float | None = None  # the pass has not started

    def phase(self) -> str:
        return PLANNING if self.planning else WAITING

    def switch(self, planning: bool) -> None:
        with self.lock:
            now = time.perf_counter()
            if self._since is not None:
                self.seconds[self.phase()] += now - self._since
            self._since, self.planning = now, planning

    def wrap(self, owner: Any, name: str, *, planning: bool) -> None:
        """Count ``owner.name``'s time as planning, or (the pass itself) count
        the phases from its start to its end."""
        method: Callable[..., Any] = getattr(owner, name)

        def phased(*args: Any, **kwargs: Any) -> Any:
            self.switch(planning)
            try:
                return method(*args, **kwargs)
            finally:
                self.switch(False)
                if not planning:
                    self._since = None

        setattr(owner, name, phased)

    def wrap_rounds(self, launch_name: str, statement_name: str) -> None:
        launch: Callable[..., Any] = getattr(pool.PooledSender, launch_name)
        statement: Callable[..., Any] = getattr(rounds, statement_name)

        def counted(sender: Any, conn: Any, chunk: list[Any], answers: list[Any]) -> Any:
            phase = self.phase()
            result = launch(sender, conn, chunk, answers)
            self.rounds[phase] += 1
            self.emails[phase] += len(chunk)
            return result

        def timed(*args: Any, **kwargs: Any) -> Any:
            phase, started = self.phase(), time.perf_counter()
            try:
                return statement(*args, **kwargs)
            finally:
                self.statement[phase].append(time.perf_counter() - started)

        setattr(pool.PooledSender, launch_name, counted)
        setattr(rounds, statement_name, timed)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--database", default="sqlite")
    args = parser.parse_args()
    phases = Phases()
    phases.wrap(dispatching.Dispatcher, "dispatch", planning=False)
    phases.wrap(dispatching.Dispatcher, "_claim_and_plan", planning=True)
    phases.wrap(dispatching.Dispatcher, "_write", planning=True)
    phases.wrap_rounds("_launch_and_confirm", "reserve_and_confirm")
    result = bench.run_scenario(
        "memory", args.count, args.batch, 128, args.database, args.concurrency
    )
    where = "SQLite" if args.database == "sqlite" else "PostgreSQL"
    print(
        f"{where}, {args.count} due, pool of {args.concurrency}: "
        f"{result['emails_per_second']} emails/s, {result['cpu_us_per_email']} µs of CPU an email"
    )
    print(f"{'dispatching thread':<20}{'seconds':>9}{'rounds':>8}{'emails':>8}{'emails/s':>10}"
          f"{'statement ms (median, p95)':>30}")  # fmt: skip
    for phase in (PLANNING, WAITING):
        seconds, emails = phases.seconds[phase], phases.emails[phase]
        times = sorted(phases.statement[phase])
        statement = (
            f"{statistics.median(times) * 1e3:.2f}, {times[int(len(times) * 0.95)] * 1e3:.2f}"
            if times
            else "-"
        )
        print(
            f"{phase:<20}{seconds:>9.2f}{phases.rounds[phase]:>8}{emails:>8}"
            f"{emails / max(seconds, 1e-9):>10.0f}{statement:>30}"
        )


if __name__ == "__main__":
    main()
