"""The ``nurture`` command line (Typer + Rich): the edge where settings are read.

Imports are deferred. Marketers run ``validate``, ``preview``, ``simulate`` and
``--help`` all day, and none of them needs the database, the web server, the
scheduler or a provider's client (SQLAlchemy, SQLModel, Alembic, FastAPI,
uvicorn, APScheduler, httpx, SendGrid), which take most of a second to import.
So the modules of ``nurture.cli`` import at the top only what building the
command tree and those commands need; a command that opens the store or sends
imports what it uses inside its function, and types that only annotations use
are imported under ``TYPE_CHECKING``. ``tests/e2e/test_cli_startup.py`` keeps
it so.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from nurture.app.clock import Clock, FixedClock, system_clock
from nurture.app.settings import Settings, check_project, load_settings, new_database_file
from nurture.authoring.workbench import (
    validate_paths,
)
from nurture.cli.admin import admin_app
from nurture.cli.authoring import register_authoring_commands
from nurture.cli.console import (
    EXIT_CONFIGURATION,
    err,
    examples,
    fail,
    out,
    plain_help_types,
    safe,
)
from nurture.cli.doctor import DOCTOR_EXAMPLES, doctor_command
from nurture.cli.engine import register_engine_commands
from nurture.cli.enroll import (
    ENROLL_EXAMPLES,
    UNENROLL_EXAMPLES,
    enroll_command,
    unenroll_command,
)
from nurture.cli.events import events_app
from nurture.cli.explain import EXPLAIN_EXAMPLES, explain_command
from nurture.cli.project import init_command
from nurture.cli.sends import sends_app
from nurture.cli.stats import STATS_EXAMPLES, stats_command
from nurture.cli.subscribers import subscribers_app
from nurture.cli.times import CALENDAR_END, CALENDAR_START, check_time, parse_time
from nurture.cli.tokens import tokens_app
from nurture.core.loader import LoadedSequence
from nurture.errors import NurtureError
from nurture.ops.logs import LOG_FORMATS, configure_logging

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import sessionmaker
    from sqlmodel import Session

plain_help_types()
app = typer.Typer(
    name="nurture",
    help="Email nurture sequences: write, check, preview, simulate and send.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@dataclass
class Context:
    """The CLI's context object: settings, clock and store, read at the edge."""

    folder: Path
    fixed_now: datetime | None = None

    def settings(self) -> Settings:
        return load_settings(self.folder)

    def store_settings(self, *, creates: bool = True) -> Settings:
        """The settings of a command that opens the database: refused where there
        is no project (see :func:`~nurture.app.settings.check_project`).
        ``creates``: the command makes a missing SQLite file (and says so)."""
        settings = self.settings()
        check_project(self.folder, settings)
        fresh = new_database_file(settings) if creates else None
        if fresh is not None:
            # Said, not refused: a new project's first command makes its database.
            # But an operator who forgot NURTURE_DATABASE_URL sees it at once.
            err.print(
                Text.assemble(
                    ("note: ", "yellow"),
                    safe(
                        f"no database at {fresh}: creating a new, empty one. If yours is "
                        "elsewhere (PostgreSQL), set NURTURE_DATABASE_URL or database_url "
                        "in nurture.toml"
                    ),
                ),
                soft_wrap=True,
            )
        return settings

    def clock(self) -> Clock:
        """The clock of a command that stores, sends or plans: a ``--now`` the
        engine cannot work with (see :mod:`nurture.cli.times`) is refused here,
        exit 2, before anything is written."""
        if self.fixed_now is None:
            return system_clock
        try:
            return FixedClock(check_time(self.fixed_now, self.fixed_now.isoformat()))
        except ValueError as exc:
            raise fail(f"--now: {exc}; only simulate goes further", EXIT_CONFIGURATION) from None

    def now(self) -> datetime:
        return self.clock()()

    def calendar_now(self) -> datetime:
        """``--now`` as given (or the system time): for ``simulate``, which
        takes any time of the calendar and handles steps due past its end."""
        return self.fixed_now if self.fixed_now is not None else system_clock()

    def open_store(self) -> tuple[Engine, sessionmaker[Session]]:
        from nurture.app.runtime import open_engine
        from nurture.store.db import session_factory

        engine = open_engine(self.store_settings())
        return engine, session_factory(engine)

    def sequences(self) -> dict[str, LoadedSequence]:
        settings = self.settings()
        return validate_paths(settings, [settings.sequences_dir]).sequences


