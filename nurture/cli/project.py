"""``nurture init``: a new working folder, the example disabled, the sender,
postal address and base URL from flags, a prompt, or placeholders.

The folder itself is written by :mod:`nurture.authoring.project`; this module
only gathers the choices and says what was done.
"""

from __future__ import annotations

import re
import secrets
import sys
from collections.abc import Callable
from typing import Annotated, TypeVar

import typer
from rich.text import Text

from nurture.app.config_file import CONFIG_FILE
from nurture.authoring.project import (
    EXAMPLE_SEQUENCE,
    LOCAL_BASE_URL,
    PLACEHOLDER_POSTAL_ADDRESS,
    PLACEHOLDER_SENDER,
    ProjectChoices,
    check_base_url,
    check_postal_address,
    parse_sender,
    write_project,
)
from nurture.cli.console import EXIT_CONFIGURATION, err, fail, file_errors, out, safe
from nurture.core.model import Sender
from nurture.demo.examples import example_root
from nurture.errors import clip
from nurture.urls import url_problem

_T = TypeVar("_T")

# What no value init writes may hold: control characters (DEL and the C1
# range too), the Unicode line and paragraph separators and the
# non-characters U+FFFE and U+FFFF. With them nurture.toml or the sequence
# file (TOML and YAML, quoted alike) would not load, or would read another
# value. Nor a lone surrogate (_SURROGATE): no UTF-8 can carry it, and a byte
# of the command line that is not UTF-8 arrives as one.
_UNWRITABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ufffe\uffff]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _writable(value: str, where: str) -> str:
    """``value`` if it can be written into ``where`` as it is; ValueError says why not."""
    _utf8(value)
    bad = _UNWRITABLE.search(value)
    if bad is not None:
        raise ValueError(
            f"{clip(value, 60)!r} has {bad.group()!r} in it: "
            f"{where} takes printable characters on one line only"
        )
    return value


def _utf8(value: str) -> None:
    bad = _SURROGATE.search(value)
    if bad is not None:
        raise ValueError(
            f"{clip(value, 60)!r} has {bad.group()!r} in it, which is not UTF-8 text "
            "(is the terminal's locale UTF-8?)"
        )


def _sender(text: str) -> Sender:
    """``--from`` (or the answer to its prompt) as a sender the sequence file can hold."""
    _utf8(text)
    sender = parse_sender(text)
    _writable(sender.name, EXAMPLE_SEQUENCE)
    return sender


def _postal_address(text: str) -> str:
    return _writable(check_postal_address(text), CONFIG_FILE)


def _base_url(text: str) -> str:
    """``--base-url`` as the settings will read it: a URL they accept (no line
    break, space, quote, query ...), never one every later command refuses."""
    value = check_base_url(text)
    problem = url_problem(value)
    if problem is not None:
        raise ValueError(f"{clip(value, 60)!r} {problem}")
    return _writable(value, CONFIG_FILE)


def _from_flag(value: str | None) -> Sender | None:
    if value is None:
        return None
    try:
        return _sender(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


def _checked(check: Callable[[str], str]) -> Callable[[str | None], str | None]:
    def callback(value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return check(value)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from exc

    return callback


def _ask(question: str, placeholder: str, check: Callable[[str], _T]) -> _T:
    """Prompt until ``check`` accepts the answer (Enter keeps the placeholder)."""
    while True:
        answer: str = typer.prompt(question, default=placeholder)
        try:
            return check(answer)
        except ValueError as exc:
            err.print(Text.assemble(("  ", ""), safe(str(exc))))


def _project_choices(
    sender: Sender | None, postal_address: str | None, base_url: str | None
) -> ProjectChoices:
    """The flags given; the rest asked for on a terminal, else placeholders."""
    interactive = sys.stdin.isatty() and None in (sender, postal_address, base_url)
    if interactive:
        out.print("Three things every email needs (Enter keeps a placeholder for now):")
    if sender is None:
        sender = parse_sender(PLACEHOLDER_SENDER)
        if interactive:
            sender = _ask("Sender, as subscribers see it", PLACEHOLDER_SENDER, _sender)
    if postal_address is None:
        postal_address = PLACEHOLDER_POSTAL_ADDRESS
        if interactive:
            postal_address = _ask("Postal address for the footer", postal_address, _postal_address)
    if base_url is None:
        base_url = LOCAL_BASE_URL
        if interactive:
            base_url = _ask("Public https:// address of `nurture run`", base_url, _base_url)
    return ProjectChoices(sender, postal_address, base_url)


def init_command(
    ctx: typer.Context,
    directory: Annotated[str, typer.Argument(metavar="FOLDER", help="Folder to create.")],
    sender: Annotated[
        Sender | None,
        typer.Option(
            "--from",
            parser=_from_flag,
            metavar="'NAME <EMAIL>'",
            help="Who the emails come from, e.g. 'Maja <maja@shop.se>'.",
        ),
    ] = None,
    postal_address: Annotated[
        str | None,
        typer.Option(
            callback=_checked(_postal_address),
            metavar="'STREET, CITY, COUNTRY'",
            help="Your postal address, shown in every footer.",
        ),
    ] = None,
    base_url: Annotated[
        str | None,
        typer.Option(
            callback=_checked(_base_url),
            metavar="URL",
            help="The public https address of `nurture run`: the links in emails lead there.",
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Write into a folder that has nurture.toml.")] = False,
) -> None:
    """Create a working folder: nurture.toml and the example sequence, disabled.

    Without --from, --postal-address and --base-url it asks for them on a
    terminal; elsewhere it writes placeholders, which `validate` points out.
    """
    if not directory.strip():
        # Path("") is the current folder: an empty argument is a mistake (an
        # unset shell variable), not a request to initialise where we stand.
        raise fail(
            "FOLDER is empty: name the folder to create (e.g. nurture init shop; "
            "`nurture init .` for this one)",
            EXIT_CONFIGURATION,
        )
    target = (ctx.obj.folder / directory).resolve()
    # A file where the folder should be, a name too long: said, never a traceback.
    with file_errors(target, clip(directory, 60)):
        if (target / CONFIG_FILE).exists() and not force:
            raise fail(f"{target / CONFIG_FILE} already exists (use --force to overwrite)")
        choices = _project_choices(sender, postal_address, base_url)
        write_project(target, example_root(), choices, secrets.token_urlsafe(32))
    out.print(Text.assemble("Created ", (str(target), "bold")))
    out.print(Text(f"  {EXAMPLE_SEQUENCE} is the example, disabled: it sends nothing"))
    out.print(Text(f"  cd {directory} && nurture validate"))
    left = choices.placeholders()
    if left:
        err.print(
            Text.assemble(
                ("warning: ", "yellow"),
                f"placeholders for {', '.join(left)}: replace them before sending "
                "(`nurture validate` points at each)",
            ),
            soft_wrap=True,
        )
