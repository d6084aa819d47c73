"""``nurture db backup PATH``: a copy of the database (see :mod:`nurture.ops.backup`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nurture.cli.console import EXIT_CONFIGURATION, err, errors, examples, out, safe

BACKUP_EXAMPLES = examples(
    "nurture db backup backups/nurture-$(date +%F).db",
    "nurture db backup /var/backups/nurture.db --force   # replace last night's copy",
)


def backup_command(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(metavar="PATH", help="The backup file to write.")],
    force: Annotated[bool, typer.Option("--force", help="Overwrite PATH if it exists.")] = False,
) -> None:
    """Copy the SQLite database to PATH, safely while the worker runs.

    It uses SQLite's online backup API. For PostgreSQL it prints the pg_dump
    command to run."""
    from nurture.ops.backup import UsePgDump, backup_database

    target = path if path.is_absolute() else Path.cwd() / path
    with errors():
        settings = ctx.obj.store_settings(creates=False)  # a missing file is an error here
        try:
            done = backup_database(settings.database_url, target, force=force)
        except UsePgDump as use:
            err.print(
                "the database is PostgreSQL: back it up with pg_dump (it reads the "
                "password from PGPASSWORD or ~/.pgpass), e.g.",
                highlight=False,
            )
            out.print(safe(use.command), highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_CONFIGURATION) from None
    made = "" if done.created is None else f"; made the folder {done.created}"
    out.print(
        safe(f"backed up {done.source} to {done.target} ({done.size:,} bytes{made})"),
        soft_wrap=True,
    )
