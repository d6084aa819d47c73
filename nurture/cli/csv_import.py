"""``nurture subscribers import FILE.csv``: the import
(:func:`nurture.audience.csv_import.import_csv`), its progress bar and its report.

The command is registered on ``nurture subscribers`` by
:mod:`nurture.cli.subscribers`, and gets everything from ``ctx.obj``
(:class:`~nurture.cli.context.AppContext`).

What it prints: a summary on stdout (imported, updated, unchanged, errors,
duplicates, and the enrollments by sequence); on stderr, a progress bar while
it runs (at a terminal only), then each problem as ``FILE:LINE: message``, in
line order. Exit codes (:mod:`nurture.cli.console`): 0 done; 1 some rows were
bad (the good rows are still imported) or the file could not be read; 2 a
configuration error.

Addresses and messages come from the file: they are printed through
:func:`~nurture.cli.console.safe` (plain text, control characters escaped),
never as console markup.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from nurture.cli.console import EXIT_FAILED, err, errors, examples, safe, say
from nurture.cli.context import app_context, store_session
from nurture.cli.enroll import trigger_needs
from nurture.core.loader import LoadedSequence

# nurture.audience (SQLAlchemy, SQLModel) is imported inside the command: see
# nurture.cli.main on why imports are deferred.
if TYPE_CHECKING:
    from nurture.audience.csv_import import ImportReport

IMPORT_EXAMPLES = examples(
    "nurture subscribers import leads.csv",
    'nurture subscribers import mailchimp-export.csv --consent "Newsletter sign-up form"',
)


def import_command(
    ctx: typer.Context,
    file: Annotated[
        Path, typer.Argument(metavar="FILE.csv", help="A UTF-8 CSV file with an email column.")
    ],
    consent: Annotated[
        str | None,
        typer.Option(metavar="WORDING", help="The wording these subscribers agreed to."),
    ] = None,
) -> None:
    """Import subscribers from CSV: email, name, first_name, tz, locale, tags, attr.<key>.

    Common header names are understood (E-post, Email Address, First Name,
    Mailchimp's and Kit's exports); any other column is kept as an attribute.
    Tags in one cell are separated by ',', ';' or '|'. Re-importing a file
    changes nothing. Bad rows are listed as FILE:LINE: message and skipped; the
    others are imported (exit code 1 if any row was bad). An address on several
    lines is reported and merged.
    """
    from nurture.app.runtime import freeze_startup_objects
    from nurture.audience.csv_import import import_csv

    app = app_context(ctx)
    with (
        errors(),
        store_session(app) as session,
        Progress(
            TextColumn("importing"),
            BarColumn(),
            MofNCompleteColumn(),
            console=err,
            transient=True,
            disable=not err.is_terminal,  # no bar in logs and pipes
        ) as bar,
    ):
        task = bar.add_task("import", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        sequences = app.sequences()
        freeze_startup_objects()  # a large file allocates a lot: see the function
        report = import_csv(
            session,
            file,
            sequences=sequences,
            now=app.now(),
            consent_source="import",
            consent_text=consent,
            progress=progress,
        )
    _import_summary(report, sequences)
    for note in report.notes:
        err.print(safe(f"{file}:1: {note}", style="yellow"), soft_wrap=True)
    problems = [(line, message, "red") for line, message in report.errors] + [
        (line, f"duplicate of line {first} (the same address): merged into it", "yellow")
        for line, first in report.duplicates
    ]
    for line, message, style in sorted(problems):
        err.print(safe(f"{file}:{line}: {message}", style=style), soft_wrap=True)
    if report.errors:
        raise typer.Exit(EXIT_FAILED)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _import_summary(report: ImportReport, sequences: Mapping[str, LoadedSequence]) -> None:
    duplicates = f", {_plural(len(report.duplicates), 'duplicate')}" if report.duplicates else ""
    say(
        f"{report.imported} imported, {report.updated} updated, {report.unchanged} unchanged, "
        f"{len(report.errors)} with errors{duplicates}; {report.enrolled} new enrollments"
    )
    for sequence_id, count in sorted(report.enrollments.items()):
        say(f"  enrolled in {sequence_id}: {_plural(count, 'subscriber')}")
    if report.no_trigger:
        say(
            f"  not enrolled, no trigger matched: {_plural(report.no_trigger, 'subscriber')} "
            f"({trigger_needs(sequences)})"
        )
