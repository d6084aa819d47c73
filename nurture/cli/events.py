"""``nurture events add purchase``: record a purchase by hand (an invoice paid
by bank transfer, a sale the checkout did not report).

It goes through the same service as the checkout webhooks
(:func:`nurture.audience.purchases.record_purchase`): stored once per order
id, credited to the send that earned it, and the sequences whose goal it
meets end ``converted`` on the next dispatch pass.

Exit codes (:mod:`nurture.cli.console`): 0 recorded (or already recorded);
1 a refused value or an address that is no subscriber; 2 a configuration or
usage error.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Protocol

import typer

from nurture.app.settings import Settings
from nurture.cli.console import EXIT_CONFIGURATION, errors, examples, fail, out, safe
from nurture.cli.times import parse_time

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import sessionmaker
    from sqlmodel import Session

events_app = typer.Typer(
    name="events",
    help="Record what subscribers did outside email (a purchase).",
    no_args_is_help=True,
)

KINDS = ("purchase",)


class EventsContext(Protocol):
    """What these commands need from ``ctx.obj`` (the main CLI's context has it)."""

    def store_settings(self) -> Settings: ...

    def now(self) -> datetime: ...

    def open_store(self) -> tuple[Engine, sessionmaker[Session]]: ...


@events_app.command(
    "add",
    epilog=examples(
        "nurture events add purchase --email karin@example.com --product sales-audit "
        "--amount 4900 --currency SEK",
        "nurture events add purchase --email karin@example.com --product sales-audit "
        "--amount 19.99 --currency EUR --order-id INV-1042 --at 2026-11-27T14:30:00Z",
    ),
)
def add_command(
    ctx: typer.Context,
    kind: Annotated[str, typer.Argument(metavar="KIND", help="What happened: purchase.")],
    email: Annotated[str, typer.Option(metavar="EMAIL", help="The subscriber's address.")],
    product: Annotated[
        str, typer.Option(metavar="PRODUCT", help="The product (what a goal names).")
    ],
    amount: Annotated[str, typer.Option(metavar="AMOUNT", help="The amount paid, e.g. 19.99.")],
    currency: Annotated[str, typer.Option(metavar="CODE", help="ISO 4217 code, e.g. SEK.")],
    order_id: Annotated[
        str | None,
        typer.Option(metavar="ID", help="The order or invoice id (default: a new one)."),
    ] = None,
    at: Annotated[
        str | None,
        typer.Option(metavar="TIME", help="When it was bought, ISO 8601 (default: now)."),
    ] = None,
) -> None:
    """Record a purchase, credited to the email that earned it.

    A sequence whose goal it meets ends `converted` at the next dispatch
    pass."""
    from nurture.audience.purchases import Outcome, purchase_input, record_purchase

    if kind not in KINDS:
        raise fail(f"KIND {kind!r}: one of {', '.join(KINDS)}", EXIT_CONFIGURATION)
    if not product.strip():
        # A goal names the product it waits for: a purchase of nothing meets none.
        raise fail("--product is empty: say what was bought (what a goal names)")
    try:
        # The bounds every typed time gets (nurture.cli.times): no purchase
        # from year 9999, which the attribution window would overflow on.
        occurred_at = parse_time(at) if at else None
    except ValueError as exc:
        raise fail(f"--at: {exc}", EXIT_CONFIGURATION) from None
    app: EventsContext = ctx.obj
    with errors():
        settings = app.store_settings()
        now = app.now()
        occurred = occurred_at or now
        order = order_id or f"manual-{uuid.uuid4().hex[:16]}"
        purchase = purchase_input(
            source="manual",
            order_id=order,
            product=product,
            amount=amount,
            currency=currency,
            occurred_at=occurred,
            email=email,
            payload={"by": "nurture events add purchase"},
        )
        engine, _sessions = app.open_store()
        try:
            with engine.begin() as conn:
                done = record_purchase(
                    conn,
                    purchase,
                    keys=settings.secret_keys,
                    attribution_window=timedelta(seconds=settings.attribution_window),
                    now=now,
                )
        finally:
            engine.dispose()
    if done.outcome == Outcome.NO_SUBSCRIBER:
        raise fail(f"no subscriber {email}: nothing recorded")
    if done.outcome == Outcome.DUPLICATE:
        out.print(safe(f"order {order} is already recorded: nothing changed"), soft_wrap=True)
        return
    what = f"{purchase.product} {purchase.amount} {purchase.currency}"
    line = f"Recorded purchase {order} ({what}) by {email.strip()}"
    if done.send is not None:
        why = {"click": "last click", "ref": "nurture_ref", "last_send": "last email sent"}
        line += f", credited to {done.send.sequence_id}/{done.send.step_id}"
        line += f" ({why[done.credit.value]})"
    else:
        line += ", credited to no email"
    out.print(safe(line), soft_wrap=True)
