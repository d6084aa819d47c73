"""What every command prints through: one stdout and one stderr console, one
way to fail, and one mapping from our errors to exit codes.

Exit codes: 0 done, 1 the command could not do what was asked (bad input, a
refused address, a broken sequence), 2 the configuration is wrong (a bad
``nurture.toml`` or ``NURTURE_*`` variable), 3 dispatching was halted by the
provider. A command never ends in a traceback for any of these.

Text that comes from outside (names, addresses, subjects, provider errors) is
printed through :func:`safe`: as :class:`rich.text.Text`, never as markup, so
``[/bold]`` in a name is shown as it is and cannot break the console; and with
control characters made visible (``\\x1b``), so an escape sequence in a name
cannot recolour, retitle or clear the admin's terminal.
"""

from __future__ import annotations

import errno
import json
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from nurture.core.vocabulary import reason_names_status
from nurture.errors import ConfigurationError, NurtureError, clip_path

if TYPE_CHECKING:
    from sqlalchemy.exc import SQLAlchemyError

__all__ = [
    "EXIT_CONFIGURATION",
    "EXIT_FAILED",
    "EXIT_HALTED",
    "clean",
    "err",
    "errors",
    "examples",
    "fail",
    "file_errors",
    "out",
    "print_json",
    "safe",
    "say",
]

out = Console()
err = Console(stderr=True)

EXIT_FAILED = 1
EXIT_CONFIGURATION = 2
EXIT_HALTED = 3


