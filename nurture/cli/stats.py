"""``nurture stats [SEQUENCE] [--json] [--rebuild]``: each sequence's funnel
per step with revenue (:mod:`nurture.admin.funnels`, the figures of
``/admin/sequences/{id}``).

A Rich table per sequence for people, JSON for scripts. ``--rebuild``
recomputes the funnel summary from the ledger, events and purchases first
(after restoring a backup taken without it, or to check it).

Exit codes (:mod:`nurture.cli.console`): 0 done; 1 no such sequence; 2 a
configuration error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from nurture.cli.console import err, errors, examples, fail, out, print_json, safe
from nurture.cli.context import app_context

if TYPE_CHECKING:
    from nurture.admin.funnels import SequenceFunnel

STATS_EXAMPLES = examples(
    "nurture stats", "nurture stats sales-process", "nurture stats --json | jq '.[0].revenue'"
)


def _percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f}%"


def _table(funnel: SequenceFunnel) -> Table:
    from nurture.admin.funnels import money

    title = funnel.sequence_id + (f" ({funnel.name})" if funnel.name else " (no file now)")
    table = Table(
        "step", "sent", "unknown", "delivered", "opened", "clicked", "conversions", "revenue",
        title=safe(title),
        title_justify="left",
    )  # fmt: skip
    for step in funnel.steps:
        revenue = ", ".join(f"{money(amount)} {cur}" for cur, amount in step.revenue.items())
        table.add_row(
            safe(step.step_id + ("" if step.in_file else " (gone)")),
            str(step.sent),
            str(step.unknown),
            f"{step.delivered} ({_percent(step.delivered_rate)})",
            f"{step.opened} ({_percent(step.open_rate)})",
            f"{step.clicked} ({_percent(step.click_rate)})",
            f"{step.conversions} ({_percent(step.conversion_rate)})",
            safe(revenue or "-"),
        )
    total = ", ".join(f"{money(amount)} {cur}" for cur, amount in funnel.revenue.items())
    table.caption = safe(f"revenue: {total or 'none'}")
    table.caption_justify = "left"
    return table


def stats_command(
    ctx: typer.Context,
    sequence: Annotated[
        str | None, typer.Argument(metavar="[SEQUENCE]", help="One sequence's id; all by default.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    rebuild: Annotated[
        bool, typer.Option("--rebuild", help="Recompute the summary from the raw tables first.")
    ] = False,
) -> None:
    """The funnel per step: sent, delivered, opened, clicked, converted, with rates.

    Opens and clicks count people, not link scanners; conversions and revenue
    are per currency."""
    from nurture.admin.funnels import all_funnels, rebuild_funnels, sequence_funnel
    from nurture.core.loader import load_sequences

    app = app_context(ctx)
    with errors():
        settings = app.settings()
        sequences, _problems = load_sequences([settings.sequences_dir])
        engine, _sessions = app.open_store()
        try:
            if rebuild:
                rebuild_funnels(engine)
                err.print("Rebuilt the funnel summary from the ledger, events and purchases.")
            if sequence is None:
                shown = all_funnels(engine, sequences)
            else:
                one = sequence_funnel(engine, sequences, sequence)
                if one is None:
                    known = ", ".join(sorted(sequences)) or "none"
                    raise fail(f"no sequence {sequence!r} (sequences: {known})")
                shown = [one]
        finally:
            engine.dispose()
    if as_json:
        print_json([funnel.as_json() for funnel in shown])
        return
    if not shown:
        out.print("No sequences yet.")
    for funnel in shown:
        out.print(_table(funnel))