def _now_option(value: str | None) -> datetime | None:
    if value is None or value == "":
        return None
    try:
        # The whole calendar (simulate takes it); commands that store, send or
        # plan take less: see Context.clock.
        return parse_time(value, earliest=CALENDAR_START, latest=CALENDAR_END)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--now'") from exc


def _show_version(value: bool) -> None:
    """``--version``: the package and the database schema it migrates to, so
    the machines of a rolling deploy can be compared."""
    if not value:
        return
    from importlib.metadata import version

    from nurture.store.migrate import head_revision

    out.print(f"nurture {version('nurture')} (database schema {head_revision()})", highlight=False)
    raise typer.Exit()


@app.callback()
def _main(
    ctx: typer.Context,
    folder: Annotated[
        Path,
        typer.Option(
            "--dir",
            "-C",
            metavar="FOLDER",
            help="Working folder (holds nurture.toml).",
            envvar="NURTURE_DIR",
        ),
    ] = Path("."),
    now: Annotated[
        str | None,
        typer.Option(
            "--now",
            metavar="ISO-TIME",
            help="Fix the current time for this process (ISO-8601 with offset), "
            "e.g. 2026-11-27T09:00:00+01:00.",
            envvar="NURTURE_NOW",
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more.")] = False,
    _version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_show_version,
            is_eager=True,
            help="Print the version (and its database schema) and exit.",
        ),
    ] = False,
    log_format: Annotated[
        str | None,
        typer.Option(
            "--log-format",
            metavar="text|json",
            help="Log records as text or as one JSON object each (default: the "
            "log_format setting, else text).",
            envvar="NURTURE_LOG_FORMAT",
        ),
    ] = None,
) -> None:
    resolved = folder.resolve()
    chosen = log_format if log_format is not None else _configured_log_format(resolved)
    if chosen not in LOG_FORMATS:
        raise typer.BadParameter(
            f"{chosen!r} is not one of {', '.join(LOG_FORMATS)}", param_hint="--log-format"
        )
    configure_logging(chosen, verbose=verbose)
    ctx.obj = Context(resolved, _now_option(now))


def _configured_log_format(folder: Path) -> str:
    """``log_format`` from ``nurture.toml``; "text" when the settings cannot be
    read (the command that needs them reports why)."""
    try:
        return load_settings(folder).log_format
    except NurtureError:
        return "text"


register_authoring_commands(app)  # first in --help: what marketers use most
app.command(
    "init",
    epilog=examples(
        "nurture init shop",
        "nurture init shop --from 'Acme <hi@acme.com>' --base-url https://acme.com",
    ),
)(init_command)
app.add_typer(subscribers_app, name="subscribers")
app.add_typer(sends_app, name="sends")
app.add_typer(events_app, name="events")
app.add_typer(tokens_app, name="tokens")
app.add_typer(admin_app, name="admin")
app.command("stats", epilog=STATS_EXAMPLES)(stats_command)
app.command("enroll", epilog=ENROLL_EXAMPLES)(enroll_command)
app.command("unenroll", epilog=UNENROLL_EXAMPLES)(unenroll_command)
app.command("explain", epilog=EXPLAIN_EXAMPLES)(explain_command)
app.command("doctor", epilog=DOCTOR_EXAMPLES)(doctor_command)
register_engine_commands(app)


def main() -> None:
    app()
