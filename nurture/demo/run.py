"""``make demo``: the real dispatcher on an accelerated clock.

Creates a demo folder with the example content, SQLite and the outbox, adds a
handful of subscribers in different time zones, and runs the *real* dispatcher
(the same code as ``nurture run``) on a clock where one simulated day passes
per real second, so the whole series lands in ``outbox/`` within a minute.

While it runs, a live table shows the latest decisions; at the end the whole
table is printed, every decision in order (the README quotes its rows: keep
them in step, ``tests/e2e/test_demo.py`` compares them).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from nurture.app.clock import AcceleratedClock
from nurture.app.runtime import build_runtime, freeze_startup_objects, prompt_thread_switching
from nurture.app.settings import load_settings
from nurture.app.signals import StopSignals
from nurture.audience.purchases import purchase_input, record_purchase
from nurture.audience.subscribers import add_subscriber
from nurture.demo.examples import example_root
from nurture.store.db import session_factory
from nurture.store.queries import next_due_time
from nurture.store.reports import active_enrollment_count

MARKER = ".nurture-demo"
# Friday 15:30 in Stockholm (the README's `simulate` example): the weekend,
# the window and DST-free winter time zones all show in the first few days.
START = datetime(2026, 11, 27, 14, 30, tzinfo=UTC)
PEOPLE = [
    ("karin@example.com", "Karin Lindqvist", "sv", "Europe/Stockholm", ("b2b",)),
    ("jamie@example.com", "Jamie Doe", "en", "America/New_York", ("b2b",)),
    ("priya@example.com", "Priya Raman", "en", "Asia/Kolkata", ("b2b",)),
    ("ola@example.com", "Ola Berg", "sv", "Europe/Stockholm", ("b2b", "customer")),
    ("tom@example.com", "Tom Baker", "en-GB", "Europe/London", ("b2b",)),
    ("lee@example.com", "Lee Chen", "en", "Australia/Sydney", ("b2b",)),
    ("sam@example.com", "Sam Newsletter", "en", "Europe/Berlin", ()),
]
# Tom buys the entry-level offer's product after the third email: his
# nurturing stops at that moment (goal reached, as `simulate` shows it) and he
# never gets the case study or the offer.
PURCHASE = ("tom@example.com", START + timedelta(days=6), "sales-audit")


def prepare(folder: Path) -> None:
    """A fresh demo folder (an old demo folder is replaced, nothing else is)."""
    if folder.exists():
        if not (folder / MARKER).exists():
            sys.exit(f"{folder} exists and is not a demo folder; choose another with --dir")
        print(f"Replacing the earlier demo in {folder} (its database and outbox start afresh)")
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / MARKER).write_text("created by `make demo`; safe to delete\n", encoding="utf-8")
    source = example_root()
    for name in ("sequences", "templates", "schemas"):
        shutil.copytree(source / name, folder / name)
    (folder / "nurture.toml").write_text(
        "# The demo's settings: SQLite and the outbox folder.\n"
        'database_url = "sqlite:///nurture.db"\n'
        'transport = "outbox"\n'
        'outbox_dir = "outbox"\n'
        'base_url = "http://localhost:8000"\n'
        'secret_key = "demo-only-secret-not-for-production"\n'
        "rate_limit = 1000\n",
        encoding="utf-8",
    )


def decisions(rows: list[tuple[str, ...]], title: str | None = None) -> Table:
    """The demo's table: one row per decision (and the purchase). The live view
    (no title) fills the terminal; the final table is as wide as its rows."""
    # Without borders, and only the last column wrapping: at 80 columns each
    # decision is one line, its address and step whole.
    table = Table(
        title=title,
        title_justify="left",
        expand=title is None,
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    for column in ("UTC", "local time", "subscriber", "step"):
        table.add_column(column, no_wrap=True)
    table.add_column("what happened", overflow="fold")
    for cells in rows:
        table.add_row(*cells)
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, default=Path("demo"))
    parser.add_argument(
        "--speed", type=float, default=86_400.0, help="simulated seconds per second"
    )
    parser.add_argument("--days", type=float, default=21.0, help="simulated days to run at most")
    args = parser.parse_args(argv)
    console = Console()
    folder = args.dir.resolve()
    prepare(folder)
    settings = load_settings(folder)
    clock = AcceleratedClock(START, args.speed)
    runtime = build_runtime(settings, clock)
    factory = session_factory(runtime.engine)
    with factory() as session:
        for email, name, locale, zone, tags in PEOPLE:
            add_subscriber(
                session, email=email, name=name, locale=locale, tz=zone, tags=tags,
                consent_source="demo", consent_text="signed up at the demo fair",
                now=START, sequences=runtime.registry.sequences(),
            )  # fmt: skip
        session.commit()
    console.print(
        f"[bold]nurture demo[/]: {len(PEOPLE)} subscribers, sequence "
        f"[cyan]sales-process[/], one simulated day per {86_400 / args.speed:g} s\n"
        f"folder: {folder}"
    )
    zones = {email: ZoneInfo(zone) for email, _, _, zone, _ in PEOPLE}
    lines: list[tuple[datetime, tuple[str, ...]]] = []  # (when, the table's cells)
    purchased = False

    def line(
        moment: datetime, email: str, step: str, what: str
    ) -> tuple[datetime, tuple[str, ...]]:
        local = moment.astimezone(zones.get(email, UTC))
        return moment, (f"{moment:%d %b %H:%M}", f"{local:%a %H:%M %Z}", email, step, what)

    def buy(now: datetime) -> None:
        """Tom's purchase, recorded as the shop's checkout would report it:
        stored, credited to the email that earned it (his last one: the demo
        has no clicks), counted in `nurture stats`, and ending his sequence."""
        purchase = purchase_input(
            source="checkout", order_id="demo-1001", product=PURCHASE[2],
            amount="4900", currency="SEK", occurred_at=PURCHASE[1], email=PURCHASE[0],
        )  # fmt: skip
        with runtime.engine.begin() as conn:
            record_purchase(
                conn, purchase, keys=runtime.settings.secret_keys,
                attribution_window=timedelta(seconds=runtime.settings.attribution_window),
                now=now,
            )  # fmt: skip

    def view(now: datetime) -> Group:
        header = Text(f"simulated time {now:%a %Y-%m-%d %H:%M} UTC", style="bold")
        return Group(header, decisions([cells for _, cells in lines[-18:]]))

    end = START + timedelta(days=args.days)
    freeze_startup_objects()
    prompt_thread_switching()
    clock.restart()  # the simulated clock starts now that everything is set up
    # Ctrl-C ends the pass in flight cleanly and shows what happened so far.
    with (
        StopSignals(on_first=lambda _signum: runtime.dispatcher.stop()) as signals,
        Live(view(START), console=console, refresh_per_second=8, transient=True) as live,
    ):
        while signals.first is None:
            now = clock()
            # Dispatch at each due time the clock has passed, in order, so the
            # emails carry the times the schedule gives them (as `simulate`
            # shows) instead of the demo loop's coarse tick; the purchase is
            # recorded in its place among them.
            while True:
                with runtime.engine.connect() as conn:
                    due = next_due_time(conn)
                if not purchased and PURCHASE[1] <= now and (due is None or due >= PURCHASE[1]):
                    buy(now)
                    purchased = True
                    lines.append(line(PURCHASE[1], PURCHASE[0], "-", f"bought {PURCHASE[2]}"))
                    continue  # the purchase made Tom's enrollment due at once
                moment = due if due is not None and due <= now else now
                report = runtime.dispatcher.dispatch(moment)
                for email, _sequence, step, what in report.log:
                    lines.append(line(moment, email, step, what))
                if moment == now or signals.first is not None:
                    break
            live.update(view(now))
            with runtime.engine.connect() as conn:
                active = active_enrollment_count(conn)
            if active == 0 or now >= end:
                break
            time.sleep(0.05)
    runtime.close()
    # In time order, and by address within one moment (the emails of one pass
    # are answered in any order); a purchase stays before the exit it causes.
    ordered = sorted(lines, key=lambda item: (item[0], item[1][2]))
    console.print(decisions([cells for _, cells in ordered], title="every decision, in order"))
    emails = sorted((folder / "outbox").glob("*.eml"))
    if signals.first is not None:
        console.print(
            f"\nStopped (signal {signals.first}) at simulated {now:%a %Y-%m-%d %H:%M} UTC, "
            f"with {len(emails)} emails in {folder / 'outbox'}; the others are still due. "
            f"Every decision so far: .venv/bin/nurture -C {args.dir} log\n"
            "Running `make demo` again starts a fresh demo folder."
        )
        return 128 + signals.first
    console.print(f"\n[bold green]{len(emails)} emails[/] are in {folder / 'outbox'}, e.g.:")
    for path in emails[:3]:
        console.print(f"  {path.name}")
    console.print(
        "\nEach is a complete RFC 5322 message: open it in a mail client, or read it with\n"
        "Python's email parser. Every decision (sent, skipped and why) is in the send log:\n"
        f"  .venv/bin/nurture -C {args.dir} log\n\n"
        "Run the real thing (worker + web app, real clock; Ctrl-C stops it):\n"
        f"  .venv/bin/nurture -C {args.dir} run\n"
        "then sign up at http://127.0.0.1:8000/subscribe/newsletter?tag=b2b (the demo\n"
        "sequence enrolls subscribers tagged b2b; the confirmation email lands in the\n"
        "outbox), or, in another terminal, add a subscriber and an admin for /admin:\n"
        f"  .venv/bin/nurture -C {args.dir} subscribers add you@example.com --tag b2b\n"
        f"  .venv/bin/nurture -C {args.dir} admin create-user you\n"
        "Running `make demo` again starts a fresh demo folder."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
