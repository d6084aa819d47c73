"""Leaving: unsubscribing (from one sequence or from all email), being blocked
by the provider (a bounce, a complaint), and coming back.

One service for every way out — the one-click link, the preferences page, the
provider's events and the CLI — so each ends enrollments, cancels what was
waiting to be sent and suppresses the address the same way:

* **Unsubscribe from all email**: the subscriber becomes ``unsubscribed``,
  every active enrollment ends (``exited``, with the reason), ledger rows not
  yet handed to the provider (``queued``, ``retry``) become ``skipped``, and
  the normalised address goes on the suppression list (source
  ``unsubscribe``). An email already reserved is in flight and is not recalled;
  the dispatcher re-reads suppressions before it reserves the next one.
* **Leave one sequence**: only that enrollment ends; the address stays mailable.
* **Blocked** (hard bounce, dropped for a bad address, spam complaint): as
  unsubscribing from all, with the status ``bounced``/``complained``/``invalid``
  and the provider as the suppression's source.
* **Resubscribe** lifts a suppression that came from an unsubscribe (never one
  from a bounce or a complaint) and records fresh consent.

Repeating any of them changes nothing and records nothing new. Every function
flushes but does not commit: the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session

from nurture.audience.events import record_event
from nurture.core.vocabulary import LEAVABLE, EnrollmentStatus, EventKind, SubscriberStatus
from nurture.store import leaving as store
from nurture.store.tables import SubscriberRow, SuppressionRow

__all__ = [
    "UNSUBSCRIBE_SOURCE",
    "Block",
    "Left",
    "Unsubscribe",
    "block",
    "block_all",
    "leave_all",
    "resubscribable",
    "resubscribe",
    "unsubscribe",
]

UNSUBSCRIBE_SOURCE = "unsubscribe"
"""The suppression source of an unsubscribe: the only one a resubscribe lifts."""


@dataclass(frozen=True)
class Left:
    """What a call changed: the sequences whose enrollment ended, whether the
    subscriber's status changed, whether the address was newly suppressed."""

    ended: tuple[str, ...] = ()
    status_changed: bool = False
    suppressed: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.ended) or self.status_changed or self.suppressed


def unsubscribe(
    session: Session,
    subscriber: SubscriberRow,
    *,
    now: datetime,
    sequence_id: str | None = None,
    via: str = "link",
    payload: dict[str, Any] | None = None,
) -> Left:
    """Unsubscribe ``subscriber`` from ``sequence_id``, or (None) from all email.

    ``via`` says how (``link``, ``one-click``, ``preferences``, ``sendgrid``,
    ``admin`` ...): it is in the enrollments' reason and the event's payload.
    """
    assert subscriber.id is not None
    if sequence_id is None:
        return leave_all(session, [Unsubscribe(subscriber, now, via, payload)], source="")[0]
    ended = store.end_enrollments(
        session,
        subscriber.id,
        sequence_ids=[sequence_id],
        status=EnrollmentStatus.EXITED,
        reason=f"unsubscribed from this sequence ({via})",
        now=now,
    )
    left = Left(ended=tuple(ended))
    if left.changed:
        session.flush()
        record_event(
            session.connection(),
            kind=EventKind.UNSUBSCRIBED,
            subscriber_id=subscriber.id,
            sequence_id=sequence_id,
            occurred_at=now,
            received_at=now,
            payload={"via": via, "scope": "sequence", **(payload or {})},
        )
    return left


@dataclass(frozen=True)
class Block:
    """One address to stop mailing for good (see :func:`block`)."""

    email: str
    subscriber: SubscriberRow | None
    status: SubscriberStatus
    reason: str
    now: datetime


@dataclass(frozen=True)
class Unsubscribe:
    """One subscriber leaving all email (see :func:`unsubscribe`)."""

    subscriber: SubscriberRow
    now: datetime
    via: str
    payload: dict[str, Any] | None = None


def block(
    session: Session,
    email: str,
    subscriber: SubscriberRow | None,
    *,
    status: SubscriberStatus,
    reason: str,
    source: str,
    now: datetime,
) -> Left:
    """Stop mailing ``email`` (normalised) for good: a hard bounce, an address
    the provider dropped, a spam complaint. ``subscriber`` may be None (an
    event about an address we no longer hold): the address is still suppressed."""
    return leave_all(session, [Block(email, subscriber, status, reason, now)], source=source)[0]


def block_all(session: Session, blocks: Sequence[Block], *, source: str) -> list[Left]:
    """:func:`block` for each of ``blocks``: :func:`leave_all` of them."""
    return leave_all(session, blocks, source=source)


