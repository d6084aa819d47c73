"""The marketer's commands: ``validate``, ``preview``, ``simulate`` and
``schema``. They read sequence files, templates and sample data, never the
database, so this module imports nothing of the store, the web side or a
provider (see :mod:`nurture.cli.main` on deferred imports).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from nurture.app.settings import Settings
from nurture.authoring.workbench import (
    find_sequence,
    locale_fallback,
    preview_locales,
    preview_sequence,
    validate_paths,
)
from nurture.cli.console import (
    EXIT_CONFIGURATION,
    EXIT_FAILED,
    err,
    errors,
    examples,
    fail,
    file_errors,
    out,
    print_json,
    safe,
)
from nurture.core.decisions import Event, subscriber_zone
from nurture.core.loader import LoadedSequence
from nurture.core.places import check_locale, check_timezone
from nurture.core.samples import read_subscribers, samples_for
from nurture.core.schema import sequence_schema_text
from nurture.core.simulation import early_engagement, simulate, unknown_step
from nurture.core.subscriber import Subscriber
from nurture.core.vocabulary import EventKind
from nurture.errors import SequenceError, clip_path, quoted


def _settings(ctx: typer.Context) -> Settings:
    with errors():
        settings: Settings = ctx.obj.settings()
    return settings


def _parse_time(text: str, zone: ZoneInfo, what: str, code: int = EXIT_FAILED) -> datetime:
    """An ISO-8601 time; without an offset it is read in ``zone`` (the subscriber's).

    Refused with exit ``code`` when it is not one, or when it cannot be written
    in UTC or in ``zone`` (see :func:`_in_calendar`).
    """
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise fail(
            f"{what}: {text!r} is not an ISO-8601 time such as 2026-11-27T15:30", code
        ) from exc
    moment = moment.replace(tzinfo=zone) if moment.tzinfo is None else moment
    return _in_calendar(moment, zone, f"{what}: {text!r}", code)


def _in_calendar(moment: datetime, zone: ZoneInfo, what: str, code: int) -> datetime:
    """``moment`` if it can be written both in UTC and in ``zone``, else a refusal.

    The timeline is computed in UTC and shown in the subscriber's zone; a time
    within a day of 0001-01-01 or 9999-12-31 may have no date in one of them
    (``0001-01-01T00:00+05:00`` is the year 0 in UTC), and Python's dates stop
    there. The simulation itself handles steps due past the end (``never``).
    """
    try:
        moment.astimezone(UTC)
        moment.astimezone(zone)
    except OverflowError:
        raise fail(
            f"{what} is outside the years 1 to 9999 in UTC or in {zone.key}: "
            "give a time between 0001-01-02 and 9999-12-30",
            code,
        ) from None
    return moment


def parse_event(text: str, zone: ZoneInfo) -> Event:
    """``clicked STEP at ISO``, ``opened STEP at ISO``, ``purchased [PRODUCT] at ISO``,
    ``unsubscribed at ISO``."""
    words, sep, when = text.partition(" at ")
    parts = words.split()
    if not sep or not parts:
        raise fail(
            f'--event {text!r}: write for example "clicked three-models at 2026-12-01T10:00"'
        )
    at = _parse_time(when, zone, "--event")
    verb, rest = parts[0].lower(), parts[1:]
    if verb in ("clicked", "opened") and len(rest) == 1:
        kind = EventKind.CLICKED if verb == "clicked" else EventKind.OPENED
        return Event(kind, at, step=rest[0])
    if verb == "purchased" and len(rest) <= 1:
        return Event(EventKind.PURCHASED, at, product=rest[0] if rest else None)
    if verb == "unsubscribed" and not rest:
        return Event(EventKind.UNSUBSCRIBED, at)
    raise fail(
        f"--event {text!r}: the event is one of 'clicked STEP', 'opened STEP', "
        "'purchased [PRODUCT]', 'unsubscribed', followed by 'at ISO-TIME'"
    )


def validate(
    ctx: typer.Context,
    paths: Annotated[
        list[Path] | None,
        typer.Argument(metavar="PATH", help="Sequence files or folders (default: sequences/)."),
    ] = None,
) -> None:
    """Check sequence files and render every step in every locale."""
    settings = _settings(ctx)
    targets = [ctx.obj.folder / p for p in paths] if paths else [settings.sequences_dir]
    for target in targets:
        # A link counts even when it leads nowhere: the loader says why it cannot
        # be read (a symlink loop, a missing target) at file:1:1.
        try:
            found = target.exists() or target.is_symlink()
        except OSError as exc:  # a name too long for the file system, say
            raise fail(f"{target}: {exc.strerror or exc}") from None
        if not found:
            raise fail(f"{target}: no such file or folder")
    with errors():
        result = validate_paths(settings, targets)
    for diagnostic in result.diagnostics:
        out.print(safe(diagnostic), soft_wrap=True)
    for warning in result.warnings:
        where = f"{warning.file}:{warning.line}:{warning.column}: "
        out.print(
            Text.assemble(safe(where), ("warning: ", "yellow"), safe(warning.message)),
            soft_wrap=True,
        )
    if result.warnings:
        err.print(Text(f"{len(result.warnings)} warning(s)", style="yellow"))
    if result.diagnostics:
        err.print(f"[red]{len(result.diagnostics)} problem(s)[/] in {result.files} file(s)")
        raise typer.Exit(1)
    names = ", ".join(sorted(result.sequences)) or "none"
    out.print(Text.assemble(("ok", "green"), safe(f": {result.files} file(s), sequences: {names}")))


def _default_subscriber(loaded: LoadedSequence) -> Subscriber:
    """Who ``simulate`` follows without ``--data``: for a sequence an app event
    starts, its first sample (which declares the event's properties)."""
    seq = loaded.sequence
    if seq.trigger is not None and not seq.trigger.on_subscribe:
        with errors():
            samples = samples_for(seq, loaded.path)
        if samples:
            return samples[0]
    return Subscriber(
        email="subscriber@example.com",
        name="Sam Sample",
        tags=tuple(seq.trigger.tags) if seq.trigger else (),
    )


def _one_subscriber(data: Path | None, ctx: typer.Context) -> Subscriber | None:
    if data is None:
        return None
    try:
        subscribers = read_subscribers(ctx.obj.folder / data)
    except SequenceError as exc:
        raise fail(str(exc)) from exc
    if not subscribers:
        raise fail(f"{data}: no subscriber in the file")
    return subscribers[0]


def preview(
    ctx: typer.Context,
    sequence: Annotated[str, typer.Argument(metavar="SEQUENCE", help="Sequence id or file.")],
    step: Annotated[str | None, typer.Option(metavar="STEP", help="Only this step id.")] = None,
    locale: Annotated[
        str | None, typer.Option(metavar="LOCALE", help="Render in this locale.")
    ] = None,
    data: Annotated[
        Path | None, typer.Option(metavar="FILE.yaml", help="YAML file with subscriber data.")
    ] = None,
    out_dir: Annotated[
        Path, typer.Option("--out", metavar="FOLDER", help="Where to write the files.")
    ] = Path("preview"),
) -> None:
    """Write each email as .html, .txt and .eml, exactly as it will be sent.

    Without --locale or --data, in every language the sequence is written in."""
    if locale is not None:
        try:
            locale = check_locale(locale)  # the check subscribers' locales get
        except ValueError as exc:
            raise fail(f"--locale: {quoted(exc, locale)}", EXIT_CONFIGURATION) from exc
    settings = _settings(ctx)
    target = ctx.obj.folder / out_dir
    with errors():
        loaded = find_sequence(settings, ctx.obj.folder, sequence)
        subscriber = _one_subscriber(data, ctx)
    # A file where the folder should be, a name too long: said, never a traceback.
    if locale is not None:
        with errors():
            fallback = locale_fallback(settings, loaded, locale)
        if fallback is not None and fallback.lower() != locale.lower():
            err.print(
                Text.assemble(
                    ("warning: ", "yellow"),
                    safe(
                        f"no template of {loaded.sequence.id} is written in {locale!r}: "
                        f"subscribers in {locale} get the {fallback} emails, as shown"
                    ),
                ),
                soft_wrap=True,
            )
    # A file where the folder should be, a name too long: said, never a traceback.
    with errors(), file_errors(target, f"--out {clip_path(out_dir, 60)}"):
        if locale is None and subscriber is None:
            written = preview_locales(settings, loaded, target, step_id=step, now=ctx.obj.now())
        else:
            written = preview_sequence(
                settings,
                loaded,
                target,
                step_id=step,
                locale=locale,
                subscriber=subscriber,
                now=ctx.obj.now(),
            )
    for path in written:
        try:
            shown = path.relative_to(ctx.obj.folder)
        except ValueError:
            shown = path
        out.print(safe(shown))


def simulate_command(
    ctx: typer.Context,
    sequence: Annotated[str, typer.Argument(metavar="SEQUENCE", help="Sequence id or file.")],
    start: Annotated[
        str | None,
        typer.Option(metavar="ISO-TIME", help="Enrollment time, ISO-8601 (default: now)."),
    ] = None,
    tz: Annotated[
        str | None, typer.Option(metavar="ZONE", help="Subscriber's time zone (IANA name).")
    ] = None,
    data: Annotated[
        Path | None, typer.Option(metavar="FILE.yaml", help="YAML file with subscriber data.")
    ] = None,
    event: Annotated[
        list[str] | None,
        typer.Option(
            metavar="EVENT",
            help='What the subscriber does, e.g. "clicked three-models at 2026-12-01T10:00".',
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show when one subscriber would get each email, and why."""
    settings = _settings(ctx)
    with errors():
        loaded = find_sequence(settings, ctx.obj.folder, sequence)
    seq = loaded.sequence
    subscriber = _one_subscriber(data, ctx) or _default_subscriber(loaded)
    if tz is not None:
        try:
            check_timezone(tz)  # the check subscribers and sequence files get
        except ValueError as exc:
            raise fail(f"--tz: {quoted(exc, tz)}") from exc
        subscriber = replace(subscriber, timezone=tz)
    zone = subscriber_zone(subscriber, seq)  # the zone the simulation uses
    if start:
        begin = _parse_time(start, zone, "--start", EXIT_CONFIGURATION)
    else:
        now = ctx.obj.calendar_now()
        begin = _in_calendar(now, zone, f"--now {now.isoformat()}", EXIT_CONFIGURATION)
    written = [(text, parse_event(text, zone)) for text in event or []]
    events = [parsed for _, parsed in written]
    typos = [
        f"--event {text!r}: {problem}"
        for text, parsed in written
        if (problem := unknown_step(seq, parsed)) is not None
    ]
    if typos:
        raise fail("\n".join(typos))
    with errors():
        timeline = simulate(seq, subscriber, begin, events)
    for text, parsed in written:
        early = early_engagement(timeline, parsed)
        if early is not None:
            err.print(
                Text.assemble(("warning: ", "yellow"), safe(f"--event {text!r}: {early}")),
                soft_wrap=True,
            )
    if as_json:
        print_json([entry.as_json() for entry in timeline])
        return
    enrolled = begin.astimezone(zone)
    # Ids, addresses and reasons come from files and subscribers: safe(), not markup.
    # The subscriber's local time with UTC on the line below, so the reasons
    # keep most of an 80-column terminal; step ids and times never wrap.
    table = Table(
        title=safe(
            f"{seq.id}: {subscriber.email} ({zone.key}), enrolled {enrolled:%a %Y-%m-%d %H:%M}"
        ),
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("step", no_wrap=True)
    table.add_column("when (local, then UTC)", no_wrap=True)
    table.add_column("action", no_wrap=True)
    table.add_column("why")
    for entry in timeline:
        table.add_row(
            safe(entry.step or "-"),
            Text.assemble(
                f"{entry.at:%a %Y-%m-%d %H:%M %Z}\n",
                (f"{entry.at.astimezone(UTC):%Y-%m-%d %H:%M} UTC", "dim"),
            ),
            entry.action,
            safe(entry.reason),
        )
    out.print(table)


def schema() -> None:
    """Print the JSON Schema of the sequence file format."""
    print(sequence_schema_text(), end="")


VALIDATE_EXAMPLES = examples("nurture validate", "nurture validate sequences/sales-process.yaml")
PREVIEW_EXAMPLES = examples(
    "nurture preview sales-process --step welcome --locale en",
    "nurture preview sales-process --data karin.yaml --out /tmp/preview",
)
SIMULATE_EXAMPLES = examples(
    "nurture simulate sales-process --start 2026-11-27T15:30 --tz Europe/Stockholm",
    'nurture simulate sales-process --event "purchased sales-audit at 2026-12-04T12:00" --json',
)
SCHEMA_EXAMPLES = examples("nurture schema > schemas/sequence.schema.json")


def register_authoring_commands(app: typer.Typer) -> None:
    app.command("validate", epilog=VALIDATE_EXAMPLES)(validate)
    app.command("preview", epilog=PREVIEW_EXAMPLES)(preview)
    app.command("simulate", epilog=SIMULATE_EXAMPLES)(simulate_command)
    app.command("schema", epilog=SCHEMA_EXAMPLES)(schema)
