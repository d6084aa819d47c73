"""``nurture subscribers ...``, ``nurture enroll`` and ``nurture unenroll``.

The commands get everything from the Typer context object, which must satisfy
:class:`AppContext` (the main CLI's context does): settings, the clock, a
migrated store and the valid sequences. That keeps this module free of
configuration reading, and lets tests pass a context with a fixed clock.

Exit codes (:mod:`nurture.cli.console`): 0 done; 1 a refused input or a
failed command (bad address, unknown sequence, bad CSV rows: the good rows are
still imported); 2 a configuration error.

Names, addresses, tags and reasons come from outside: they are printed through
:func:`~nurture.cli.console.safe` (plain text, control characters escaped),
never as console markup.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Protocol, runtime_checkable
from zoneinfo import ZoneInfo

import typer
from rich import box
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Column, Table
from rich.text import Text

from nurture.app.settings import Settings
from nurture.cli.console import EXIT_FAILED, err, errors, examples, fail, out, print_json, safe
from nurture.core.loader import LoadedSequence, Sequences
from nurture.core.simulation import simulate
from nurture.core.vocabulary import SubscriberStatus

# The store and nurture.audience (SQLAlchemy, SQLModel) are imported inside the
# functions that use them: see nurture.cli.main on why imports are deferred.
if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import sessionmaker
    from sqlmodel import Session

    from nurture.audience.csv_import import ImportReport
    from nurture.store.tables import EnrollmentRow, SubscriberRow

SUBSCRIBER_STATUSES = ", ".join(status.value for status in SubscriberStatus)

subscribers_app = typer.Typer(
    name="subscribers",
    help="Add, import, list and inspect subscribers.",
    no_args_is_help=True,
)


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
        raise RuntimeError(
            "the CLI context object must implement nurture.cli.subscribers.AppContext"
        )
    return obj


@contextmanager
def store_session(app: AppContext) -> Iterator[Session]:
    engine, sessions = app.open_store()
    try:
        with sessions() as session:
            yield session
    finally:
        engine.dispose()


def _subscriber(session: Session, email: str) -> SubscriberRow:
    from nurture.audience.subscribers import get_subscriber

    row = get_subscriber(session, email)
    if row is None:
        raise fail(f"no subscriber {email.strip()!r}")
    return row


def _sequence(app: AppContext, sequence_id: str) -> LoadedSequence:
    sequences = app.sequences()
    if sequence_id not in sequences:
        known = ", ".join(sorted(sequences)) or "none"
        raise fail(f"unknown sequence {sequence_id!r} (valid sequences: {known})")
    return sequences[sequence_id]


def _say(text: str) -> None:
    """Print a line that contains outside text (an address, an id) literally."""
    out.print(safe(text), soft_wrap=True)


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


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _triggers(sequences: Mapping[str, LoadedSequence]) -> str:
    """What each sequence's trigger needs: ``sales-process needs the tag b2b``."""
    needs = []
    for sequence_id in sorted(sequences):
        trigger = sequences[sequence_id].sequence.trigger
        if trigger is None:
            continue
        if not trigger.on_subscribe:
            needs.append(f"{sequence_id} starts on the app event {trigger.event}")
        elif not trigger.tags:
            needs.append(f"{sequence_id} takes every new subscriber")
        else:
            noun = "tag" if len(trigger.tags) == 1 else "tags"
            needs.append(f"{sequence_id} needs the {noun} {', '.join(trigger.tags)}")
    if not needs:
        return "no sequence has a trigger: enroll by hand with `nurture enroll EMAIL SEQUENCE`"
    return "; ".join(needs)


def first_email(loaded: LoadedSequence, row: SubscriberRow, now: datetime) -> list[str]:
    """When the first email of an enrollment made at ``now`` goes out, and why then.

    Computed by :func:`~nurture.core.simulation.simulate`, which drives the
    dispatcher's own decision function (:func:`~nurture.core.decisions.decide_next_step`)
    from the enrollment: the subscriber's zone, the send window, skip dates
    and ``when`` conditions all count, as they will when it is sent.
    """
    from nurture.audience.subscribers import subscriber_view

    lines: list[str] = []
    for entry in simulate(loaded.sequence, subscriber_view(row), now):
        if entry.action == "skip":
            lines.append(f"step {entry.step!r} will be skipped: {entry.reason}")
            continue
        if entry.action != "send":
            break
        zone = getattr(entry.at.tzinfo, "key", str(entry.at.tzinfo))
        when = f"{entry.at:%a %Y-%m-%d %H:%M %Z} ({zone})"
        if entry.at <= now:
            lines.append(f"first email {entry.step!r}: due now, {when}: sent at the next dispatch")
        else:
            lines.append(f"first email {entry.step!r}: {when}")
            if entry.reason:
                lines.append(f"  ({entry.reason})")
        return lines
    lines.append("no email will be sent (every step is skipped)")
    return lines


