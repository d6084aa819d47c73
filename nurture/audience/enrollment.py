"""Putting subscribers into sequences and taking them out.

**Enrollment on subscribe**: a subscriber is enrolled in every sequence whose
trigger is ``subscribed`` and whose tags they all carry, unless they were
*ever* enrolled in it. Someone who completed, exited or converted is not put
through the same sequence again because they were re-imported or re-tagged;
an admin can still do that on purpose with :func:`enroll`. Subscribers who are
not ``active`` (unconfirmed, unsubscribed, bounced ...) or whose address is on
the suppression list are never enrolled.

**A disabled sequence** (``enabled: false``, as ``nurture init`` writes its
example) enrolls nobody: its trigger is ignored and :func:`enroll` refuses it.

**A broken sequence file does not stop enrollment**: when the sequences
given carry ``broken`` files (:class:`~nurture.core.loader.Sequences`), a
subscriber is enrolled on the last good version of each, the one most
recently recorded in ``sequence_version`` (every dispatch pass and every
enrollment records the versions it meets), and a warning names the broken
file. With no stored version there is nothing to fall back on: the warning
says so and the subscriber is not enrolled in that sequence.

Every function flushes but does not commit: the caller owns the transaction.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlmodel import Session

from nurture.audience.input import normalise_tag
from nurture.audience.suppression import is_suppressed, suppressed
from nurture.core.loader import LoadedSequence, Positions, Sequences, sequence_from_definition
from nurture.core.model import Sequence as SequenceModel
from nurture.core.vocabulary import EnrollmentStatus, SubscriberStatus
from nurture.errors import NurtureError
from nurture.store import audience as store
from nurture.store import bulk_audience as bulk
from nurture.store.tables import EnrollmentRow, SubscriberRow
from nurture.store.versions import latest_version

log = logging.getLogger("nurture.audience.enrollment")

__all__ = [
    "EnrollmentError",
    "enroll",
    "enroll_matching",
    "enroll_new_where_triggered",
    "enroll_on_event",
    "enroll_where_triggered",
    "ensure_mailable",
    "triggered_by_event",
    "triggered_on_subscribe",
    "unenroll",
    "with_last_good",
]


class EnrollmentError(NurtureError):
    """An enrollment cannot be made or ended (already active, not enrolled, no consent)."""


def triggered_on_subscribe(loaded: LoadedSequence, tags: Iterable[str]) -> bool:
    """Whether subscribing with ``tags`` starts ``loaded`` (its trigger's tags all present).

    Both sides are compared as :func:`~nurture.audience.input.normalise_tag`
    makes them: a trigger written ``[B2B]`` matches the stored tag ``b2b``.
    """
    trigger = loaded.sequence.trigger
    if trigger is None or trigger.event != "subscribed":
        return False
    wanted = {normalise_tag(tag) for tag in trigger.tags}
    return wanted.issubset(normalise_tag(tag) for tag in tags)


def triggered_by_event(loaded: LoadedSequence, name: str, tags: Iterable[str]) -> bool:
    """Whether the app event ``name`` starts ``loaded`` for a subscriber with ``tags``
    (its trigger names the event, and its tags are all present)."""
    trigger = loaded.sequence.trigger
    if trigger is None or trigger.on_subscribe or trigger.event != name:
        return False
    wanted = {normalise_tag(tag) for tag in trigger.tags}
    return wanted.issubset(normalise_tag(tag) for tag in tags)


def _remember_versions(
    session: Session, sequences: Iterable[LoadedSequence], now: datetime
) -> None:
    """Record the definition of each version enrolled into (for ``nurture plan``)."""
    store.remember_versions(
        session,
        {(s.sequence.id, s.version): s.sequence.model_dump(mode="json") for s in sequences},
        now,
    )


def with_last_good(
    session: Session, sequences: Mapping[str, LoadedSequence]
) -> Mapping[str, LoadedSequence]:
    """``sequences`` plus, for each broken file, its last good stored version (see
    the module doc); a warning names each broken file."""
    broken = sequences.broken if isinstance(sequences, Sequences) else ()
    missing = [item for item in broken if item.sequence_id not in sequences]
    if not missing:
        return sequences
    result = dict(sequences)
    for item in missing:
        stored = latest_version(session, item.sequence_id)
        sequence: SequenceModel | None = None
        if stored is not None:
            try:
                sequence = sequence_from_definition(stored[1])
            except ValidationError:  # stored by an older release with another format
                sequence = None
        if stored is None or sequence is None or sequence.id != item.sequence_id:
            log.warning(
                "%s is broken and no earlier version of %r is stored: "
                "nobody is enrolled in it until it is fixed",
                item.display,
                item.sequence_id,
            )
            continue
        log.warning(
            "%s is broken: enrolling on the last good version %s of %r",
            item.display,
            stored[0],
            item.sequence_id,
        )
        result[item.sequence_id] = LoadedSequence(
            sequence, item.path, item.display, Positions(None), stored[0]
        )
    return result


def _enrollment_values(
    subscriber_id: int | None, loaded: LoadedSequence, now: datetime
) -> dict[str, Any]:
    assert subscriber_id is not None, "flush the subscriber before enrolling it"
    # next_due_at = now means "look at me now": the dispatcher's first pass
    # computes the real due time of the first step with the timing rules.
    return {
        "subscriber_id": subscriber_id,
        "sequence_id": loaded.sequence.id,
        "sequence_version": loaded.version,
        "position": None,
        "status": EnrollmentStatus.ACTIVE,
        "enrolled_at": now,
        "next_due_at": now,
        "updated_at": now,
    }


def _triggered_values(
    session: Session,
    candidates: Sequence[tuple[int | None, str, Sequence[str]]],
    sequences: Mapping[str, LoadedSequence],
    now: datetime,
    *,
    new: bool = False,
) -> list[dict[str, Any]]:
    """The enrollments on subscribe of ``candidates`` (id, address, tags of *active*
    subscribers), as column values; records the versions enrolled into.
    ``new``: the candidates were inserted in this transaction, so they were
    never enrolled anywhere (no need to ask)."""
    sequences = with_last_good(session, sequences)
    # Sorted by id: enrollments are created (and get their ids) in a stable order.
    auto = [
        sequences[key]
        for key in sorted(sequences)
        if sequences[key].sequence.trigger and sequences[key].sequence.enabled
    ]
    if not candidates or not auto:
        return []
    blocked = suppressed(session, (email for _, email, _ in candidates))
    eligible = [candidate for candidate in candidates if candidate[1] not in blocked]
    ever = (
        set()
        if new
        else store.enrolled_pairs(session, (subscriber_id for subscriber_id, _, _ in eligible))
    )
    starts: dict[tuple[str, ...], list[LoadedSequence]] = {}  # tags -> what they start
    values: list[dict[str, Any]] = []
    for subscriber_id, _, tags in eligible:
        key = tuple(tags)
        started = starts.get(key)
        if started is None:
            started = starts[key] = [
                loaded for loaded in auto if triggered_on_subscribe(loaded, key)
            ]
        values.extend(
            _enrollment_values(subscriber_id, loaded, now)
            for loaded in started
            if (subscriber_id, loaded.sequence.id) not in ever
        )
    if values:
        _remember_versions(session, auto, now)
    return values


def enroll_where_triggered(
    session: Session,
    subscribers: Sequence[SubscriberRow],
    sequences: Mapping[str, LoadedSequence],
    now: datetime,
) -> list[EnrollmentRow]:
    """Enroll each of ``subscribers`` where its tags trigger a sequence (see the module doc).

    A few statements for the whole batch, whatever its size.
    """
    candidates = [
        (row.id, row.email, row.tags)
        for row in subscribers
        if row.status == SubscriberStatus.ACTIVE
    ]
    values = _triggered_values(session, candidates, sequences, now)
    return store.insert_enrollments(session, values) if values else []


def enroll_new_where_triggered(
    session: Session,
    subscribers: Sequence[tuple[int, str, Sequence[str]]],
    sequences: Mapping[str, LoadedSequence],
    now: datetime,
) -> Counter[str]:
    """:func:`enroll_where_triggered` for *active* subscribers given as (id,
    address, tags) rather than rows (a bulk import's new subscribers); the
    number of enrollments made by sequence id."""
    values = _triggered_values(session, subscribers, sequences, now, new=True)
    bulk.insert_enrollment_values(session, values)
    return Counter(str(value["sequence_id"]) for value in values)


def enroll_on_event(
    session: Session,
    subscriber: SubscriberRow,
    name: str,
    properties: Mapping[str, Any],
    sequences: Mapping[str, LoadedSequence],
    now: datetime,
) -> list[EnrollmentRow]:
    """Enroll ``subscriber`` in every enabled sequence whose trigger is the app
    event ``name``, with ``properties`` kept as the enrollment's
    ``trigger_properties``.

    The rules of enrollment on subscribe hold: only an active subscriber whose
    address is not suppressed, and never in a sequence they were ever enrolled
    in (a second ``trial_started`` does not start the trial sequence again).
    """
    if subscriber.status != SubscriberStatus.ACTIVE:
        return []
    sequences = with_last_good(session, sequences)
    wanted = [
        sequences[key]
        for key in sorted(sequences)
        if sequences[key].sequence.enabled
        and triggered_by_event(sequences[key], name, subscriber.tags)
    ]
    if not wanted or is_suppressed(session, subscriber.email):
        return []
    ever = store.enrolled_pairs(session, [subscriber.id])
    values = [
        {**_enrollment_values(subscriber.id, loaded, now), "trigger_properties": dict(properties)}
        for loaded in wanted
        if (subscriber.id, loaded.sequence.id) not in ever
    ]
    if not values:
        return []
    _remember_versions(session, wanted, now)
    return store.insert_enrollments(session, values)


def enroll_matching(
    session: Session,
    subscriber: SubscriberRow,
    sequences: Mapping[str, LoadedSequence],
    now: datetime,
) -> list[EnrollmentRow]:
    """Enroll ``subscriber`` in every sequence its tags trigger (see the module doc).

    :func:`~nurture.audience.subscribers.add_subscriber` does this itself; call
    it after confirming a double opt-in (status ``unconfirmed`` -> ``active``)
    or after adding tags.
    """
    return enroll_where_triggered(session, [subscriber], sequences, now)


def ensure_mailable(session: Session, subscriber: SubscriberRow) -> None:
    """Raise :class:`EnrollmentError` unless ``subscriber`` is active and not suppressed."""
    if subscriber.status != SubscriberStatus.ACTIVE:
        raise EnrollmentError(
            f"{subscriber.email} is {subscriber.status}: only active subscribers are enrolled"
        )
    if is_suppressed(session, subscriber.email):
        raise EnrollmentError(f"{subscriber.email} is on the suppression list")


def enroll(
    session: Session, subscriber: SubscriberRow, loaded_sequence: LoadedSequence, now: datetime
) -> EnrollmentRow:
    """Enroll ``subscriber`` in ``loaded_sequence`` now, whatever its trigger says.

    An admin's explicit choice: a subscriber who completed or left the sequence
    before may be enrolled again. Refused when already active in it, and for
    subscribers who may not be mailed (not active, or suppressed).
    """
    sequence_id = loaded_sequence.sequence.id
    if not loaded_sequence.sequence.enabled:
        raise EnrollmentError(
            f"{sequence_id!r} is disabled ({loaded_sequence.display} says enabled: false): "
            "nobody is enrolled in it; set enabled: true to send it"
        )
    if store.active_enrollment(session, subscriber.id, sequence_id) is not None:
        raise EnrollmentError(f"{subscriber.email} is already enrolled in {sequence_id!r}")
    ensure_mailable(session, subscriber)
    values = _enrollment_values(subscriber.id, loaded_sequence, now)
    _remember_versions(session, [loaded_sequence], now)
    return store.add_enrollment(session, values)


def unenroll(
    session: Session,
    subscriber: SubscriberRow,
    sequence_id: str,
    now: datetime,
    reason: str = "unenrolled by admin",
) -> EnrollmentRow:
    """End the active enrollment: status ``exited`` with ``reason``, nothing more due."""
    enrollment = store.active_enrollment(session, subscriber.id, sequence_id)
    if enrollment is None:
        raise EnrollmentError(f"{subscriber.email} is not enrolled in {sequence_id!r}")
    enrollment.status = EnrollmentStatus.EXITED
    enrollment.status_reason = reason[:500]
    enrollment.next_due_at = None
    enrollment.updated_at = now
    session.flush()
    return enrollment
