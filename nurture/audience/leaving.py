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
from nurture.core.vocabulary import EnrollmentStatus, EventKind, SubscriberStatus
from nurture.store import leaving as store
from nurture.store.tables import SubscriberRow, SuppressionRow

__all__ = [
    "UNSUBSCRIBE_SOURCE",
    "Block",
    "Left",
    "block",
    "block_all",
    "resubscribe",
    "unsubscribe",
]

UNSUBSCRIBE_SOURCE = "unsubscribe"
"""The suppression source of an unsubscribe: the only one a resubscribe lifts."""

_MAILABLE = (SubscriberStatus.ACTIVE, SubscriberStatus.UNCONFIRMED)


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
    if sequence_id is not None:
        ended = store.end_enrollments(
            session,
            subscriber.id,
            sequence_ids=[sequence_id],
            status=EnrollmentStatus.EXITED,
            reason=f"unsubscribed from this sequence ({via})",
            now=now,
        )
        left = Left(ended=tuple(ended))
    else:
        ended = store.end_enrollments(
            session,
            subscriber.id,
            sequence_ids=None,
            status=EnrollmentStatus.EXITED,
            reason=f"unsubscribed ({via})",
            now=now,
        )
        status_changed = subscriber.status in _MAILABLE
        if status_changed:
            subscriber.status = SubscriberStatus.UNSUBSCRIBED
            subscriber.status_reason = f"unsubscribed ({via})"
            subscriber.updated_at = now
        newly = store.suppress(
            session, subscriber.email, reason=f"unsubscribed ({via})", source=UNSUBSCRIBE_SOURCE,
            now=now,
        )  # fmt: skip
        left = Left(ended=tuple(ended), status_changed=status_changed, suppressed=newly)
    if left.changed:
        session.flush()
        record_event(
            session.connection(),
            kind=EventKind.UNSUBSCRIBED,
            subscriber_id=subscriber.id,
            sequence_id=sequence_id,
            occurred_at=now,
            received_at=now,
            payload={"via": via, "scope": "sequence" if sequence_id else "all", **(payload or {})},
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
    return block_all(session, [Block(email, subscriber, status, reason, now)], source=source)[0]


def block_all(session: Session, blocks: Sequence[Block], *, source: str) -> list[Left]:
    """:func:`block` for each of ``blocks`` in turn, in a few queries for all
    of them (a webhook post can bounce thousands of addresses): the same
    changes, and the same :class:`Left` for each, as one call per block."""
    subscriber_ids = [
        b.subscriber.id for b in blocks if b.subscriber and b.subscriber.id is not None
    ]
    live = store.active_enrollments(session, subscriber_ids)
    sources = store.suppression_sources(session, {b.email for b in blocks})
    endings: list[store.Ending] = []
    suppressions: list[SuppressionRow] = []
    results: list[Left] = []
    for item in blocks:
        ended: list[str] = []
        status_changed = False
        subscriber = item.subscriber
        if subscriber is not None and subscriber.id is not None:
            rows = live.pop(subscriber.id, [])
            endings += [
                store.Ending(enrollment_id, EnrollmentStatus.EXITED, item.reason, item.now)
                for enrollment_id, _ in rows
            ]
            ended = sorted({sequence_id for _, sequence_id in rows})
            if subscriber.status in _MAILABLE or (
                subscriber.status == SubscriberStatus.UNSUBSCRIBED
                and item.status != subscriber.status
            ):
                status_changed = subscriber.status != item.status
                subscriber.status = item.status
                subscriber.status_reason = item.reason[:500]
                subscriber.updated_at = item.now
        newly = item.email not in sources
        if newly:
            sources[item.email] = source
            suppressions.append(
                SuppressionRow(
                    email=item.email, reason=item.reason[:500], source=source[:50],
                    created_at=item.now,
                )
            )  # fmt: skip
        results.append(Left(ended=tuple(ended), status_changed=status_changed, suppressed=newly))
    store.end_enrollment_ids(session, endings)
    store.add_suppressions(session, suppressions)
    session.flush()
    return results


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
    if subscriber.status not in (SubscriberStatus.UNSUBSCRIBED, *_MAILABLE):
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