def _enrolled_lines(
    session: Session,
    row: SubscriberRow,
    enrollments: list[EnrollmentRow],
    sequences: Mapping[str, LoadedSequence],
    now: datetime,
) -> list[str]:
    """Which sequences ``row`` was enrolled in, when each first email goes out,
    or why it was enrolled nowhere."""
    from nurture.audience.enrollment import triggered_on_subscribe
    from nurture.audience.suppression import is_suppressed

    if row.status != SubscriberStatus.ACTIVE:
        return [f"status: {row.status} (not enrolled)"]
    lines: list[str] = []
    new = {enrollment.sequence_id for enrollment in enrollments}
    for enrollment in enrollments:
        version = enrollment.sequence_version
        lines.append(f"enrolled in {enrollment.sequence_id} (version {version})")
        loaded = sequences.get(enrollment.sequence_id)
        if loaded is not None and loaded.version == enrollment.sequence_version:
            lines.extend(f"  {line}" for line in first_email(loaded, row, now))
    matched = [
        sequence_id
        for sequence_id in sorted(sequences)
        if sequence_id not in new and triggered_on_subscribe(sequences[sequence_id], row.tags)
    ]
    # A broken file's sequence is not in `sequences`: enrollment fell back on
    # its last good version, or warned (on stderr) that it could not.
    broken = [
        item
        for item in (sequences.broken if isinstance(sequences, Sequences) else ())
        if item.sequence_id not in sequences and item.sequence_id not in new
    ]
    disabled = [sid for sid in matched if not sequences[sid].sequence.enabled]
    matched = [sid for sid in matched if sid not in disabled]
    lines.extend(
        f"{sid} is disabled ({sequences[sid].display} says enabled: false): nobody is enrolled"
        for sid in disabled
    )
    if matched and is_suppressed(session, row.email):
        lines.append("not enrolled: the address is on the suppression list")
    elif matched:
        lines.extend(f"already enrolled in {sid}: not enrolled again" for sid in matched)
    elif (
        not new
        and not disabled
        and (not broken or any(s.sequence.trigger for s in sequences.values()))
    ):
        lines.append(f"not enrolled: no trigger matched ({_triggers(sequences)})")
    lines.extend(
        f"not enrolled in {item.sequence_id}: {item.display} is broken (see the warning)"
        for item in broken
    )
    return lines


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
        report = _enrolled_lines(session, row, enrollments, sequences, now)
    if before is None:
        _say(f"Added {row.email}")
    elif row.updated_at != stamp:
        _say(f"Updated {row.email}")
    else:
        _say(f"{row.email} is already up to date")
    _say(f"  tags: {', '.join(row.tags) or '-'}")
    for line in report:
        _say(f"  {line}")


