"""``nurture sends list`` and ``nurture sends resolve``: find the sends whose
outcome is unknown and settle them (:mod:`nurture.sending.resolve`).

Exit codes (:mod:`nurture.cli.console`): 0 done; 1 nothing was changed (a send
that is not ``unknown``, a resend that cannot be done); 2 a configuration error
or a usage error. Addresses, ids and reasons come from outside: printed through
:func:`~nurture.cli.console.safe`, never as markup.
"""

from __future__ import annotations

import getpass
from typing import Annotated

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from nurture.cli.bounds import MAX_ROWS
from nurture.cli.console import EXIT_CONFIGURATION, errors, examples, fail, out, safe
from nurture.core.vocabulary import SendStatus

sends_app = typer.Typer(
    name="sends",
    help="The ledger's sends: list them, settle those whose outcome is unknown.",
    no_args_is_help=True,
)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (a container without passwd entry)
        return "unknown user"


@sends_app.command(
    "list",
    epilog=examples("nurture sends list --status unknown", "nurture sends list --limit 200"),
)
def list_command(
    ctx: typer.Context,
    status: Annotated[
        str | None,
        typer.Option(
            metavar="STATUS",
            help=f"Only this status ({', '.join(s.value for s in SendStatus)}).",
        ),
    ] = None,
    limit: Annotated[
        int,
        typer.Option(min=1, max=MAX_ROWS, metavar="N", help="At most this many (newest first)."),
    ] = 50,
) -> None:
    """Sends, newest first, with the id `sends resolve` takes."""
    from nurture.app.runtime import open_engine
    from nurture.store.resolve import list_sends

    if status is not None and status not in {s.value for s in SendStatus}:
        raise fail(
            f"--status {status!r}: one of {', '.join(s.value for s in SendStatus)}",
            EXIT_CONFIGURATION,
        )
    with errors():
        engine = open_engine(ctx.obj.store_settings())
        try:
            with engine.connect() as conn:
                rows = list_sends(conn, status=status, limit=limit)
        finally:
            engine.dispose()
    if not rows:
        out.print(f"no {status or ''} sends".replace("  ", " "), highlight=False)
        return
    # As the send log lays it out: the address over its sequence/step, so
    # an 80-column terminal folds neither a step id nor a time.
    table = Table(title="sends (newest first)", box=box.SIMPLE_HEAD)
    table.add_column("id", justify="right", no_wrap=True)
    table.add_column("decided (UTC)", no_wrap=True)
    table.add_column("subscriber / step", overflow="fold")
    table.add_column("status", no_wrap=True)
    for row in rows:
        table.add_row(
            str(row.id),
            f"{row.decided_at:%Y-%m-%d %H:%M}",
            Text.assemble(
                safe(row.email), "\n", safe(f"{row.sequence_id}/{row.step_id}", style="dim")
            ),
            row.status,
        )
    out.print(table)


@sends_app.command(
    "resolve",
    epilog=examples(
        'nurture sends resolve 412 --as-sent --why "delivered per SendGrid activity"',
        'nurture sends resolve 413 --resend --why "not in SendGrid activity" --by ops',
        'nurture sends resolve --all-unknown --give-up --why "campaign over"',
    ),
)
def resolve_command(
    ctx: typer.Context,
    ids: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="ID", help="Send ids from `sends list` (or the provider's send id)."
        ),
    ] = None,
    all_unknown: Annotated[
        bool, typer.Option("--all-unknown", help="Every send whose outcome is unknown.")
    ] = False,
    as_sent: Annotated[
        bool, typer.Option("--as-sent", help="The provider has it: mark it sent.")
    ] = False,
    resend: Annotated[
        bool, typer.Option("--resend", help="It never arrived: send it once more.")
    ] = False,
    give_up: Annotated[bool, typer.Option("--give-up", help="Leave it: mark it failed.")] = False,
    why: Annotated[
        str, typer.Option("--why", metavar="WHY", help="Why (kept with the send).")
    ] = "",
    by: Annotated[
        str | None,
        typer.Option("--by", metavar="NAME", help="Who resolves it (default: your login name)."),
    ] = None,
) -> None:
    """Settle sends whose outcome is unknown: --as-sent, --resend or --give-up."""
    from nurture.app.runtime import open_engine
    from nurture.sending.resolve import Resolution, resolve_sends

    chosen = [
        resolution
        for resolution, flag in (
            (Resolution.AS_SENT, as_sent),
            (Resolution.RESEND, resend),
            (Resolution.GIVE_UP, give_up),
        )
        if flag
    ]
    if len(chosen) != 1:
        raise fail("give exactly one of --as-sent, --resend, --give-up", EXIT_CONFIGURATION)
    if not why.strip():
        raise fail("say why (--why TEXT): it is kept with the send", EXIT_CONFIGURATION)
    if all_unknown == bool(ids):
        raise fail("name the send ids, or give --all-unknown (not both)", EXIT_CONFIGURATION)
    with errors():
        engine = open_engine(ctx.obj.store_settings())
        try:
            settled = resolve_sends(
                engine,
                ids or [],
                all_unknown=all_unknown,
                resolution=chosen[0],
                why=why,
                by=by or _os_user(),
                now=ctx.obj.now(),
            )
        finally:
            engine.dispose()
    if not settled:
        out.print("no unknown sends", highlight=False)
        return
    outcome = {
        Resolution.AS_SENT: "marked sent",
        Resolution.RESEND: "will be sent again at the next pass",
        Resolution.GIVE_UP: "marked failed",
    }[chosen[0]]
    for send in settled:
        out.print(safe(f"send {send.id} ({send.sequence_id}/{send.step_id}): {outcome}"))
