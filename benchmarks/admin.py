"""The admin side on a big ledger: the send log's pages, a subscriber's
explain and a sequence's funnel.

Run by hand (not in CI):

    .venv/bin/python benchmarks/admin.py                  # 1,000,000 ledger rows
    .venv/bin/python benchmarks/admin.py --rows 100000    # a quicker run
    .venv/bin/python benchmarks/admin.py --keep /tmp/admin-bench.db   # reuse the file

It migrates a fresh SQLite file, fills it with plain ``executemany`` inserts
(``--rows`` ledger rows for ``--rows / 10`` subscribers, each enrolled in two
of five sequences of five steps; statuses spread as a live system's: mostly
``sent``, some ``skipped``, ``failed``, ``retry`` and ``unknown``, a few
``queued``; decisions over a year, in time order with some jitter; a
``delivered`` event for 60% of the sent emails, an ``opened`` for 20%, a
``clicked`` for 5%), then times the real services (median of ``--repeat``
runs, each on a warm cache):

* the send log's first page (:func:`nurture.admin.sendlog.read_page`, 50 lines
  with their latest event);
* page 500 (the cursor walk is done first; only the 500th fetch is timed);
* a filtered page: ``status=failed`` and one sequence;
* a filtered page by address, and a page of a rare status (``unknown``);
* a subscriber's explain timeline (:func:`nurture.admin.explain.explain_subscriber`:
  two enrollments with their ledger rows and events, against sequence files
  of the filled ids) and a sequence's funnel
  (:func:`nurture.admin.funnels.sequence_funnel`, read from the summary that
  migration 0008's triggers keep current while the rows are written).

The goal of the issue: each under 100 ms on SQLite on this machine.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy.engine import Engine  # noqa: E402

from nurture.admin.sendlog import SendFilter, read_page  # noqa: E402
from nurture.store.db import make_engine  # noqa: E402
from nurture.store.migrate import upgrade  # noqa: E402

NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
SEQUENCES = tuple(f"sequence-{n}" for n in range(5))
STEPS = tuple(f"step-{n}" for n in range(1, 6))
# (status, weight): what a ledger looks like after a year.
STATUSES = (
    ("sent", 900),
    ("skipped", 50),
    ("failed", 20),
    ("retry", 10),
    ("unknown", 5),
    ("queued", 15),
)
YEAR = timedelta(days=365)


def _ts(moment: datetime) -> str:
    """How SQLAlchemy writes a UTC datetime to SQLite (``nurture.store.types``)."""
    return moment.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def fill(path: Path, rows: int, seed: int = 7) -> None:
    """Migrate a fresh file at ``path`` and write ``rows`` ledger rows into it."""
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    rng = random.Random(seed)
    subscribers = max(1, rows // 10)
    per_subscriber = 2 * len(STEPS)  # two sequences of five steps
    now_text = _ts(NOW)
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode = OFF")
    db.execute("PRAGMA synchronous = OFF")
    db.execute("PRAGMA cache_size = -262144")  # 256 MiB: the unique keys are random inserts
    # The ledger's and events' own indexes are built after the rows, sorted
    # once, instead of growing row by row (their definitions as migrated).
    indexes = db.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' "
        "AND tbl_name IN ('send', 'event') AND sql IS NOT NULL"
    ).fetchall()
    for name, _ in indexes:
        db.execute(f'DROP INDEX "{name}"')
    db.executemany(
        "INSERT INTO subscriber (id, email, name, tags, attributes, status, created_at, "
        "updated_at) VALUES (?, ?, ?, '[]', '{}', 'active', ?, ?)",
        (
            (n, f"subscriber{n}@example.com", f"Subscriber {n}", now_text, now_text)
            for n in range(1, subscribers + 1)
        ),
    )
    enrollments: list[tuple[int, int, str]] = []
    for n in range(1, subscribers + 1):
        first = rng.randrange(len(SEQUENCES))
        for offset in (0, 1):
            enrollments.append((len(enrollments) + 1, n, SEQUENCES[(first + offset) % 5]))
    db.executemany(
        "INSERT INTO enrollment (id, subscriber_id, sequence_id, sequence_version, status, "
        "enrolled_at, updated_at) VALUES (?, ?, ?, 'v1', 'completed', ?, ?)",
        ((e, s, q, now_text, now_text) for e, s, q in enrollments),
    )
    weights = [w for _, w in STATUSES]
    names = [s for s, _ in STATUSES]
    start = NOW - YEAR
    step_seconds = YEAR.total_seconds() / rows
    sends: list[tuple[Any, ...]] = []
    events: list[tuple[Any, ...]] = []
    # In time order (ids grow with decided_at, as a live ledger's do), each
    # row a random subscriber's next step.
    order = [(e, s) for e in range(len(enrollments)) for s in range(len(STEPS))]
    rng.shuffle(order)
    for position, (enrollment_index, step_index) in enumerate(order[:rows]):
        enrollment_id, subscriber_id, sequence = enrollments[enrollment_index]
        send_id = position + 1
        decided = start + timedelta(seconds=position * step_seconds + rng.uniform(0, 60))
        status = rng.choices(names, weights)[0]
        decided_text = _ts(decided)
        sent_text = decided_text if status == "sent" else None
        sends.append(
            (
                send_id,
                f"k{send_id:031d}",
                enrollment_id,
                subscriber_id,
                sequence,
                STEPS[step_index],
                status,
                "the provider said no" if status in ("failed", "unknown") else None,
                decided_text,
                decided_text,
                sent_text,
                f"<msg{send_id}@sendgrid>" if status == "sent" else None,
                f"Subject of {STEPS[step_index]}",
            )
        )
        if status == "sent":
            roll = rng.random()
            kinds = ["delivered"] if roll < 0.6 else []
            if roll < 0.2:
                kinds.append("opened")
            if roll < 0.05:
                kinds.append("clicked")
            for minutes, kind in enumerate(kinds, start=1):
                at = _ts(decided + timedelta(minutes=minutes))
                events.append((f"e{send_id}-{kind}", kind, subscriber_id, send_id, at, at))
        if len(sends) >= 50_000:
            _write(db, sends, events)
    _write(db, sends, events)
    for _, sql in indexes:
        db.execute(sql)
    # No ANALYZE: nurture never runs it, so the planner works without statistics here too.
    db.commit()
    db.close()
    assert per_subscriber * subscribers >= rows


def _write(db: sqlite3.Connection, sends: list[Any], events: list[Any]) -> None:
    db.executemany(
        "INSERT INTO send (id, key, enrollment_id, subscriber_id, sequence_id, "
        "sequence_version, step_id, status, reason, due_at, decided_at, sent_at, attempts, "
        "provider_message_id, subject) VALUES (?, ?, ?, ?, ?, 'v1', ?, ?, ?, ?, ?, ?, 1, ?, ?)",
        sends,
    )
    db.executemany(
        "INSERT INTO event (provider_event_id, kind, subscriber_id, send_id, occurred_at, "
        "received_at, payload, machine) VALUES (?, ?, ?, ?, ?, ?, '{}', 0)",
        events,
    )
    sends.clear()
    events.clear()


def median_ms(run: Callable[[], object], repeat: int) -> float:
    run()  # warm the cache and the statement cache
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        run()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


def page_500_cursor(engine: Engine) -> str | None:
    """The cursor of page 500 of the unfiltered log: walked page by page."""
    cursor: str | None = None
    for _ in range(499):
        cursor = read_page(engine, SendFilter(), cursor=cursor, limit=50).older
        if cursor is None:
            return None
    return cursor


# ----------------------------------------------------------- hooks for the others


def loaded_sequences() -> dict[str, Any]:
    """The five filled sequences as files would load them: five steps each."""
    from nurture.core.loader import parse_sequence

    found: dict[str, Any] = {}
    for sequence_id in SEQUENCES:
        lines = [
            "version: 1",
            f"id: {sequence_id}",
            f"name: {sequence_id}",
            "sender: {name: Anna, email: anna@example.com}",
            "timezone: Europe/Stockholm",
            "trigger: {event: subscribed}",
            "send_window: {days: [mon, tue, wed, thu, fri], start: '08:00', end: '18:00'}",
            "steps:",
        ]
        for number, step in enumerate(STEPS):
            lines += [
                f"  - id: {step}",
                f"    wait: {'0' if number == 0 else '2 days'!r}",
                f"    subject: Subject of {step}",
                f"    template: {step}.md",
            ]
        lines.append(
            "    offer: {name: Audit, price: 100 kr, checkout_url: 'https://shop.example.com/a'}"
        )
        loaded, problems = parse_sequence("\n".join(lines) + "\n", f"{sequence_id}.yaml")
        assert loaded is not None, problems
        found[sequence_id] = loaded
    return found


def explain_hook(engine: Engine, rows: int) -> Callable[[], object] | None:
    """One subscriber's explain timeline (one in the middle of the ids: two
    enrollments, their ledger rows and events), as the subscriber page makes it."""
    from nurture.admin.explain import explain_subscriber, subscriber_id_of

    sequences = loaded_sequences()
    subscriber_id = subscriber_id_of(engine, f"subscriber{max(1, rows // 20)}@example.com")
    assert subscriber_id is not None
    return lambda: explain_subscriber(engine, sequences, subscriber_id, NOW)


def funnel_hook(engine: Engine) -> Callable[[], object] | None:
    """One sequence's funnel (``sequence-2``) as its page makes it: read from
    the summary tables that migration 0008's triggers keep current."""
    from nurture.admin.funnels import sequence_funnel

    sequences = loaded_sequences()
    return lambda: sequence_funnel(engine, sequences, "sequence-2")


