"""``nurture subscribers ...``: add, import, list, show, unsubscribe, export
and erase subscribers.

The commands get everything from ``ctx.obj``
(:class:`~nurture.cli.context.AppContext`): settings, the clock, a migrated
store and the valid sequences. ``import`` lives in :mod:`nurture.cli.csv_import`
and is registered here; ``nurture enroll`` and ``unenroll``, and what a new
enrollment will send first, in :mod:`nurture.cli.enroll`.

Exit codes (:mod:`nurture.cli.console`): 0 done; 1 a refused input or a
failed command (bad address, unknown status, no such subscriber); 2 a
configuration error.

Names, addresses, tags and reasons come from outside: they are printed through
:func:`~nurture.cli.console.safe` (plain text, control characters escaped),
never as console markup.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated
from zoneinfo import ZoneInfo

import typer
from rich import box
from rich.table import Column, Table
from rich.text import Text

from nurture.cli.bounds import MAX_OFFSET, MAX_ROWS
from nurture.cli.console import (
    errors,
    examples,
    fail,
    out,
    print_json,
    safe,
    say,
    with_reason,
)
from nurture.cli.context import app_context, store_session
from nurture.cli.csv_import import IMPORT_EXAMPLES, import_command
from nurture.cli.enroll import enrolled_lines, find_subscriber
from nurture.core.vocabulary import EnrollmentStatus, SubscriberStatus

if TYPE_CHECKING:
    from nurture.admin.timeline import EnrollmentExplain

# The store and nurture.audience (SQLAlchemy, SQLModel) are imported inside the
# functions that use them: see nurture.cli.main on why imports are deferred.

SUBSCRIBER_STATUSES = ", ".join(status.value for status in SubscriberStatus)

subscribers_app = typer.Typer(
    name="subscribers",
    help="Add, import, list and inspect subscribers.",
    no_args_is_help=True,
)


def _cells(*values: str) -> tuple[Text, ...]:
    # Table cells are parsed as markup when given as str: a name such as
    # "[/bold]" would raise a MarkupError or restyle the table.
    return tuple(safe(value) for value in values)


def _local(moment: datetime | None, zone: str) -> str:
    if moment is None:
        return "-"
    return moment.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M %Z")


def _attributes(pairs: list[str]) -> dict[str, str]:
    attributes: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise fail(f"--attr {pair!r}: write it as key=value")
        attributes[key.strip()] = value.strip()
    return attributes


def _check_consent(source: str, consent: str | None) -> None:
    """Refuse --source and --consent as the service would, naming the options."""
    from nurture.audience.consent import Consent
    from nurture.audience.input import InvalidSubscriberError

    try:
        Consent.parse(source, consent, names=("--source", "--consent"))
    except InvalidSubscriberError as exc:
        raise fail(str(exc)) from exc


@subscribers_app.command(
    "add",
    epilog=examples(
        'nurture subscribers add karin@example.com --name "Karin Lindqvist" '
        '--tz Europe/Stockholm --locale sv --tag b2b --consent "Signed up at the fair"',
        "nurture subscribers add jamie@example.com --tag b2b,lead --attr company=Doe",
    ),
)
def add_command(
    ctx: typer.Context,
    email: Annotated[
        str,
        typer.Argument(metavar="EMAIL", help="The address (any case; stored lower-cased)."),
    ],
    name: Annotated[str, typer.Option(metavar="NAME", help="Full name.")] = "",
    first_name: Annotated[
        str | None,
        typer.Option(metavar="NAME", help="First name, when not the name's first word."),
    ] = None,
    tz: Annotated[
        str | None, typer.Option(metavar="ZONE", help="IANA time zone, e.g. Europe/Stockholm.")
    ] = None,
    locale: Annotated[
        str | None, typer.Option(metavar="LOCALE", help="Locale, e.g. sv or en-GB.")
    ] = None,
    tag: Annotated[
        list[str] | None,
        typer.Option(
            metavar="TAG",
            help="A tag; repeat, or separate with commas (b2b,lead). Stored in lower case.",
        ),
    ] = None,
    attr: Annotated[
        list[str] | None,
        typer.Option(metavar="KEY=VALUE", help="An attribute (repeat for more)."),
    ] = None,
    consent: Annotated[
        str | None, typer.Option(metavar="WORDING", help="The wording the subscriber agreed to.")
    ] = None,
    source: Annotated[
        str, typer.Option(metavar="SOURCE", help="Where the address came from.")
    ] = "cli",
) -> None:
    """Add a subscriber (or update one), and enroll them where their tags match.

    Says which sequences they were enrolled in and when each first email goes
    out, or why they were enrolled in none.
    """
    from nurture.audience.subscribers import add_subscriber, get_subscriber

    app = app_context(ctx)
    attributes = _attributes(attr or [])
    _check_consent(source, consent)
    with errors(), store_session(app) as session:
        now = app.now()
        sequences = app.sequences()
        before = get_subscriber(session, email)
        stamp = before.updated_at if before is not None else None
        row, enrollments = add_subscriber(
            session,
            email=email,
            name=name,
            first_name=first_name,
            tz=tz,
            locale=locale,
            tags=tag or [],
            attributes=attributes,
            consent_source=source,
            consent_text=consent,
            now=now,
            sequences=sequences,
        )
        session.commit()
        report = enrolled_lines(session, row, enrollments, sequences, now)
    if before is None:
        say(f"Added {row.email}")
    elif row.updated_at != stamp:
        say(f"Updated {row.email}")
    else:
        say(f"{row.email} is already up to date")
    say(f"  tags: {', '.join(row.tags) or '-'}")
    for line in report:
        say(f"  {line}")


# Registered here, between `add` and `list`: `--help` lists commands in this order.
subscribers_app.command("import", epilog=IMPORT_EXAMPLES)(import_command)


@subscribers_app.command(
    "list",
    epilog=examples(
        "nurture subscribers list",
        "nurture subscribers list --status unsubscribed --limit 20 --offset 40",
    ),
)
def list_command(
    ctx: typer.Context,
    status: Annotated[
        str | None,
        typer.Option(metavar="STATUS", help=f"Only this status ({SUBSCRIBER_STATUSES})."),
    ] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=MAX_ROWS, metavar="N", help="At most this many.")
    ] = 50,
    offset: Annotated[
        int, typer.Option(min=0, max=MAX_OFFSET, metavar="N", help="Skip this many first.")
    ] = 0,
) -> None:
    """List subscribers in the order they were added."""
    from nurture.audience.subscribers import list_subscribers

    app = app_context(ctx)
    if status is not None and status not in {s.value for s in SubscriberStatus}:
        raise fail(f"unknown status {status!r} (one of {SUBSCRIBER_STATUSES})")
    with errors(), store_session(app) as session:
        rows = list_subscribers(session, limit=limit, offset=offset, status=status)
    # Readable at 80 columns (a pipe, a narrow terminal): short fixed-width
    # values never wrap, the rest folds. Time zone and locale are in `show`.
    table = Table(
        Column("email", overflow="fold"),
        Column("name", overflow="fold"),
        Column("status", no_wrap=True),
        Column("tags", overflow="fold"),
        Column("added", no_wrap=True),
        box=box.SIMPLE_HEAD,
    )
    for row in rows:
        table.add_row(
            *_cells(
                row.email, row.name, row.status, ", ".join(row.tags), f"{row.created_at:%Y-%m-%d}"
            )
        )
    out.print(table)
    if not rows:
        say("no subscribers" + (f" with status {status}" if status else ""))


NEXT_STATES = ("pending", "would send")
"""The timeline states of an email still to go out (``nurture explain``'s)."""


def _next_email(enrollment: EnrollmentExplain, zone: str) -> str:
    """The enrollment's next email and when it goes out (the send window, skip
    dates and `when` applied, as `nurture explain` projects it), in ``zone``;
    "-" when none will."""
    if enrollment.status != EnrollmentStatus.ACTIVE:
        return "-"
    line = next(
        (line for line in enrollment.steps if line.state in NEXT_STATES and line.at is not None),
        None,
    )
    if line is None or line.at is None:
        return "-"
    return f"{line.step}: {_local(line.at, zone)}"


@subscribers_app.command("show", epilog=examples("nurture subscribers show karin@example.com"))
def show_command(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(metavar="EMAIL", help="The subscriber's address.")],
) -> None:
    """Show a subscriber: details, consent, enrollments and the send log."""
    from nurture.admin.explain import explain_subscriber
    from nurture.audience.subscribers import subscriber_sends

    app = app_context(ctx)
    with errors(), store_session(app) as session:
        row = find_subscriber(session, email)
        sends = subscriber_sends(session, row)
        sequences = app.sequences()
        assert row.id is not None
        # The enrollments as `nurture explain` reads them: with each one's
        # timeline, so the next email's real time is known.
        explained = explain_subscriber(session.get_bind(), sequences, row.id, app.now())  # type: ignore[arg-type]
    enrollments = explained.enrollments if explained is not None else ()

    def zone_for(sequence_id: str) -> str:
        # The dispatcher's rule: the subscriber's zone, else the sequence's.
        loaded = sequences.get(sequence_id)
        return row.timezone or (loaded.sequence.timezone if loaded else "UTC")

    details = Table.grid(padding=(0, 2))
    details.add_column(style="bold")
    details.add_column()
    details.add_row("email", safe(row.email))
    details.add_row("name", safe(row.name or "-"))
    details.add_row("first name", safe(row.first_name or "-"))
    details.add_row("status", safe(with_reason(row.status, row.status_reason)))
    details.add_row("time zone", safe(row.timezone or "- (the sequence's)"))
    details.add_row("locale", safe(row.locale or "- (the sequence's)"))
    details.add_row("tags", safe(", ".join(row.tags) or "-"))
    for key, value in sorted(row.attributes.items()):
        details.add_row(safe(f"attr.{key}"), safe(str(value)))
    details.add_row("consent", safe(_local(row.consent_at, row.timezone or "UTC")))
    details.add_row("  source", safe(row.consent_source or "-"))
    details.add_row("  wording", safe(row.consent_text or "-"))
    details.add_row("  IP", safe(row.consent_ip or "-"))
    details.add_row("added", safe(_local(row.created_at, row.timezone or "UTC")))
    out.print(details)

    # As in `list`: times never wrap, identifiers and text fold.
    enrolled = Table(
        Column("sequence (version)", overflow="fold"),
        Column("status", overflow="fold"),
        Column("last step", overflow="fold"),
        Column("next email", no_wrap=True),
        title="Enrollments",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    for enrollment in enrollments:
        reason = f": {enrollment.status_reason}" if enrollment.status_reason else ""
        enrolled.add_row(
            *_cells(
                f"{enrollment.sequence_id} ({enrollment.version})",
                enrollment.status + reason,
                enrollment.position or "-",
                _next_email(enrollment, zone_for(enrollment.sequence_id)),
            )
        )
    out.print(enrolled if enrollments else "not enrolled in any sequence")

    log = Table(
        Column("sent, or due", no_wrap=True),
        Column("sequence / step", overflow="fold"),
        Column("status", no_wrap=True),
        Column("subject / reason", overflow="fold"),
        title="Sends",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    for send in sends:
        status = send.status + (f" ({send.attempts} tries)" if send.attempts > 1 else "")
        log.add_row(
            *_cells(
                _local(send.sent_at or send.due_at, zone_for(send.sequence_id)),
                f"{send.sequence_id} / {send.step_id}",
                status,
                send.reason or send.subject or "",
            )
        )
    out.print(log if sends else "nothing sent yet")


@subscribers_app.command(
    "unsubscribe",
    epilog=examples(
        "nurture subscribers unsubscribe karin@example.com",
        "nurture subscribers unsubscribe karin@example.com --sequence sales-process",
    ),
)
def unsubscribe_command(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(metavar="EMAIL", help="The subscriber's address.")],
    sequence: Annotated[
        str | None,
        typer.Option(
            metavar="SEQUENCE", help="Leave only this sequence (default: all email, suppressed)."
        ),
    ] = None,
) -> None:
    """Unsubscribe someone (asked by phone or email), as the unsubscribe link does.

    Without --sequence: every enrollment ends, nothing waiting is sent, and the
    address goes on the suppression list. Running it again changes nothing.
    """
    from nurture.audience.leaving import unsubscribe

    app = app_context(ctx)
    with errors(), store_session(app) as session:
        row = find_subscriber(session, email)
        left = unsubscribe(session, row, now=app.now(), sequence_id=sequence, via="admin")
        session.commit()
    if sequence is not None:
        if left.ended:
            say(f"Unsubscribed {row.email} from {sequence}")
        else:
            say(f"{row.email} is not enrolled in {sequence}: nothing changed")
    elif left.changed:
        ended = f" (ended: {', '.join(left.ended)})" if left.ended else ""
        say(f"Unsubscribed {row.email} from all email{ended}")
    else:
        say(f"{row.email} was already unsubscribed: nothing changed")


# --------------------------------------------------------------------------- personal data


@subscribers_app.command(
    "export",
    epilog=examples(
        "nurture subscribers export karin@example.com > karin.json",
    ),
)
def export_command(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(metavar="EMAIL", help="The person's address.")],
) -> None:
    """Print everything held about a person as JSON (a subject access request).

    The subscriber (consent included), enrollments, sends (subjects and
    outcomes, no bodies), events, purchases, app events and suppression entries.
    """
    from nurture.audience.personal_data import export_personal_data

    app = app_context(ctx)
    with errors(), store_session(app) as session:
        data = export_personal_data(session, email)
    if data is None:
        raise fail(f"nothing is held about {email.strip()!r}")
    print_json(data)


