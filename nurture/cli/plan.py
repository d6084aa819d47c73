"""How ``nurture plan`` prints a plan (see :mod:`nurture.authoring.plan`).

Sequence ids, step ids and emails come from files and subscribers, so they are
printed through :func:`~nurture.cli.console.safe`: never as markup, control
characters escaped.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from nurture.authoring.plan import SequencePlan
from nurture.cli.console import clean, safe


def print_plan(plans: list[SequencePlan], console: Console) -> None:
    if not plans:
        console.print("No sequences on disk and no active enrollments.")
        return
    for plan in plans:
        _print_one(plan, console)


def _print_one(plan: SequencePlan, console: Console) -> None:
    where = (
        Text(f"file version {plan.current_version}")
        if plan.on_disk
        else Text("no file on disk", style="red")
    )
    console.print(
        Text.assemble(
            "\n",
            (clean(plan.sequence_id), "bold"),
            " (",
            where,
            f"): {plan.active} active enrollment(s)",
        )
    )
    if not plan.on_disk:
        console.print("  These enrollments wait: nothing is sent until the file is back.")
    if plan.active:
        table = Table(show_header=True, box=None, padding=(0, 2))
        table.add_column("at step (last decided)")
        table.add_column("subscribers", justify="right")
        for position, count in sorted(plan.by_position.items()):
            table.add_row(safe(position), str(count))
        console.print(table)
    for version, count in sorted(plan.by_version.items()):
        current = " (current)" if version == plan.current_version else ""
        console.print(Text(f"  on version {version}{current}: {count}"))
    for version, changes in plan.changes.items():
        console.print(Text(f"  changes since {version}:"))
        if not changes:
            console.print("    none in the steps (other fields changed)")
        for change in changes:
            detail = f" ({change.detail})" if change.detail else ""
            console.print(safe(f"    {change.kind} step {change.step_id!r}{detail}"))
    if plan.impacts:
        table = Table(title="subscribers on an older version", title_justify="left")
        for column in ("subscriber", "at step", "next step", "next is", "then", "will not receive"):
            table.add_column(column, overflow="fold")
        for impact in plan.impacts:
            table.add_row(
                *(
                    safe(cell)
                    for cell in (
                        impact.email,
                        impact.position or "-",
                        impact.next_step or "-",
                        impact.next_kind,
                        impact.action,
                        ", ".join(impact.not_received) or "-",
                    )
                )
            )
        console.print(table)
    elif plan.on_disk and plan.active:
        console.print("  every active enrollment is on the current version: no surprises")