# The bidirectional marks (U+061C, U+200E, U+200F), overrides and isolates that
# make a terminal show text in another order than it is written, and the
# Unicode line and paragraph separators (U+2028, U+2029).
_BIDI_AND_SEPARATORS = "\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
# C0 and C1 controls and DEL (ESC starts ANSI sequences, 0x9b is a one-byte
# CSI), and the above.
_CONTROLS = re.compile(f"[\x00-\x1f\x7f-\x9f{_BIDI_AND_SEPARATORS}]")
_CONTROLS_BUT_NEWLINE = re.compile(f"[\x00-\x09\x0b-\x1f\x7f-\x9f{_BIDI_AND_SEPARATORS}]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean(text: str, *, lines: bool = False) -> str:
    """``text`` with every control character written as a visible escape (``\\x1b``).

    ``lines=True`` keeps line breaks (``\\n``): for messages of several lines.
    """
    return (_CONTROLS_BUT_NEWLINE if lines else _CONTROLS).sub(_escape, text)


# What json.dumps(ensure_ascii=False) leaves raw and a terminal may act on:
# DEL, the C1 controls (0x9b starts an escape sequence on some terminals) and
# the marks and separators above. JSON's own escapes for C0 already apply.
_JSON_RAW_CONTROLS = re.compile(f"[\x7f-\x9f{_BIDI_AND_SEPARATORS}]")


def print_json(data: object) -> None:
    """``data`` as indented JSON on stdout: non-ASCII text readable as it is,
    every control character escaped (``\\u009b``), still valid JSON."""
    text = json.dumps(data, indent=2, ensure_ascii=False)
    print(_JSON_RAW_CONTROLS.sub(lambda m: f"\\u{ord(m.group()):04x}", text))


def safe(text: object, style: str = "", *, lines: bool = False) -> Text:
    """Outside text, ready to print: never markup, no control character (see :func:`clean`)."""
    return Text(clean(str(text), lines=lines), style=style)


def print_hanging(console: Console, head: Text, body: Text) -> None:
    """``head`` then ``body``, wrapped to the console's width under the body's
    own first column (a line wrapped back to the first column would read as a
    line of its own)."""
    indent = head.cell_len
    for number, line in enumerate(body.wrap(console, max(console.width - indent, 20))):
        line.rstrip()
        console.print((head if number == 0 else Text(" " * indent)) + line, soft_wrap=True)


def with_reason(status: str, reason: str | None) -> str:
    """A status and why, once: ``unsubscribed (one-click)`` rather than
    ``unsubscribed (unsubscribed (one-click))`` when the reason names the status."""
    if not reason:
        return status
    return reason if reason_names_status(status, reason) else f"{status} ({reason})"


def say(text: str) -> None:
    """Print a line on stdout that contains outside text (an address, an id) literally."""
    out.print(safe(text), soft_wrap=True)


def plain_help_types() -> None:
    """Keep Python's type names out of ``--help``.

    Typer 0.29 labels every parameter with its annotation: ``<bool>`` beside
    each flag (``--help`` included), ``<str>`` or ``<list[Path]>`` beside an
    argument whose name already says what it is. Our options name their
    values themselves (``EMAIL``, ``ISO-TIME``), so a flag and an argument
    show no type; an option's own metavar, or a type such as ``<int>``, is
    left as it is. Versions without the label have nothing to change."""
    from typer import core

    def without(kind: type, keep: Callable[[Any], bool]) -> None:
        labelled = getattr(kind, "display_type_rich", None)
        if labelled is None or getattr(labelled, "_nurture_plain", False):
            return

        def display_type_rich(self: Any, ctx: Any) -> str | None:
            return labelled(self, ctx) if keep(self) else None

        display_type_rich._nurture_plain = True  # type: ignore[attr-defined]
        setattr(kind, "display_type_rich", display_type_rich)  # noqa: B010

    option, argument = getattr(core, "TyperOption", None), getattr(core, "TyperArgument", None)
    if option is not None:
        without(option, lambda param: not getattr(param, "is_flag", False))
    if argument is not None:
        without(argument, lambda param: False)


def examples(*commands: str) -> str:
    """A command's ``--help`` epilog: "Examples:" and one command per line.

    Typer renders the epilog as console markup, so the commands are escaped
    (``[OPTIONS]`` or ``[b2b]`` is shown as written).
    """
    lines = [line for command in commands for line in _continued(f"$ {command}")]
    # A trailing backslash is kept out of escape(), which would double it.
    shown = [escape(line[:-2]) + " \\" if line.endswith(" \\") else escape(line) for line in lines]
    return "Examples:\n\n" + "\n".join(shown)


EXAMPLE_WIDTH = 76
"""An example's longest line: ``--help`` at 80 columns indents the epilog by one."""


def _continued(command: str, width: int = EXAMPLE_WIDTH) -> list[str]:
    """``command`` in lines of at most ``width``, as a shell reads it: broken at
    spaces outside quotes (an option kept with its value), each line but the
    last ending in `` \\``, the next indented. A trailing ``# comment`` that
    does not fit goes on a line of its own, without a continuation (a crontab
    line has none)."""
    if len(command) <= width:
        return [command]
    words: list[str] = []
    word, quote = "", ""
    for char in command:
        if char == " " and not quote:
            if word:
                words.append(word)
            word = ""
            continue
        if char in "'\"" and (not quote or char == quote):
            quote = "" if quote else char
        word += char
    words.append(word)
    cut = next((i for i, w in enumerate(words) if w.startswith("#")), len(words))
    words, comment = words[:cut], " ".join(words[cut:])
    # An option stays on the line of its value (--tz Europe/Stockholm).
    paired: list[str] = []
    for word in words:
        if paired and paired[-1].startswith("-") and " " not in paired[-1] and word[:1] != "-":
            paired[-1] += " " + word
        else:
            paired.append(word)
    lines: list[str] = []
    line = ""
    for word in paired:
        candidate = f"{line} {word}" if line else word
        if line and len(candidate) + 2 > width:
            lines.append(line + " \\")
            line = "    " + word
        else:
            line = candidate
    lines.append(line)
    if comment:
        if len(lines[-1]) + 3 + len(comment) <= width:
            lines[-1] += "   " + comment
        else:
            lines.append("    " + comment)
    return lines


def fail(message: str, code: int = EXIT_FAILED) -> typer.Exit:
    """Print ``error: message`` on stderr and return the exit to raise."""
    err.print(Text.assemble(("error: ", "bold red"), safe(message, lines=True)), soft_wrap=True)
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
    except _database_errors() as exc:
        # str(exc) lists the statement's parameters: other people's data, for an
        # import. The driver's own message is enough to act on.
        raise fail(f"database error: {_database_message(exc)}") from exc


def _database_errors() -> tuple[type[SQLAlchemyError], ...]:
    """SQLAlchemy's base error if SQLAlchemy is loaded, else nothing to catch.

    Evaluated only when an exception reaches the ``except``: a command that
    never imported SQLAlchemy cannot raise its errors, and importing it just to
    name them would cost ``validate`` and ``--help`` their quick start (see
    :mod:`nurture.cli.main`).
    """
    loaded = sys.modules.get("sqlalchemy.exc")
    return (loaded.SQLAlchemyError,) if loaded is not None else ()


def _database_message(exc: SQLAlchemyError) -> str:
    original = getattr(exc, "orig", None)
    if original is None:
        return type(exc).__name__
    first_line = (str(original).strip().splitlines() or [""])[0]
    return f"{type(original).__name__}: {first_line}" if first_line else type(original).__name__


def _not_a_folder(path: Path) -> Path | None:
    """The first of ``path`` and its parents, from the top, that exists but is no folder."""
    for part in (*reversed(path.parents), path):
        try:
            if part.exists() and not part.is_dir():
                return part
        except OSError:  # a name too long, a loop: not "a file in the way"
            return None
    return None


def path_problem(exc: OSError, path: Path) -> str:
    """What ``exc`` (raised writing in the folder ``path``) means, in one line
    that names the path (shortened when it is long)."""
    where = Path(exc.filename) if isinstance(exc.filename, str) and exc.filename else path
    if exc.errno == errno.ENAMETOOLONG:
        named = "" if where == path else f"{clip_path(where, 60)}: "
        return f"{named}a name in the path is too long (at most 255 bytes a name, 4,096 in all)"
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        blocker = _not_a_folder(where) or _not_a_folder(path) or where
        if blocker.is_file():
            return f"{clip_path(blocker)} is a file, not a folder"
        return f"{clip_path(blocker)} is not a folder"
    if exc.errno == errno.ELOOP:
        return f"{clip_path(where)}: too many symbolic links (a loop?)"
    return f"{clip_path(where)}: {exc.strerror or type(exc).__name__}"


@contextmanager
def file_errors(path: Path, what: str) -> Iterator[None]:
    """An :class:`OSError` while writing in the folder ``path`` becomes
    ``error: WHAT: why`` (exit 1), never a traceback."""
    try:
        yield
    except OSError as exc:
        raise fail(f"{what}: {path_problem(exc, path)}") from exc
