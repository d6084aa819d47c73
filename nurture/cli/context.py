"""What the commands that use the store get from the Typer context object.

The commands of ``subscribers``, ``enroll``, ``unenroll``, ``tokens``,
``admin`` and ``stats`` get everything from ``ctx.obj``, which must satisfy
:class:`AppContext` (the main CLI's context does): settings, the clock, a
migrated store and the valid sequences. That keeps those modules free of
configuration reading, and lets tests pass a context with a fixed clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import typer

from nurture.app.settings import Settings
from nurture.core.loader import LoadedSequence, Sequences

# SQLAlchemy and SQLModel are imported only for type checking: see
# nurture.cli.main on why imports are deferred.
if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import sessionmaker
    from sqlmodel import Session


@runtime_checkable
class AppContext(Protocol):
    """What these commands need from ``ctx.obj``."""

    def settings(self) -> Settings:
        """The settings; raises ConfigurationError when they are invalid."""
        ...

    def now(self) -> datetime:
        """The current time, aware UTC."""
        ...

    def open_store(self) -> tuple[Engine, sessionmaker[Session]]:
        """An engine on ``settings().database_url`` migrated to head, and its sessions.

        Each command disposes the engine when it is done (closing its pooled
        connections), so return a new engine, or one that may be disposed.
        """
        ...

    def sequences(self) -> dict[str, LoadedSequence]:
        """The valid sequences by id (invalid files left out)."""
        ...


def app_context(ctx: typer.Context) -> AppContext:
    obj = ctx.find_object(AppContext)  # type: ignore[type-abstract]
    if obj is None:
        raise RuntimeError("the CLI context object must implement nurture.cli.context.AppContext")
    return obj


@contextmanager
def store_session(app: AppContext) -> Iterator[Session]:
    engine, sessions = app.open_store()
    try:
        with sessions() as session:
            yield session
    finally:
        engine.dispose()


def runnable_sequences(settings: Settings) -> Sequences:
    """The valid sequences, as the dispatcher runs them; a warning on stderr
    when some files have problems (``plan`` and ``explain`` show what the
    worker would do, so they go on without the invalid ones)."""
    from rich.text import Text

    from nurture.authoring.workbench import validate_paths
    from nurture.cli.console import err

    checked = validate_paths(settings, [settings.sequences_dir])
    if checked.diagnostics:
        err.print(
            Text.assemble(
                ("warning: ", "yellow"),
                f"{len(checked.diagnostics)} problem(s) in sequence files; the dispatcher "
                "does not run the invalid ones (see `nurture validate`)",
            )
        )
    return checked.sequences
