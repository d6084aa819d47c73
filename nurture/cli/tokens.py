"""``nurture tokens create|list|revoke``: the API tokens of ``/api/v1``
(:mod:`nurture.audience.tokens`).

A token is printed once, by ``create``, on stdout alone (so a script can
capture it); the database keeps only its SHA-256. ``list`` never shows a token.

Exit codes (:mod:`nurture.cli.console`): 0 done; 1 a refused name or scope, or
no such token; 2 a configuration error.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from nurture.cli.console import err, errors, examples, out, safe
from nurture.cli.context import app_context, store_session

if TYPE_CHECKING:
    pass

tokens_app = typer.Typer(
    name="tokens",
    help="API tokens for POST /api/v1/subscribers and /api/v1/events.",
    no_args_is_help=True,
)


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M UTC")


@tokens_app.command(
    "create",
    epilog=examples("nurture tokens create website", "nurture tokens create ops --scope admin"),
)
def create_command(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="What the token is for.")],
    scope: Annotated[
        str, typer.Option(metavar="SCOPE", help="ingest (subscribers, events) or admin.")
    ] = "ingest",
) -> None:
    """Create a token and print it once: store it where the caller keeps secrets."""
    from nurture.audience.tokens import create_token

    app = app_context(ctx)
    with errors(), store_session(app) as session:
        created = create_token(session, name, scope, app.now())
        session.commit()
    err.print(
        safe(
            f"Created the {created.scope} token {created.name!r}. It is shown only now; "
            "send it as 'Authorization: Bearer <token>'."
        ),
        soft_wrap=True,
    )
    # Alone on stdout, nothing around it: `TOKEN=$(nurture tokens create web)`.
    print(created.token)


@tokens_app.command("list", epilog=examples("nurture tokens list"))
def list_command(ctx: typer.Context) -> None:
    """Tokens: name, scope, when created and last used (never the token)."""
    from nurture.audience.tokens import list_tokens

    app = app_context(ctx)
    with errors(), store_session(app) as session:
        rows = list_tokens(session)
        lines = [
            (row.name, row.scope, _when(row.created_at), _when(row.last_used_at)) for row in rows
        ]
    if not lines:
        out.print("No API tokens. Create one with `nurture tokens create NAME`.")
        return
    table = Table("name", "scope", "created", "last used")
    for line in lines:
        table.add_row(*(safe(cell) for cell in line))
    out.print(table)


@tokens_app.command("revoke", epilog=examples("nurture tokens revoke website"))
def revoke_command(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The token's name.")],
) -> None:
    """Delete a token: requests carrying it are refused (401) from now on."""
    from nurture.audience.tokens import revoke_token

    app = app_context(ctx)
    with errors(), store_session(app) as session:
        revoke_token(session, name)
        session.commit()
    out.print(safe(f"Revoked {name!r}"))
