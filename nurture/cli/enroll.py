"""``nurture enroll`` and ``nurture unenroll``, and what an enrollment will send.

:func:`first_email` and :func:`enrolled_lines` say when a new enrollment's
first email goes out, or why someone was enrolled nowhere; ``enroll`` prints
them, and so do ``subscribers add`` and ``subscribers import``
(:mod:`nurture.cli.subscribers`, :mod:`nurture.cli.csv_import`).

The commands get everything from ``ctx.obj`` (:class:`~nurture.cli.context.AppContext`).

Exit codes (:mod:`nurture.cli.console`): 0 done; 1 a refused input (no such
subscriber, unknown sequence, no active enrollment to end); 2 a configuration
error.

Addresses, ids and reasons come from outside: they are printed through
:func:`~nurture.cli.console.safe` (plain text, control characters escaped),
never as console markup.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer

from nurture.cli.console import errors, examples, fail, say
from nurture.cli.context import AppContext, app_context, store_session
from nurture.core.loader import LoadedSequence, Sequences
from nurture.core.simulation import simulate
from nurture.core.vocabulary import SubscriberStatus

# The store and nurture.audience (SQLAlchemy, SQLModel) are imported inside the
# functions that use them: see nurture.cli.main on why imports are deferred.
if TYPE_CHECKING:
    from sqlmodel import Session

    from nurture.store.tables import EnrollmentRow, SubscriberRow


def find_subscriber(session: Session, email: str) -> SubscriberRow:
    """The subscriber with this address; fails the command when there is none."""
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


def trigger_needs(sequences: Mapping[str, LoadedSequence]) -> str:
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


def enrolled_lines(
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
        lines.append(f"not enrolled: no trigger matched ({trigger_needs(sequences)})")
    lines.extend(
        f"not enrolled in {item.sequence_id}: {item.display} is broken (see the warning)"
        for item in broken
    )
    return lines


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
        row = find_subscriber(session, email)
        now = app.now()
        enrollment = enroll(session, row, loaded, now)
        session.commit()
        schedule = first_email(loaded, row, now)
    say(f"Enrolled {row.email} in {enrollment.sequence_id} (version {enrollment.sequence_version})")
    for line in schedule:
        say(f"  {line}")


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
        row = find_subscriber(session, email)
        unenroll(session, row, sequence, app.now(), reason=reason)
        session.commit()
    say(f"Unenrolled {row.email} from {sequence}")
