"""Settling ``unknown`` sends: ``nurture sends resolve``.

An ``unknown`` send may or may not have reached the provider, so the
dispatcher never sends it again on its own (a duplicate is worse than a
question). An admin who has looked (the provider's activity feed, the
recipient) settles it, and the ledger keeps who did, why and when:

* ``as-sent``: the provider has it; the row becomes ``sent``;
* ``resend``: it never arrived; the row becomes ``retry``, due at once, and
  its enrollment is made due again (active again if it had completed past the
  step), so the next pass sends that step once more, under the same send id;
* ``give-up``: leave it; the row becomes ``failed``.

Only ``unknown`` rows can be settled; a resend also needs the step to be the
last one decided for its enrollment (the sequence's order is kept) and the
enrollment to be active or completed (not one the subscriber left). Every
check is made before anything is written, in one transaction: either every
send named is settled, or none is.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum

from sqlalchemy.engine import Connection, Engine

from nurture.audience.input import InvalidSubscriberError, check_text
from nurture.core.vocabulary import EnrollmentStatus, SendStatus
from nurture.errors import NurtureError
from nurture.store import resolve as store
from nurture.store.ids import parse_id
from nurture.store.resolve import UnknownSend

__all__ = [
    "WHY_LIMIT",
    "Resolution",
    "ResolveError",
    "resend_problem",
    "resolve_in",
    "resolve_sends",
]

WHY_LIMIT = 500
"""The most characters the reason an admin gives may have."""


class Resolution(StrEnum):
    """How an admin settles an ``unknown`` send."""

    AS_SENT = "as-sent"
    RESEND = "resend"
    GIVE_UP = "give-up"


_STATUS = {
    Resolution.AS_SENT: SendStatus.SENT,
    Resolution.RESEND: SendStatus.RETRY,
    Resolution.GIVE_UP: SendStatus.FAILED,
}


class ResolveError(NurtureError):
    """The sends named cannot be settled as asked; nothing was changed."""


def _targets(conn: Connection, refs: Sequence[str]) -> tuple[list[UnknownSend], list[str]]:
    """The sends named by ``refs`` (a ledger id, or the send id the provider
    got), and the refs that name none."""
    # A number no row can have is no send (the database would fail on it);
    # a send id the provider got is never all digits.
    ids = {number for ref in refs if (number := parse_id(ref)) is not None}
    keys = {ref for ref in refs if not ref.isdigit()}
    found = store.find_sends(conn, ids=ids, keys=keys)
    known = {str(send.id) for send in found} | {send.key for send in found}
    return found, [ref for ref in refs if ref not in known]


def resend_problem(conn: Connection, send: UnknownSend) -> str | None:
    """Why ``send`` cannot be sent again, or None when it can."""
    if store.later_decisions(conn, send):
        return (
            f"send {send.id} ({send.step_id}): a later step of this enrollment was already "
            "decided, so it cannot be sent again in order; use --as-sent or --give-up"
        )
    if send.enrollment_status not in (EnrollmentStatus.ACTIVE, EnrollmentStatus.COMPLETED):
        why = f" ({send.enrollment_reason})" if send.enrollment_reason else ""
        return f"send {send.id} ({send.step_id}): the enrollment is {send.enrollment_status}{why}"
    if send.enrollment_status == EnrollmentStatus.COMPLETED and store.active_enrollment_elsewhere(
        conn, send
    ):
        return (
            f"send {send.id} ({send.step_id}): the subscriber is enrolled in "
            f"{send.sequence_id} again; resend from that enrollment instead"
        )
    return None


def resolve_sends(
    engine: Engine,
    refs: Sequence[str],
    *,
    all_unknown: bool,
    resolution: Resolution,
    why: str,
    by: str,
    now: datetime,
) -> list[UnknownSend]:
    """Settle the ``unknown`` sends named by ``refs`` (ledger ids or send ids),
    or every ``unknown`` one with ``all_unknown``; return them as they were.

    Raises :class:`ResolveError` (and changes nothing) when a send is missing
    or not ``unknown``, when a resend cannot be done, or when ``why`` is empty,
    longer than :data:`WHY_LIMIT` or not one line of text.
    """
    with engine.begin() as conn:
        return resolve_in(
            conn, refs, all_unknown=all_unknown, resolution=resolution, why=why, by=by, now=now
        )


def resolve_in(
    conn: Connection,
    refs: Sequence[str],
    *,
    all_unknown: bool,
    resolution: Resolution,
    why: str,
    by: str,
    now: datetime,
) -> list[UnknownSend]:
    """:func:`resolve_sends` inside the caller's transaction (the admin pages
    record the admin's action in the same one); on :class:`ResolveError` the
    caller must roll back."""
    why = why.strip()
    if not why:
        raise ResolveError("say why (--why): it is kept with the send")
    try:
        # Kept with the send and in the admin's action record, and shown by the
        # pages and the CLI: one line of plain text, like the other notes.
        check_text("why", why, WHY_LIMIT)
    except InvalidSubscriberError as exc:
        raise ResolveError(f"{exc}: nothing was changed") from None
    if all_unknown == bool(refs):
        raise ResolveError("name the sends to resolve, or give --all-unknown (not both)")
    missing: list[str] = []
    if all_unknown:
        targets = store.unknown_sends(conn)
    else:
        targets, missing = _targets(conn, refs)
    problems = [f"no send {ref}" for ref in missing]
    problems += [
        f"send {send.id} ({send.step_id}) is {send.status}: only unknown sends can be resolved"
        for send in targets
        if send.status != SendStatus.UNKNOWN
    ]
    if resolution is Resolution.RESEND:
        problems += [
            problem
            for send in targets
            if send.status == SendStatus.UNKNOWN
            and (problem := resend_problem(conn, send)) is not None
        ]
    if problems:
        raise ResolveError("nothing was changed:\n" + "\n".join(problems))
    for send in targets:
        settled = store.settle_send(
            conn,
            send.id,
            status=_STATUS[resolution],
            resolution=f"{resolution.value}: {why}",
            by=by,
            now=now,
            next_attempt_at=now if resolution is Resolution.RESEND else None,
        )
        if not settled:
            raise ResolveError(f"send {send.id} was settled by someone else meanwhile")
        if resolution is Resolution.RESEND and not store.make_enrollment_due(
            conn, send.enrollment_id, now
        ):
            raise ResolveError(f"send {send.id}: its enrollment changed meanwhile")
    return targets
