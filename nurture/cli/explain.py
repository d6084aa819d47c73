"""``nurture explain EMAIL``: why a subscriber got, will get or never gets each
email — the timeline of the admin's subscriber page
(:mod:`nurture.admin.explain`), as a Rich table per enrollment or as JSON.

Names, subjects and reasons come from subscribers and files, so they are
printed through :func:`~nurture.cli.console.safe`.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated
from zoneinfo import ZoneInfo

import typer
from rich.table import Table
from rich.text import Text

from nurture.cli.console import errors, examples, fail, out, print_json, safe, with_reason

if TYPE_CHECKING:
    from nurture.admin.explain import SubscriberExplain

EXPLAIN_EXAMPLES = examples(
    "nurture explain karin@example.com",
    "nurture explain karin@example.com --json | jq '.enrollments[0].steps'",
)


def _when(moment: datetime | None, zone: ZoneInfo, approximate: bool = False) -> str:
    if moment is None:
        return "-"
    try:
        local = moment.astimezone(zone)
    except OverflowError:  # due past the end of the calendar (timing.NEVER), in a zone ahead of UTC
        return "never (past the year 9999)"
    return ("~" if approximate else "") + f"{local:%a %Y-%m-%d %H:%M %Z}"


def print_explain(found: SubscriberExplain) -> None:
    p = found.profile
    status = with_reason(p.status, p.status_reason)
    out.print(Text.assemble((p.email, "bold"), "  ", safe(p.name)))
    out.print(safe(f"status: {status}; time zone: {p.timezone or '- (the sequence’s)'}"))
    if p.suppressed:
        out.print(safe(f"suppressed: {p.suppressed}"))
    if not found.enrollments:
        out.print("not enrolled in any sequence", highlight=False)
    for e in found.enrollments:
        zone = ZoneInfo(e.zone)
        version = (
            e.version
            if e.current_version in (None, e.version)
            else (f"{e.version} (the file is now {e.current_version})")
        )
        title = Text.assemble(
            "\n", (e.sequence_id, "bold"), safe(f": {e.status}"),
            safe(f" — {e.status_reason}" if e.status_reason else ""),
        )  # fmt: skip
        out.print(title)
        out.print(safe(f"  at step {e.position or '- (not started)'}, version {version}"))
        if e.next_due_at is None:  # exited or completed: no zone to read a time in
            out.print("  nothing more is due", highlight=False)
        else:
            out.print(safe(f"  next due {_when(e.next_due_at, zone)} ({e.zone})"))
        for note in e.notes:
            out.print(safe(f"  {note}", "yellow"))
        # What happened over when, in one column, so the reasons keep most of
        # an 80-column terminal (three columns left them 20 characters).
        table = Table(show_edge=False, pad_edge=False, show_lines=True)
        table.add_column("step", overflow="fold")
        table.add_column("what, when", no_wrap=True)
        table.add_column("why", overflow="fold")
        for line in e.steps:
            what = line.state + (" (projected)" if line.projected else "")
            why = line.why + (f"\n{line.timing}" if line.timing else "")
            table.add_row(
                safe(line.step),
                Text.assemble(safe(what), "\n", _when(line.at, zone, line.projected)),
                safe(why, lines=True),
            )
        out.print(table)


def explain_command(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(metavar="EMAIL", help="The subscriber's address.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Why a subscriber got each email, and when the next ones are due.

    Every step of every enrollment: sent, skipped, pending or projected, and
    why."""
    from nurture.admin.explain import explain_subscriber, subscriber_id_of
    from nurture.app.runtime import open_engine
    from nurture.audience.input import InvalidSubscriberError, normalise_email
    from nurture.cli.context import runnable_sequences

    try:
        address = normalise_email(email)
    except InvalidSubscriberError as exc:
        raise fail(str(exc)) from exc
    now = ctx.obj.now()
    with errors():
        settings = ctx.obj.store_settings()
        sequences = runnable_sequences(settings)
        engine = open_engine(settings)
        try:
            subscriber_id = subscriber_id_of(engine, address)
            found = (
                explain_subscriber(engine, sequences, subscriber_id, now)
                if subscriber_id is not None
                else None
            )
        finally:
            engine.dispose()
    if found is None:
        raise fail(f"no subscriber {address} (see `nurture subscribers list`)")
    if as_json:
        print_json(found.as_json())
    else:
        print_explain(found)