@subscribers_app.command(
    "erase",
    epilog=examples(
        "nurture subscribers erase karin@example.com",
        "nurture subscribers erase karin@example.com --yes",
    ),
)
def erase_command(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(metavar="EMAIL", help="The person's address.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Erase a person's data (the right to erasure); the address stays suppressed.

    Deletes the subscriber, their enrollments, sends, events and app events;
    keeps their purchases with no link to them. The address is replaced on the
    suppression list by its SHA-256, so it is never mailed again, even if it is
    added or imported later. This cannot be undone: export first if needed.
    """
    from nurture.audience.personal_data import erase_personal_data
    from nurture.audience.subscribers import normalise_email

    app = app_context(ctx)
    with errors():
        address = normalise_email(email)
    with errors(), store_session(app) as session:  # a folder with no project fails here, first
        if not yes and not typer.confirm(f"Erase everything held about {address}?", err=True):
            raise fail("nothing erased")
        erasure = erase_personal_data(session, address, app.now())
        session.commit()
    if not erasure.found:
        say(f"No subscriber {erasure.address}; its hash is on the suppression list")
        return
    done = ", ".join(f"{what.replace('_', ' ')} {count}" for what, count in erasure.counts.items())
    say(f"Erased {erasure.address} ({done}); its hash is on the suppression list")