def leave_all(session: Session, items: Sequence[Block | Unsubscribe], *, source: str) -> list[Left]:
    """:func:`block` (with ``source``) or :func:`unsubscribe` from all email for
    each of ``items`` in turn, in a few queries for all of them (a webhook post
    can bounce or unsubscribe thousands of addresses): the same changes, and
    the same :class:`Left` for each, as one call per item."""
    subscribers = [i.subscriber for i in items if i.subscriber is not None]
    live = store.active_enrollments(session, [s.id for s in subscribers if s.id is not None])
    sources = store.suppression_sources(session, {_email(item) for item in items})
    endings: list[store.Ending] = []
    suppressions: list[SuppressionRow] = []
    unsubscribed: list[Unsubscribe] = []
    results: list[Left] = []
    for item in items:
        if isinstance(item, Block):
            reason, status, suppress_as = item.reason, item.status, source
        else:
            reason = f"unsubscribed ({item.via})"
            status, suppress_as = SubscriberStatus.UNSUBSCRIBED, UNSUBSCRIBE_SOURCE
        ended: list[str] = []
        status_changed = False
        subscriber = item.subscriber
        if subscriber is not None and subscriber.id is not None:
            rows = live.pop(subscriber.id, [])
            endings += [
                store.Ending(enrollment_id, EnrollmentStatus.EXITED, reason, item.now)
                for enrollment_id, _ in rows
            ]
            ended = sorted({sequence_id for _, sequence_id in rows})
            # An unsubscribe changes only a mailable subscriber; a block also
            # one who unsubscribed (the bounce says more about the address).
            if subscriber.status in LEAVABLE or (
                isinstance(item, Block)
                and subscriber.status == SubscriberStatus.UNSUBSCRIBED
                and status != subscriber.status
            ):
                status_changed = subscriber.status != status
                subscriber.status = status
                subscriber.status_reason = reason[:500]
                subscriber.updated_at = item.now
        email = _email(item)
        newly = email not in sources
        if newly:
            sources[email] = suppress_as
            suppressions.append(
                SuppressionRow(
                    email=email, reason=reason[:500], source=suppress_as[:50],
                    created_at=item.now,
                )
            )  # fmt: skip
        left = Left(ended=tuple(ended), status_changed=status_changed, suppressed=newly)
        if isinstance(item, Unsubscribe) and left.changed:
            unsubscribed.append(item)
        results.append(left)
    store.end_enrollment_ids(session, endings)
    store.add_suppressions(session, suppressions)
    session.flush()
    for leaving in unsubscribed:
        record_event(
            session.connection(),
            kind=EventKind.UNSUBSCRIBED,
            subscriber_id=leaving.subscriber.id,
            sequence_id=None,
            occurred_at=leaving.now,
            received_at=leaving.now,
            payload={"via": leaving.via, "scope": "all", **(leaving.payload or {})},
        )
    return results


def _email(item: Block | Unsubscribe) -> str:
    return item.email if isinstance(item, Block) else item.subscriber.email


def resubscribable(session: Session, subscriber: SubscriberRow) -> bool:
    """Whether :func:`resubscribe` would make ``subscriber`` active again:
    unsubscribed, and suppressed by nothing but their own unsubscribe."""
    if subscriber.status != SubscriberStatus.UNSUBSCRIBED:
        return False
    return store.suppression_source(session, subscriber.email) in (None, UNSUBSCRIBE_SOURCE)


def resubscribe(
    session: Session,
    subscriber: SubscriberRow,
    *,
    now: datetime,
    consent: dict[str, Any],
    via: str = "preferences",
) -> bool:
    """Make an unsubscribed ``subscriber`` active again, with fresh ``consent``
    (the subscriber columns :meth:`Consent.columns` and the form's fill in).

    False, changing nothing, when the address is suppressed for another reason
    than an unsubscribe (a bounce or a complaint is not undone by a click) or
    the subscriber is not unsubscribed.
    """
    source = store.suppression_source(session, subscriber.email)
    if source is not None and source != UNSUBSCRIBE_SOURCE:
        return False
    if subscriber.status not in (SubscriberStatus.UNSUBSCRIBED, *LEAVABLE):
        return False
    if subscriber.status == SubscriberStatus.ACTIVE and source is None:
        return False  # nothing to undo
    store.lift_suppression(session, subscriber.email, sources=[UNSUBSCRIBE_SOURCE])
    subscriber.status = SubscriberStatus.ACTIVE
    subscriber.status_reason = f"resubscribed ({via})"
    subscriber.updated_at = now
    for key, value in consent.items():
        setattr(subscriber, key, value)
    session.flush()
    record_event(
        session.connection(),
        kind=EventKind.SUBSCRIBED,
        subscriber_id=subscriber.id,
        occurred_at=now,
        received_at=now,
        payload={"via": via},
    )
    return True
