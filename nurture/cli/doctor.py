"""``nurture doctor``: the deployment's checks (:mod:`nurture.ops.doctor`), printed.

Exit code 0 when nothing failed (warnings and skipped checks included), 1
when any check failed, 2 when the settings cannot be read at all (like every
command's configuration error; nothing else could be checked).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.text import Text

from nurture.cli.console import (
    EXIT_CONFIGURATION,
    EXIT_FAILED,
    err,
    examples,
    out,
    print_hanging,
    print_json,
    safe,
)

DOCTOR_EXAMPLES = examples(
    "nurture doctor",
    "nurture doctor --json",
    "nurture doctor --skip-dns --timeout 2",
)

_STYLE = {"ok": "green", "warn": "yellow", "fail": "red", "skip": "dim"}

if TYPE_CHECKING:
    from nurture.ops.doctor import Check


def print_checks(console: Console, checks: list[Check]) -> None:
    """A line per check, and a ``fix:`` line under a problem. In a terminal
    a long line wraps under its own text (not back at the first column, where
    it would read as a check of its own); in a pipe or a log each stays one
    line, whole, for grep."""
    for check in checks:
        _print_check_line(
            console,
            Text(f"{check.status:<4}  ", style=_STYLE[check.status]),
            safe(f"{check.name}: {check.detail}"),
        )
        if check.fix and check.status != "ok":
            _print_check_line(console, Text("      fix: "), safe(check.fix))


def _print_check_line(console: Console, head: Text, body: Text) -> None:
    if console.is_terminal:
        print_hanging(console, head, body)
    else:
        console.print(head + body, soft_wrap=True)


def doctor_command(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of lines.")] = False,
    skip_dns: Annotated[
        bool, typer.Option("--skip-dns", help="Do not look up SPF, DKIM and DMARC.")
    ] = False,
    timeout: Annotated[
        float,
        typer.Option(
            metavar="SECONDS", min=0.1, help="Per network check (provider, base_url, DNS)."
        ),
    ] = 5.0,
) -> None:
    """Check configuration, database, transport, sequences, base_url and DNS.

    Each problem says what to fix. Exit 1 when any check fails, 2 when the
    settings cannot be read."""
    from nurture.ops.doctor import run_checks, unreadable_configuration, worst

    checks = run_checks(ctx.obj.folder, timeout=timeout, dns=not skip_dns)
    status = worst(checks)
    if as_json:
        print_json({"status": status, "checks": [check.as_json() for check in checks]})
    else:
        print_checks(out, checks)
        failed = sum(check.status == "fail" for check in checks)
        warned = sum(check.status == "warn" for check in checks)
        out.print(
            Text(f"{failed} failed, {warned} warning(s)", style=_STYLE[status]), highlight=False
        )
    unreadable = unreadable_configuration(checks)
    if unreadable is not None:
        err.print(Text.assemble(("error: ", "red"), safe(unreadable.detail)), soft_wrap=True)
        raise typer.Exit(EXIT_CONFIGURATION)
    if status == "fail":
        raise typer.Exit(EXIT_FAILED)