@subscribers_app.command(
    "import",
    epilog=examples(
        "nurture subscribers import leads.csv",
        'nurture subscribers import mailchimp-export.csv --consent "Newsletter sign-up form"',
    ),
)
def import_command(
    ctx: typer.Context,
    file: Annotated[
        Path, typer.Argument(metavar="FILE.csv", help="A UTF-8 CSV file with an email column.")
    ],
    consent: Annotated[
        str | None,
        typer.Option(metavar="WORDING", help="The wording these subscribers agreed to."),
    ] = None,
) -> None:
    """Import subscribers from CSV: email, name, first_name, tz, locale, tags, attr.<key>.

    Common header names are understood (E-post, Email Address, First Name,
    Mailchimp's and Kit's exports); any other column is kept as an attribute.
    Tags in one cell are separated by ',', ';' or '|'. Re-importing a file
    changes nothing. Bad rows are listed as FILE:LINE: message and skipped; the
    others are imported (exit code 1 if any row was bad). An address on several
    lines is reported and merged.
    """
    from nurture.app.runtime import freeze_startup_objects
    from nurture.audience.csv_import import import_csv

    app = app_context(ctx)
    with (
        errors(),
        store_session(app) as session,
        Progress(
            TextColumn("importing"),
            BarColumn(),
            MofNCompleteColumn(),
            console=err,
            transient=True,
            disable=not err.is_terminal,  # no bar in logs and pipes
        ) as bar,
    ):
        task = bar.add_task("import", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        sequences = app.sequences()
        freeze_startup_objects()  # a large file allocates a lot: see the function
        report = import_csv(
            session,
            file,
            sequences=sequences,
            now=app.now(),
            consent_source="import",
            consent_text=consent,
            progress=progress,
        )
    _import_summary(report, sequences)
    for note in report.notes:
        err.print(safe(f"{file}:1: {note}", style="yellow"), soft_wrap=True)
    problems = [(line, message, "red") for line, message in report.errors] + [
        (line, f"duplicate of line {first} (the same address): merged into it", "yellow")
        for line, first in report.duplicates
    ]
    for line, message, style in sorted(problems):
        err.print(safe(f"{file}:{line}: {message}", style=style), soft_wrap=True)
    if report.errors:
        raise typer.Exit(EXIT_FAILED)


def _import_summary(report: ImportReport, sequences: Mapping[str, LoadedSequence]) -> None:
    duplicates = f", {_plural(len(report.duplicates), 'duplicate')}" if report.duplicates else ""
    _say(
        f"{report.imported} imported, {report.updated} updated, {report.unchanged} unchanged, "
        f"{len(report.errors)} with errors{duplicates}; {report.enrolled} new enrollments"
    )
    for sequence_id, count in sorted(report.enrollments.items()):
        _say(f"  enrolled in {sequence_id}: {_plural(count, 'subscriber')}")
    if report.no_trigger:
        _say(
            f"  not enrolled, no trigger matched: {_plural(report.no_trigger, 'subscriber')} "
            f"({_triggers(sequences)})"
        )


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
    limit: Annotated[int, typer.Option(min=1, metavar="N", help="At most this many.")] = 50,
    offset: Annotated[int, typer.Option(min=0, metavar="N", help="Skip this many first.")] = 0,
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
        _say("no subscribers" + (f" with status {status}" if status else ""))


@subscribers_app.command("show", epilog=examples("nurture subscribers show karin@example.com"))
def show_command(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(metavar="EMAIL", help="The subscriber's address.")],
) -> None:
    """Show a subscriber: details, consent, enrollments and the send log."""
    from nurture.audience.subscribers import subscriber_enrollments, subscriber_sends

    app = app_context(ctx)
    with errors(), store_session(app) as session:
        row = _subscriber(session, email)
        enrollments = subscriber_enrollments(session, row)
        sends = subscriber_sends(session, row)
        sequences = app.sequences()

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
    details.add_row(
        "status", safe(row.status + (f" ({row.status_reason})" if row.status_reason else ""))
    )
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
        Column("next due", no_wrap=True),
        title="Enrollments",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    for enrollment in enrollments:
        reason = f": {enrollment.status_reason}" if enrollment.status_reason else ""
        enrolled.add_row(
            *_cells(
                f"{enrollment.sequence_id} ({enrollment.sequence_version})",
                enrollment.status + reason,
                enrollment.position or "-",
                _local(enrollment.next_due_at, zone_for(enrollment.sequence_id)),
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
        row = _subscriber(session, email)
        left = unsubscribe(session, row, now=app.now(), sequence_id=sequence, via="admin")
        session.commit()
    if sequence is not None:
        if left.ended:
            _say(f"Unsubscribed {row.email} from {sequence}")
        else:
            _say(f"{row.email} is not enrolled in {sequence}: nothing changed")
    elif left.changed:
        ended = f" (ended: {', '.join(left.ended)})" if left.ended else ""
        _say(f"Unsubscribed {row.email} from all email{ended}")
    else:
        _say(f"{row.email} was already unsubscribed: nothing changed")


ENROLL_EXAMPLES = examples("nurture enroll karin@example.com sales-process")


def enroll_command(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(metavar="EMAIL", help="The subscriber's address.")],
    sequence: Annotated[str, typer.Argument(metavar="SEQUENCE", help="The sequence id.")],
) -> None:
    """Enroll a subscriber in a sequence now (also one they finished before).

    Says when the first email will go out: the next send-window opening in the
    subscriber's time zone, as the dispatcher will compute it.
    """
    from nurture.audience.subscribers import enroll

    app = app_context(ctx)
    with errors(), store_session(app) as session:
        loaded = _sequence(app, sequence)
        row = _subscriber(session, email)
        now = app.now()
        enrollment = enroll(session, row, loaded, now)
        session.commit()
        schedule = first_email(loaded, row, now)
    _say(
        f"Enrolled {row.email} in {enrollment.sequence_id} (version {enrollment.sequence_version})"
    )
    for line in schedule:
        _say(f"  {line}")


UNENROLL_EXAMPLES = examples(
    'nurture unenroll karin@example.com sales-process --reason "asked by phone"'
)


def unenroll_command(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(metavar="EMAIL", help="The subscriber's address.")],
    sequence: Annotated[str, typer.Argument(metavar="SEQUENCE", help="The sequence id.")],
    reason: Annotated[
        str, typer.Option(metavar="WHY", help="Why, for the log.")
    ] = "unenrolled by admin",
) -> None:
    """End a subscriber's active enrollment in a sequence: nothing more is sent from it."""
    from nurture.audience.subscribers import unenroll

    app = app_context(ctx)
    with errors(), store_session(app) as session:
        row = _subscriber(session, email)
        unenroll(session, row, sequence, app.now(), reason=reason)
        session.commit()
    _say(f"Unenrolled {row.email} from {sequence}")


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
        _say(f"No subscriber {erasure.address}; its hash is on the suppression list")
        return
    done = ", ".join(f"{what.replace('_', ' ')} {count}" for what, count in erasure.counts.items())
    _say(f"Erased {erasure.address} ({done}); its hash is on the suppression list")
