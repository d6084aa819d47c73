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

from decimal import Decimal
from typing import TYPE_CHECKING, Annotated

import typer
from rich import box
from rich.cells import cell_len
from rich.table import Table
from rich.text import Text

from nurture.cli.console import err, errors, examples, fail, out, print_json, safe
from nurture.cli.context import app_context

if TYPE_CHECKING:
    from nurture.admin.funnels import SequenceFunnel

STATS_EXAMPLES = examples(
    "nurture stats", "nurture stats sales-process", "nurture stats --json | jq '.[0].revenue'"
)


def _percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f}%"


def funnel_table(funnel: SequenceFunnel, width: int = 80) -> Table:
    """One sequence's funnel for a terminal ``width`` columns wide: each count
    with its rate on the line below, step ids whole, the ``unknown`` column
    only when some send's outcome is unknown. When the steps' revenue does
    not fit as a column, the caption names it per step instead."""
    from nurture.admin.funnels import money

    def revenue_of(amounts: dict[str, Decimal]) -> str:
        return ", ".join(f"{money(amount)} {cur}" for cur, amount in amounts.items())

    with_unknown = any(step.unknown for step in funnel.steps)
    headers = ["step", "sent", *(["unknown"] if with_unknown else [])]
    headers += ["delivered", "opened", "clicked", "converted"]
    rows: list[list[Text | str]] = [
        [
            safe(step.step_id + ("" if step.in_file else " (gone)")),
            str(step.sent),
            *([str(step.unknown)] if with_unknown else []),
            f"{step.delivered}\n{_percent(step.delivered_rate)}",
            f"{step.opened}\n{_percent(step.open_rate)}",
            f"{step.clicked}\n{_percent(step.click_rate)}",
            f"{step.conversions}\n{_percent(step.conversion_rate)}",
        ]
        for step in funnel.steps
    ]
    # Each column as wide as its widest line, plus a border and padding each;
    # the revenue column gets what is left, and needs room for one amount.
    widths = [
        max([len(header)] + [cell_len(line) for row in rows for line in str(row[i]).splitlines()])
        for i, header in enumerate(headers)
    ]
    revenues = [revenue_of(step.revenue) for step in funnel.steps]
    longest_amount = max((cell_len(part) for r in revenues for part in r.split(", ")), default=1)
    left = width - sum(widths) - 3 * len(widths) - 4
    revenue_column = left >= max(len("revenue"), longest_amount)

    title = funnel.sequence_id + (f" ({funnel.name})" if funnel.name else " (no file now)")
    table = Table(
        title=safe(title), title_justify="left", box=box.SIMPLE_HEAD, caption_justify="left"
    )
    # A step id folds (whole, over two lines) only when the figures leave too little room.
    table.add_column(headers[0], overflow="fold")
    for header in headers[1:]:
        table.add_column(header, justify="right", no_wrap=True)
    if revenue_column:
        table.add_column("revenue", justify="right")
    for row, revenue in zip(rows, revenues, strict=True):
        table.add_row(*row, *([safe(revenue or "-")] if revenue_column else []))
    caption = f"revenue: {revenue_of(funnel.revenue) or 'none'}"
    by_step = [f"{step.step_id} {r}" for step, r in zip(funnel.steps, revenues, strict=True) if r]
    if not revenue_column and by_step:
        caption += f" ({'; '.join(by_step)})"
    table.caption = safe(caption)
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
        out.print(funnel_table(funnel, out.width))
