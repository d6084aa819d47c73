"""``simulate`` at scale: 10,000 subscribers over a year of a 10-step sequence.

Run by hand (not in CI):

    .venv/bin/python benchmarks/simulate.py                 # 10,000 subscribers
    .venv/bin/python benchmarks/simulate.py --count 1000

A ten-step sequence (waits of a week to eight weeks, so the series spans about a
year; a Mon-Fri 08:00-18:00 window, Swedish holidays and two skip dates, a
``when`` on every other step) is simulated for N subscribers in four time
zones, enrolled over a month, with :func:`nurture.core.simulation.simulate`,
the function behind ``nurture simulate``. Prints subscribers/s, emails/s of
simulated timeline and the peak RSS. nurture is imported from the current
directory's tree, so the same script times an older checkout.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path.cwd()))

from nurture.core.loader import parse_sequence
from nurture.core.simulation import simulate
from nurture.core.subscriber import Subscriber

START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
ZONES = ("Europe/Stockholm", "America/New_York", "Asia/Tokyo", "Australia/Sydney")
WAITS = ("0", "1 week", "2 weeks", "4 weeks", "5 weeks", "6 weeks", "7 weeks", "8 weeks",
         "8 weeks", "8 weeks")  # fmt: skip


def sequence_text() -> str:
    lines = [
        "version: 1",
        "id: year",
        "name: A year",
        "sender: {name: Anna, email: anna@example.com}",
        "timezone: Europe/Stockholm",
        "trigger: {event: subscribed}",
        "send_window: {days: [mon, tue, wed, thu, fri], start: '08:00', end: '18:00'}",
        "skip_dates: {holidays: SE, dates: ['2026-12-24', '2026-12-31']}",
        "steps:",
    ]
    for number, wait in enumerate(WAITS, 1):
        lines += [f"  - id: s{number}", f"    wait: {wait!r}", f"    subject: Step {number}",
                  f"    template: s{number}.md"]  # fmt: skip
        if number % 2 == 0:
            lines.append("    when: \"'vip' not in subscriber.tags\"")
    lines.append(
        "    offer: {name: Audit, price: 100 kr, checkout_url: 'https://shop.example.com/a'}"
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10_000)
    args = parser.parse_args()
    loaded, problems = parse_sequence(sequence_text(), "year.yaml")
    assert loaded is not None, problems
    sequence = loaded.sequence
    people = [
        Subscriber(
            email=f"p{n}@example.com",
            name=f"Person {n}",
            timezone=ZONES[n % len(ZONES)],
            tags=("vip",) if n % 7 == 0 else (),
        )
        for n in range(args.count)
    ]
    began, cpu = time.perf_counter(), time.process_time()
    emails = 0
    last = START
    for n, person in enumerate(people):
        start = START + timedelta(minutes=(n * 263) % (30 * 24 * 60))
        timeline = simulate(sequence, person, start)
        emails += sum(1 for entry in timeline if entry.action == "send")
        last = max([last, *(entry.at for entry in timeline)])
    wall, cpu = time.perf_counter() - began, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{Path.cwd()}: {args.count:,} subscribers, {emails:,} emails over "
        f"{(last - START).days} days in {wall:.2f} s: {args.count / wall:,.0f} subscribers/s, "
        f"{emails / wall:,.0f} emails/s (CPU {cpu:.2f} s); peak RSS {peak:.0f} MiB"
    )


if __name__ == "__main__":
    main()
