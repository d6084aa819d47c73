"""``nurture log``: the send log, every decision with why, newest first
(:mod:`nurture.admin.sendlog` reads it), filtered by subscriber, sequence,
step, status and time; as a table that fits an 80-column terminal, or JSON.

Addresses, ids and provider messages come from outside: printed through
:func:`~nurture.cli.console.safe`, never as markup.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich import box
from rich.table import Column, Table
from rich.text import Text

from nurture.cli.bounds import MAX_ROWS
from nurture.cli.console import (
    EXIT_CONFIGURATION,
    errors,
    examples,
    fail,
    out,
    print_json,
    safe,
)
from nurture.core.vocabulary import SendStatus

SEND_STATUSES = ", ".join(status.value for status in SendStatus)

LOG_EXAMPLES = examples(
    "nurture log",
    "nurture log --email karin@example.com",
    "nurture log --sequence sales-process --status failed --limit 20",
    "nurture log --step offer --since 2026-11-01 --until 2026-11-30",
    "nurture log --status failed --json | jq '.[].reason'",
)


def log_command(
    ctx: typer.Context,
    email: Annotated[
        str | None, typer.Option(metavar="EMAIL", help="Only this subscriber.")
    ] = None,
    sequence: Annotated[
        str | None, typer.Option(metavar="SEQUENCE", help="Only this sequence.")
    ] = None,
    step: Annotated[
        str | None, typer.Option(metavar="STEP", help="Only this step (its id).")
    ] = None,
    status: Annotated[
        str | None, typer.Option(metavar="STATUS", help=f"Only this status: {SEND_STATUSES}.")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            metavar="ISO",
            help="Only decisions at or after this date or time (2026-11-27, "
            "2026-11-27T09:00:00Z; UTC unless it says).",
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(
            metavar="ISO",
            help="Only decisions before this time (a date: through the end of that day, UTC).",
        ),
    ] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=MAX_ROWS, metavar="N", help="Rows to show (newest first).")
    ] = 50,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON array of rows (see the README).")
    ] = False,
) -> None:
    """The send log: every decision, with why. Fits an 80-column terminal."""
    from nurture.admin.sendlog import SendLogError, parse_filter, parse_moment, recent
    from nurture.app.runtime import open_engine

    if status is not None and status not in {s.value for s in SendStatus}:
        raise fail(f"--status {status!r}: use one of {SEND_STATUSES}", EXIT_CONFIGURATION)
    for option, value in (("--since", since), ("--until", until)):
        try:
            if value is not None:
                # As parse_filter reads it: a date --until is the start of the next day.
                parse_moment(value, end=option == "--until")
        except SendLogError as exc:
            raise fail(f"{option}: {exc}", EXIT_CONFIGURATION) from exc
    try:
        where = parse_filter(
            status=status, sequence=sequence, step=step, email=email, since=since, until=until
        )
    except SendLogError as exc:
        raise fail(str(exc), EXIT_CONFIGURATION) from exc
    with errors():
        engine = open_engine(ctx.obj.store_settings())
        try:
            lines = recent(engine, where, limit=limit)
        finally:
            engine.dispose()
    if as_json:
        print_json([line.to_json() for line in lines])
        return
    if not lines:
        out.print(
            "the send log is empty" + ("" if where.empty else " for these filters"),
            highlight=False,
        )
        return
    # Narrow on purpose (an 80-column terminal, a pipe): the time and status
    # never wrap, the address and sequence/step share a cell on two lines and
    # only the reason (or the provider's message id) folds. The latest event
    # from the provider is under the status.
    longest = max(len(line.email) for line in lines)
    table = Table(
        Column("decided (UTC)", no_wrap=True),
        Column("status", no_wrap=True),
        Column("subscriber / step", overflow="fold", min_width=min(longest, 30)),
        Column("why / message id", overflow="fold", ratio=1),
        title="send log (newest first)",
        box=box.SIMPLE_HEAD,
    )
    for line in lines:
        detail: Any = line.reason or line.provider_message_id or ""
        tries = f" ({line.attempts} tries)" if line.attempts > 1 else ""
        state = Text(line.status + tries)
        if line.latest_event is not None:
            state.append("\n")
            state.append_text(safe(line.latest_event.label, style="dim"))
        who = Text.assemble(
            safe(line.email), "\n", safe(f"{line.sequence_id}/{line.step_id}", style="dim")
        )
        # Emails, ids and provider messages come from outside: safe(), not markup.
        table.add_row(f"{line.decided_at:%Y-%m-%d %H:%M}", state, who, safe(detail))
    out.print(table)
