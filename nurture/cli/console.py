"""What every command prints through: one stdout and one stderr console, one
way to fail, and one mapping from our errors to exit codes.

Exit codes: 0 done, 1 the command could not do what was asked (bad input, a
refused address, a broken sequence), 2 the configuration is wrong (a bad
``nurture.toml`` or ``NURTURE_*`` variable), 3 dispatching was halted by the
provider. A command never ends in a traceback for any of these.

Text that comes from outside (names, addresses, provider errors) is printed as
:class:`rich.text.Text`, never as markup, so ``[/bold]`` in a name is shown as
it is and cannot break the console.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.text import Text
from sqlalchemy.exc import SQLAlchemyError

from nurture.errors import ConfigurationError, NurtureError

out = Console()
err = Console(stderr=True)

EXIT_FAILED = 1
EXIT_CONFIGURATION = 2
EXIT_HALTED = 3


def fail(message: str, code: int = EXIT_FAILED) -> typer.Exit:
    """Print ``error: message`` on stderr and return the exit to raise."""
    err.print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)
    return typer.Exit(code)


@contextmanager
def errors() -> Iterator[None]:
    """Our errors become a red message and an exit code, never a traceback."""
    try:
        yield
    except ConfigurationError as exc:
        raise fail(str(exc), EXIT_CONFIGURATION) from exc
    except NurtureError as exc:
        raise fail(str(exc)) from exc
    except SQLAlchemyError as exc:
        raise fail(f"database error: {exc}") from exc