# ------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="ledger rows to write")
    parser.add_argument("--repeat", type=int, default=21, help="timed runs per measurement")
    parser.add_argument("--keep", type=Path, help="the SQLite file to use (filled if missing)")
    args = parser.parse_args()
    folder = tempfile.TemporaryDirectory()
    path = args.keep or Path(folder.name) / "admin.db"
    if not path.exists():
        began = time.perf_counter()
        fill(path, args.rows)
        print(f"filled {args.rows:,} ledger rows in {time.perf_counter() - began:.1f} s")
    engine = make_engine(f"sqlite:///{path}")
    measurements: list[tuple[str, Callable[[], object] | None]] = [
        ("send log, first page", lambda: read_page(engine, SendFilter(), limit=50)),
    ]
    began = time.perf_counter()
    cursor = page_500_cursor(engine)
    walked = time.perf_counter() - began
    if cursor is not None:
        measurements.append(
            ("send log, page 500", lambda: read_page(engine, SendFilter(), cursor=cursor))
        )
    failed = SendFilter(status="failed", sequence="sequence-2")
    measurements += [
        ("status=failed + sequence", lambda: read_page(engine, failed, limit=50)),
        (
            "address",
            lambda: read_page(engine, SendFilter(email="subscriber5000@example.com"), limit=50),
        ),
        (
            "status=unknown, page 1",
            lambda: read_page(engine, SendFilter(status="unknown"), limit=50),
        ),
        ("subscriber explain", explain_hook(engine, args.rows)),
        ("sequence funnel", funnel_hook(engine)),
    ]
    print(f"walked 499 pages to reach page 500 in {walked:.1f} s")
    for name, run in measurements:
        if run is None:
            print(f"{name:32} not built")
            continue
        print(f"{name:32} {median_ms(run, args.repeat):8.1f} ms (median of {args.repeat})")
    engine.dispose()
    folder.cleanup()


if __name__ == "__main__":
    main()
