"""``nurture admin create-user|list-users|delete-user``: who may log in to
``/admin`` (:mod:`nurture.admin.users`).

The password is asked twice at a terminal, or read from the first line of
standard input when that is not a terminal (``echo "$PW" | nurture admin
create-user ana``); it is never an argument, so it stays out of shell history
and process lists.

Exit codes (:mod:`nurture.cli.console`): 0 done; 1 a refused name, password or
zone, or no such admin; 2 a configuration error.
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Annotated

import typer
from rich.table import Table

from nurture.cli.console import err, errors, examples, fail, out, safe
from nurture.cli.context import app_context, store_session

admin_app = typer.Typer(
    name="admin",
    help="Admin users: who may log in to the pages under /admin.",
    no_args_is_help=True,
)


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M UTC")


def _read_password() -> str:
    if sys.stdin.isatty():
        password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
        return password
    line = sys.stdin.readline()
    return line.rstrip("\r\n")


@admin_app.command(
    "create-user",
    epilog=examples(
        "nurture admin create-user ana --email ana@example.com --zone Europe/Stockholm",
        'printf "%s\\n" "$ADMIN_PASSWORD" | nurture admin create-user ops',
    ),
)
def create_user_command(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The name to log in with.")],
    email: Annotated[
        str | None, typer.Option(metavar="EMAIL", help="Where 'Send me a test' sends.")
    ] = None,
    zone: Annotated[
        str, typer.Option(metavar="ZONE", help="The time zone pages show times in.")
    ] = "UTC",
) -> None:
    """Create an admin; the password is asked twice (or read from standard input)."""
    from nurture.admin.users import create_user
    from nurture.audience.input import InvalidSubscriberError, given, normalise_email

    app = app_context(ctx)
    address = given(email)
    if address is not None:
        # "Send me a test" mails it: checked as every subscriber's address is
        # (no CR/LF, no "not-an-email"), before the password is asked for.
        try:
            address = normalise_email(address)
        except InvalidSubscriberError as exc:
            raise fail(f"--email: {exc}") from exc
    password = _read_password()
    with errors(), store_session(app) as session:
        create_user(session, name, password, now=app.now(), email=address, zone=zone)
        session.commit()
    err.print(safe(f"Created the admin {name!r}; log in at /admin/login."), soft_wrap=True)


@admin_app.command("list-users", epilog=examples("nurture admin list-users"))
def list_users_command(ctx: typer.Context) -> None:
    """Admins: name, email, zone, when created and last logged in."""
    from nurture.admin.users import list_users

    app = app_context(ctx)
    with errors(), store_session(app) as session:
        lines = [
            (row.name, row.email or "-", row.zone, _when(row.created_at), _when(row.last_login_at))
            for row in list_users(session)
        ]
    if not lines:
        out.print("No admins. Create one with `nurture admin create-user NAME`.")
        return
    table = Table("name", "email", "zone", "created", "last login")
    for line in lines:
        table.add_row(*(safe(cell) for cell in line))
    out.print(table)


@admin_app.command("delete-user", epilog=examples("nurture admin delete-user ana"))
def delete_user_command(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The admin's name.")],
) -> None:
    """Delete an admin: their sessions stop working at the next request."""
    from nurture.admin.users import delete_user

    app = app_context(ctx)
    with errors(), store_session(app) as session:
        delete_user(session, name)
        session.commit()
    out.print(safe(f"Deleted the admin {name!r}"))
