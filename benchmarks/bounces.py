"""One signed SendGrid post of many bounces: how long it holds the database.

Run by hand (not in CI):

    .venv/bin/python benchmarks/bounces.py                 # 6,000 bounces
    .venv/bin/python benchmarks/bounces.py --count 2000 --repeat 5
    .venv/bin/python benchmarks/bounces.py --mixed          # as SendGrid mixes them

A fresh SQLite file per run holds ``--count / 2`` subscribers, each enrolled
in one sequence; the post (about 150 bytes an event, so 6,000 fit under the
webhook's 1 MiB limit) bounces every one of them and as many addresses the
database never held. What is timed is the route's own work after the
signature check: recording the events, then ending enrollments, skipping
what waited and suppressing every address, in one transaction (on SQLite,
the time the file's write lock is held; the worker and the CLI wait that
long). Median of ``--repeat`` runs. With ``--mixed`` the events about
subscribers take turns, as a real post's do: an unsubscribe, a bounce, a
delivery.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nurture.audience.provider_events import apply_sendgrid_events  # noqa: E402
from nurture.store.db import make_engine, session_factory  # noqa: E402
from nurture.store.migrate import upgrade  # noqa: E402
from nurture.transports.sendgrid_events import read_events  # noqa: E402
from tests.integration.test_webhook_sendgrid import NOW, event, make_world  # noqa: E402


def _events(known: list[str], unknown: int, mixed: bool) -> list[dict[str, object]]:
    kinds = ["unsubscribe", "bounce", "delivered"] if mixed else ["bounce"]
    events = []
    for i, address in enumerate(known):
        kind = kinds[i % len(kinds)]
        extra = {"type": "bounce"} if kind == "bounce" else {}
        events.append(event(kind, address, f"k{i}", **extra))
    events += [event("bounce", f"u{i}@example.com", f"u{i}", type="bounce") for i in range(unknown)]
    return events


def one_run(count: int, mixed: bool) -> float:
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        engine = make_engine(f"sqlite:///{tmp / 'bounces.db'}")
        upgrade(engine)
        for world in make_world(engine, tmp):
            known = [f"k{i}@example.com" for i in range(count // 2)]
            world.add(*known)
            events = _events(known, count - len(known), mixed)
            body = json.dumps(events).encode()
            parsed = read_events(json.loads(body))
            with session_factory(engine)() as session:
                started = time.perf_counter()
                applied = apply_sendgrid_events(session, parsed, now=NOW)
                session.commit()
                seconds = time.perf_counter() - started
            assert applied.recorded == count, applied
            done = f"{applied.blocked:,} blocked, {applied.unsubscribed:,} unsubscribed"
            print(f"  {count:,} events ({len(body):,} bytes): {seconds:.2f} s, {done}", flush=True)
        engine.dispose()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=6000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--mixed", action="store_true", help="unsubscribes, bounces, deliveries")
    args = parser.parse_args()
    runs = [one_run(args.count, args.mixed) for _ in range(args.repeat)]
    median = statistics.median(runs)
    print(f"median {median:.2f} s, {args.count / median:,.0f} events/s")


if __name__ == "__main__":
    main()
