"""Dispatch throughput: emails per second for N due enrollments on SQLite.

Run by hand (not in CI):

    .venv/bin/python benchmarks/dispatch.py            # 20,000 enrollments, every scenario
    .venv/bin/python benchmarks/dispatch.py --count 2000 --scenario memory

Scenarios, each in its own process so peak memory is its own:

* ``memory``           the in-memory transport, one worker
* ``memory-1-worker`` / ``memory-2-workers``  the same in one or two worker
                       processes started together (the claim keeps them apart)
* ``sendgrid``         the SendGrid transport (official library builds the
                       request; pooled keep-alive connections) against the
                       fake SendGrid server in another process
* ``sendgrid-100ms``   the same with 100 ms of latency injected per request
* ``sendgrid-unpooled`` the official client's own per-request connection
* ``sendgrid-100ms-1-worker`` / ``sendgrid-100ms-2-workers``  one or two worker
                       processes sending through the SendGrid transport to one
                       fake server (100 ms per request), ``--concurrency`` each

``--database URL`` runs them on PostgreSQL (each in a new schema) instead of a
SQLite file; with ``--against-sqlite`` each scenario runs on SQLite and then
on PostgreSQL, ``--repeat`` times, and each pair's ratio of emails/s is
printed (the goal: PostgreSQL's one worker at least 0.75 of SQLite's).

Each builds a fresh database with N subscribers enrolled in the example
sequence and due now, then times one ``dispatch(now)`` pass (claim, decide,
render, reserve, send, confirm) until nothing is due.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nurture.app.clock import FixedClock  # noqa: E402
from nurture.app.runtime import (  # noqa: E402
    build_runtime,
    freeze_startup_objects,
    prompt_thread_switching,
)
from nurture.app.settings import Settings  # noqa: E402
from nurture.store import queries  # noqa: E402
from nurture.store.db import make_engine, refresh_statistics  # noqa: E402
from nurture.store.migrate import upgrade  # noqa: E402
from nurture.transports.base import Transport  # noqa: E402

NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
WIDTH = 31  # the first column: "sendgrid-100ms-2-workers (PostgreSQL)" does not fit, the rest do
SCENARIOS = (
    "memory",
    "memory-1-worker",
    "memory-2-workers",
    "sendgrid",
    "sendgrid-100ms",
    "sendgrid-unpooled",
    "sendgrid-100ms-1-worker",
    "sendgrid-100ms-2-workers",
)


def fresh_database(database: str, folder: Path) -> tuple[str, Any]:
    """A URL of an empty database and how to drop it: a SQLite file in
    ``folder`` (``database`` is "sqlite"), or a new schema on the PostgreSQL
    server ``database`` names (its search_path set in the URL, so worker
    processes see only that schema)."""
    if database == "sqlite":
        return f"sqlite:///{folder / 'bench.db'}", lambda: None
    import secrets

    from sqlalchemy import text
    from sqlalchemy.pool import NullPool

    schema = f"nurture_bench_{secrets.token_hex(6)}"
    admin = make_engine(database, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    joiner = "&" if "?" in database else "?"
    url = f"{database}{joiner}options=-csearch_path%3D{schema}"

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()

    return url, drop


ZONES = ("Europe/Stockholm", "Europe/London", "Europe/Berlin", "Africa/Lagos")


def bench_settings(url: str, batch: int, concurrency: int) -> Settings:
    """The example content on ``url``, with no rate limit to speak of."""
    return Settings(
        sequences_dir=ROOT / "sequences",
        templates_dir=ROOT / "templates",
        database_url=url,
        secret_key="benchmark-secret-not-a-placeholder",
        # The sendgrid runs send through a real transport, which needs https.
        base_url="https://mail.example.se",
        postal_address="Benchmark AB, Bänkgatan 2, 111 23 Stockholm, Sweden",
        rate_limit=1_000_000.0,
        batch_size=batch,
        send_concurrency=concurrency,
    )


def populate(url: str, count: int, version: str) -> None:
    engine = make_engine(url)
    upgrade(engine)
    with engine.begin() as conn:
        subscribers = [
            {
                "email": f"subscriber{n}@example.com",
                "name": f"Subscriber Number{n}",
                "locale": "sv" if n % 2 else "en",
                "timezone": ZONES[n % len(ZONES)],
                "tags": ["b2b"],
                "attributes": {"company": f"Company {n}"},
                "status": "active",
                "created_at": NOW,
                "updated_at": NOW,
            }
            for n in range(count)
        ]
        conn.execute(insert(queries.SUBSCRIBER), subscribers)
        ids = [row.id for row in conn.execute(select(queries.SUBSCRIBER.c.id))]
        conn.execute(
            insert(queries.ENROLLMENT),
            [
                {
                    "subscriber_id": sid,
                    "sequence_id": "sales-process",
                    "sequence_version": version,
                    "status": "active",
                    "enrolled_at": NOW,
                    "next_due_at": NOW,
                    "updated_at": NOW,
                }
                for sid in ids
            ],
        )
        # As `nurture subscribers import` does after a large load (and
        # autovacuum would within a minute): PostgreSQL plans the claim on
        # the real table sizes. A no-op on SQLite.
        refresh_statistics(conn, [queries.SUBSCRIBER.name, queries.ENROLLMENT.name])
    engine.dispose()


def sendgrid_transport(host: str, concurrency: int, *, pooled: bool = True) -> Transport:
    """The SendGrid transport every sendgrid scenario sends through, to the fake at ``host``."""
    from nurture.transports.sendgrid import SendGridTransport

    return SendGridTransport(
        "SG.benchmark-key", host=host, timeout=30.0, pooled=pooled, max_connections=concurrency
    )


def _worker(
    url: str, batch: int, concurrency: int, provider: str | None, ready: Any, go: Any, results: Any
) -> None:
    """One of several dispatcher processes sharing the database; ``provider``
    is the fake SendGrid server's URL, or None for the in-memory transport."""
    transport: Transport
    if provider is None:
        from nurture.testing import MemoryTransport

        transport = MemoryTransport(record=False)
    else:
        transport = sendgrid_transport(provider, concurrency)
    runtime = build_runtime(
        bench_settings(url, batch, concurrency),
        FixedClock(NOW),
        transport=transport,
        engine=make_engine(url),
        migrate=False,
    )
    freeze_startup_objects()
    prompt_thread_switching()
    ready.release()
    go.wait()
    cpu = time.process_time()
    report = runtime.dispatcher.dispatch(NOW)
    cpu = time.process_time() - cpu
    runtime.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results.put((report.sent, time.perf_counter(), peak, cpu))


