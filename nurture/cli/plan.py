"""``nurture plan``, and how it prints a plan (see :mod:`nurture.authoring.plan`): as
lines grouped by effect, as JSON (the shape the README documents), or one
subscriber's detail.

Sequence ids, step ids and emails come from files and subscribers, so they are
printed through :func:`~nurture.cli.console.safe`: never as markup, control
characters escaped.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from nurture.cli.bounds import MAX_ROWS
from nurture.cli.console import clean, errors, fail, out, print_hanging, print_json, safe

if TYPE_CHECKING:  # imported by the command itself: `nurture --help` needs none of it
    from nurture.authoring.plan import EnrollmentDetail, Group, SequencePlan

PLAN_FORMAT = 1
"""Version of the ``--json`` shape; raised only when a field changes meaning or goes."""

STEP_IS = {
    "new": " (a new step)",
    "changed": " (changed since their version)",
    "not recorded": " (their version was not recorded: new or not, unknown)",
}


def _when(at: datetime | None) -> str:
    return "-" if at is None else f"{at:%a %Y-%m-%d %H:%M %Z}"


def _steps(ids: tuple[str, ...]) -> str:
    return ", ".join(repr(step) for step in ids)


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def _iso_utc(at: datetime | None) -> str | None:
    return None if at is None else at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def describe(group: Group) -> str:
    """One sentence for a group: how many, what happens, when, what they miss."""
    effect, count = group.effect, f"{group.count:,}"
    times = ""
    if group.first is not None:
        times = f", first on {_when(group.first)}"
        if group.last is not None and group.last != group.first:
            times += f", last on {_when(group.last)}"
    skipped = f"; skipping {_steps(effect.skipped)} on the way" if effect.skipped else ""
    never = (
        f"; they will not receive {_steps(effect.not_received)} (before their position)"
        if effect.not_received
        else ""
    )
    if effect.kind == "send":
        what = f"will get {effect.step!r} next{STEP_IS.get(effect.step_is, '')}"
        return f"{count} {what}{times}{skipped}{never}"
    if effect.kind == "held":
        return f"{count} will be held at {effect.step!r}{times}: {effect.reason}"
    if effect.kind == "exit":
        return f"{count} will leave at their next turn ({effect.reason}){times}"
    if effect.kind == "complete":
        return f"{count} will complete without another email{times}{skipped}{never}"
    if effect.kind == "completed":
        return (
            f"{count} completed before the edit: they will not receive "
            f"{_steps(effect.not_received)} (a completed enrollment gets nothing more)"
        )
    return f"{count} wait: {effect.reason}, nothing is sent until there is one"


def print_plan(plans: list[SequencePlan], console: Console) -> None:
    if not plans:
        console.print("No sequences on disk and no enrollments.")
        return
    for plan in plans:
        _print_one(plan, console)


def _indented(console: Console, indent: int, text: str) -> None:
    """A line of outside text, indented; what wraps keeps the indent (a long
    line wrapped back to the first column, and read as a line of its own)."""
    print_hanging(console, Text(" " * indent), safe(text))


def _print_one(plan: SequencePlan, console: Console) -> None:
    where = (
        Text(f"file version {plan.current_version}")
        if plan.current_version is not None
        else Text("no valid file in sequences/", style="red")
    )
    console.print(
        Text.assemble(
            "\n",
            (clean(plan.sequence_id), "bold"),
            " (",
            where,
            f"): {plan.active:,} active, {plan.completed:,} completed",
        )
    )
    if plan.paused is not None:
        _indented(
            console,
            2,
            f"paused: {plan.paused}; nothing is sent until "
            f"`nurture resume {plan.sequence_id}` (the times below assume it is)",
        )
    if plan.positions:
        shown = " · ".join(
            f"{step or 'not started'} {count:,}" for step, count in plan.ordered_positions()
        )
        _indented(console, 2, f"at step (last decided): {shown}")
    for summary in plan.versions:
        current = " (current)" if summary.current else ""
        _indented(
            console,
            2,
            f"on version {summary.version}{current}: {summary.active:,} active, "
            f"{summary.completed:,} completed",
        )
        if summary.current or plan.current_version is None:
            continue
        if not summary.recorded:
            _indented(console, 4, "changes since: unknown (that version was not recorded)")
        elif not summary.changes:
            _indented(console, 4, "changes since: none in the steps (other fields changed)")
        else:
            _indented(console, 4, "changes since:")
        for change in summary.changes:
            detail = f" ({change.detail})" if change.detail else ""
            _indented(console, 6, f"{change.kind} step {change.step_id!r}{detail}")
    if plan.groups:
        _indented(console, 2, "what happens next:")
    for group in plan.groups:
        _indented(console, 4, describe(group))
        for example in group.examples:
            if group.effect.kind in ("completed", "waiting") or example.at is None:
                _indented(console, 6, example.email)
            else:
                place = f"at {example.position}" if example.position else "not started"
                _indented(console, 6, f"{example.email}  {place}  {_when(example.at)}")
        more = group.count - len(group.examples)
        if more > 0 and group.examples:
            _indented(console, 6, f"… and {more:,} more")
    if plan.active and all(s.current for s in plan.versions if s.active):
        _indented(console, 2, "every active enrollment is on the current version: no surprises")


def plan_json(plans: list[SequencePlan], now: datetime) -> dict[str, Any]:
    """The ``--json`` shape (documented in the README, versioned by ``format``)."""
    return {
        "format": PLAN_FORMAT,
        "now": _iso_utc(now),
        "sequences": [
            {
                "sequence": plan.sequence_id,
                "file_version": plan.current_version,
                "paused": plan.paused,
                "active": plan.active,
                "completed": plan.completed,
                "positions": [
                    {"step": step, "subscribers": count} for step, count in plan.ordered_positions()
                ],
                "versions": [
                    {
                        "version": s.version,
                        "current": s.current,
                        "recorded": s.recorded,
                        "active": s.active,
                        "completed": s.completed,
                        "changes": [
                            {"kind": c.kind, "step": c.step_id, "detail": c.detail}
                            for c in s.changes
                        ],
                    }
                    for s in plan.versions
                ],
                "groups": [_group_json(group) for group in plan.groups],
            }
            for plan in plans
        ],
    }


def _group_json(group: Group) -> dict[str, Any]:
    effect = group.effect
    return {
        "effect": effect.kind,
        "subscribers": group.count,
        "step": effect.step,
        "step_is": effect.step_is or None,
        "skipped": list(effect.skipped),
        "will_not_receive": list(effect.not_received),
        "reason": effect.reason or None,
        "first_at": _iso(group.first),
        "first_at_utc": _iso_utc(group.first),
        "last_at": _iso(group.last),
        "last_at_utc": _iso_utc(group.last),
        "examples": [
            {
                "email": example.email,
                "position": example.position,
                "at": _iso(example.at),
                "at_utc": _iso_utc(example.at),
            }
            for example in group.examples
        ],
    }


def print_detail(email: str, details: list[EnrollmentDetail], console: Console) -> None:
    for detail in details:
        version = (
            f"on version {detail.version} (current)"
            if detail.version == detail.current_version
            else f"on version {detail.version}; the file is {detail.current_version or 'gone'}"
        )
        console.print(
            Text.assemble(
                "\n",
                (clean(email), "bold"),
                " in ",
                (clean(detail.sequence_id), "bold"),
                safe(f": {detail.status}, {version}"),
            )
        )
        console.print(
            safe(
                f"  enrolled {_when(detail.enrolled_at.astimezone(detail.zone))} "
                f"({detail.zone.key}); at step {detail.position or '- (not started)'}"
            )
        )
        if detail.note:
            console.print(safe(f"  {detail.note}"))
        if detail.history:
            table = Table.grid(padding=(0, 2))
            for _ in range(3):
                table.add_column()
            for done in detail.history:
                at = done.settled_at or done.next_attempt_at or done.due_at
                table.add_row(safe(done.step), safe(done.status), _when(at.astimezone(detail.zone)))
            console.print("  so far:")
            console.print(Padding(table, (0, 0, 0, 4), expand=False))
        if detail.not_received:
            console.print(
                safe(f"  will not receive: {_steps(detail.not_received)} (before their position)")
            )
        if detail.timeline:
            table = Table.grid(padding=(0, 2))
            for _ in range(5):
                table.add_column()
            for entry, step_is in detail.timeline:
                table.add_row(
                    safe(entry.step or "-"),
                    entry.action,
                    _when(entry.at),
                    safe(STEP_IS.get(step_is, "").strip(" ()")),
                    safe(entry.reason),
                )
            console.print("  next (as things stand, without new opens, clicks or purchases):")
            console.print(Padding(table, (0, 0, 0, 4), expand=False))


def detail_json(email: str, details: list[EnrollmentDetail], now: datetime) -> dict[str, Any]:
    return {
        "format": PLAN_FORMAT,
        "now": _iso_utc(now),
        "email": email,
        "enrollments": [
            {
                "sequence": d.sequence_id,
                "status": d.status,
                "version": d.version,
                "file_version": d.current_version,
                "timezone": d.zone.key,
                "enrolled_at": _iso(d.enrolled_at.astimezone(d.zone)),
                "position": d.position,
                "history": [
                    {
                        "step": h.step,
                        "status": h.status,
                        "due_at": _iso_utc(h.due_at),
                        "settled_at": _iso_utc(h.settled_at),
                        "next_attempt_at": _iso_utc(h.next_attempt_at),
                    }
                    for h in d.history
                ],
                "will_not_receive": list(d.not_received),
                "note": d.note or None,
                "timeline": [
                    {**entry.as_json(), "step_is": step_is or None} for entry, step_is in d.timeline
                ],
            }
            for d in details
        ],
    }


def plan_command(
    ctx: typer.Context,
    sequence: Annotated[
        str | None, typer.Option("--sequence", metavar="ID", help="Only this sequence.")
    ] = None,
    limit: Annotated[
        int,
        typer.Option(
            min=0,
            max=MAX_ROWS,
            metavar="N",
            help="Example subscribers per group (earliest first).",
        ),
    ] = 3,
    subscriber: Annotated[
        str | None,
        typer.Option(
            metavar="EMAIL", help="One subscriber's detail: history, and every step still to come."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (see the README).")] = False,
) -> None:
    """What the dispatcher will do next, and what your edits change mid-way.

    The due emails grouped by effect, and what edits to the sequence files
    change for subscribers already part-way through them."""

    from nurture.app.runtime import open_engine
    from nurture.audience.input import InvalidSubscriberError, normalise_email
    from nurture.authoring.plan import plan_changes, subscriber_detail
    from nurture.cli.context import runnable_sequences

    now = ctx.obj.now()
    email = None
    if subscriber is not None:
        try:
            email = normalise_email(subscriber)
        except InvalidSubscriberError as exc:
            raise fail(f"--subscriber: {exc}") from exc
    with errors():
        settings = ctx.obj.store_settings()
        sequences = runnable_sequences(settings)
        engine = open_engine(settings)
        try:
            if email is not None:
                details = subscriber_detail(engine, sequences, email, now)
                if sequence is not None:
                    details = [d for d in details if d.sequence_id == sequence]
                    if not details:
                        raise fail(f"{email} is not enrolled in {sequence}")
            else:
                plans = plan_changes(engine, sequences, now, sequence_id=sequence, limit=limit)
        finally:
            engine.dispose()
    if email is not None:
        if as_json:
            print_json(detail_json(email, details, now))
        else:
            print_detail(email, details, out)
    elif as_json:
        print_json(plan_json(plans, now))
    else:
        print_plan(plans, out)