def run_workers(
    count: int,
    batch: int,
    workers: int,
    database: str,
    concurrency: int = 1,
    latency: float | None = None,
) -> dict[str, Any]:
    """``workers`` dispatcher processes on one database (the claim query keeps
    them from taking the same enrollment), timed from a common start; with a
    ``latency``, they send to one fake SendGrid server that waits that long
    before each answer."""
    import multiprocessing

    from nurture.core.loader import load_sequences

    loaded, _ = load_sequences([ROOT / "sequences"])
    folder = Path(tempfile.mkdtemp(prefix="nurture-bench-"))
    url, drop = fresh_database(database, folder)
    populate(url, count, loaded["sales-process"].version)
    fake = None
    if latency is not None:
        from nurture.testing.fake_sendgrid import FakeSendGrid

        fake = FakeSendGrid.start_subprocess(latency=latency, record=False)
    provider = None if fake is None else fake.url
    context = multiprocessing.get_context("spawn")
    ready, go, results = context.Semaphore(0), context.Event(), context.Queue()
    processes = [
        context.Process(
            target=_worker, args=(url, batch, concurrency, provider, ready, go, results)
        )
        for _ in range(workers)
    ]
    for process in processes:
        process.start()
    for _ in processes:
        ready.acquire()
    provider_cpu = None if fake is None else process_cpu(fake.pid)
    started = time.perf_counter()
    go.set()
    outcomes = [results.get(timeout=600) for _ in processes]
    for process in processes:
        process.join()
    sent = sum(o[0] for o in outcomes)
    delivered = provider_us = None
    if fake is not None:
        provider_us = provider_cpu_us(fake.pid, provider_cpu, sent)
        delivered = fake.stats().get("delivered")
        fake.stop()
    drop()
    elapsed = max(o[1] for o in outcomes) - started
    kind = "memory" if latency is None else "sendgrid-100ms"
    return {
        "scenario": f"{kind}-{workers}-worker{'s' if workers > 1 else ''}",
        "emails": sent,
        "seconds": round(elapsed, 2),
        "emails_per_second": round(sent / elapsed),
        "cpu_us_per_email": round(sum(o[3] for o in outcomes) / max(sent, 1) * 1e6),
        "peak_rss_mb": round(max(o[2] for o in outcomes)),
        "provider_received": delivered,
        "provider_cpu_us_per_email": provider_us,
    }


def process_cpu(pid: int) -> float | None:
    """CPU seconds (user and system) another process has used so far; None off Linux."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def provider_cpu_us(pid: int, before: float | None, sent: int) -> int | None:
    """The fake SendGrid's (process ``pid``) CPU per email since ``before``: on a
    two-core machine it is taken from the workers being measured, so it is
    reported beside theirs."""
    after = process_cpu(pid)
    if before is None or after is None:
        return None
    return round((after - before) / max(sent, 1) * 1e6)


def run_scenario(
    name: str,
    count: int,
    batch: int,
    concurrency: int,
    database: str = "sqlite",
    memory_concurrency: int = 1,
) -> dict[str, Any]:
    if name.startswith("memory-") and name.endswith(("-worker", "-workers")):
        return run_workers(count, batch, int(name.split("-")[1]), database, memory_concurrency)
    if name.startswith("sendgrid-100ms-") and name.endswith(("-worker", "-workers")):
        workers = int(name.split("-")[2])
        return run_workers(count, batch, workers, database, concurrency, latency=0.1)
    from nurture.core.loader import load_sequences

    loaded, _ = load_sequences([ROOT / "sequences"])
    version = loaded["sales-process"].version
    folder = Path(tempfile.mkdtemp(prefix="nurture-bench-"))
    url, drop = fresh_database(database, folder)
    populate(url, count, version)
    settings = bench_settings(url, batch, memory_concurrency if name == "memory" else concurrency)
    fake = None
    transport: Transport
    if name == "memory":
        from nurture.testing import MemoryTransport

        transport = MemoryTransport(record=False)
    else:
        from nurture.testing.fake_sendgrid import FakeSendGrid

        latency = 0.1 if name == "sendgrid-100ms" else 0.0
        fake = FakeSendGrid.start_subprocess(latency=latency, record=False)
        transport = sendgrid_transport(fake.url, concurrency, pooled=name != "sendgrid-unpooled")
    engine = make_engine(url)
    runtime = build_runtime(
        settings, FixedClock(NOW), transport=transport, engine=engine, migrate=False
    )
    freeze_startup_objects()  # as the CLI does after start-up
    prompt_thread_switching()
    provider_cpu = None if fake is None else process_cpu(fake.pid)
    started, cpu_started = time.perf_counter(), time.process_time()
    report = runtime.dispatcher.dispatch(NOW)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started  # every thread of this process
    delivered = provider_us = None
    if fake is not None:
        provider_us = provider_cpu_us(fake.pid, provider_cpu, report.sent)
        delivered = fake.stats().get("delivered")
        fake.stop()
    runtime.close()
    drop()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "scenario": name,
        "emails": report.sent,
        "seconds": round(elapsed, 2),
        "emails_per_second": round(report.sent / elapsed),
        "cpu_us_per_email": round(cpu / max(report.sent, 1) * 1e6),
        "peak_rss_mb": round(peak_mb),
        "provider_received": delivered,
        "provider_cpu_us_per_email": provider_us,
        "failed_or_retried": report.failed + report.retried + report.unknown,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=128)
    parser.add_argument(
        "--memory-concurrency",
        type=int,
        default=1,
        help="send_concurrency of the memory scenarios (1: the serial sender; 8: the default)",
    )
    parser.add_argument("--scenario", choices=SCENARIOS, action="append")
    parser.add_argument(
        "--database",
        default="sqlite",
        help="sqlite (a fresh file), or a PostgreSQL URL: each scenario gets a new schema",
    )
    parser.add_argument(
        "--against-sqlite",
        action="store_true",
        help="with a PostgreSQL --database: run each scenario on SQLite and on PostgreSQL "
        "in turn, --repeat times, and print PostgreSQL's emails/s over SQLite's for each pair",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs of each scenario (pairs with --against-sqlite)"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    scenarios = args.scenario or list(SCENARIOS)
    if args.child:
        result = run_scenario(
            scenarios[0], args.count, args.batch, args.concurrency, args.database,
            args.memory_concurrency,
        )  # fmt: skip
        print(json.dumps(result))
        return
    if args.against_sqlite and args.database == "sqlite":
        parser.error("--against-sqlite needs a PostgreSQL URL as --database")
    databases = ["sqlite", args.database] if args.against_sqlite else [args.database]
    where = " and ".join(_kind(database) for database in databases)
    print(
        f"{args.count} due enrollments on {where}, batch {args.batch}, "
        f"concurrency {args.concurrency} (memory scenarios: {args.memory_concurrency})"
    )
    print(
        f"{'scenario':<{WIDTH}}{'emails':>8}{'seconds':>9}{'emails/s':>10}{'CPU µs/email':>14}"
        f"{'peak MB':>9}{'provider got':>14}{'its CPU µs/email':>18}"
    )
    for name in scenarios:
        ratios: list[float] = []
        for _ in range(args.repeat):
            # In turn, so that a pair shares the machine's moment: these
            # machines' speed drifts by more than the difference measured.
            rates = [_run_child(name, args, database) for database in databases]
            if args.against_sqlite:
                sqlite, postgresql = rates
                if sqlite is not None and postgresql is not None:
                    ratios.append(postgresql / sqlite)
                    print(f"{'':<{WIDTH}}PostgreSQL / SQLite: {ratios[-1]:.3f}")
        if len(ratios) > 1:
            print(
                f"{name}: PostgreSQL / SQLite over {len(ratios)} pairs: median "
                f"{statistics.median(ratios):.3f}, {min(ratios):.3f} to {max(ratios):.3f}"
            )


def _kind(database: str) -> str:
    return "SQLite" if database == "sqlite" else "PostgreSQL"


def _run_child(name: str, args: argparse.Namespace, database: str) -> int | None:
    """One scenario in its own process on ``database``: prints its row and
    returns its emails/s (None if it failed)."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", "--scenario", name, "--count", str(args.count),
         "--batch", str(args.batch), "--concurrency", str(args.concurrency),
         "--memory-concurrency", str(args.memory_concurrency),
         "--database", database],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    label = f"{name} ({_kind(database)})" if args.against_sqlite else name
    if out.returncode != 0:
        print(f"{label}: failed\n{out.stderr[-2000:]}")
        return None
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(
        f"{label:<{WIDTH}}{result['emails']:>8}{result['seconds']:>9}"
        f"{result['emails_per_second']:>10}{result.get('cpu_us_per_email', '-'):>14}"
        f"{result['peak_rss_mb']:>9}{result.get('provider_received') or '-':>14}"
        f"{result.get('provider_cpu_us_per_email') or '-':>18}"
    )
    return int(result["emails_per_second"])


if __name__ == "__main__":
    main()
