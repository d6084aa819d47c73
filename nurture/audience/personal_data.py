"""A person's data: everything held about them (:func:`export_personal_data`,
the right of access) and its erasure (:func:`erase_personal_data`, the right
to erasure).

**Export**: the subscriber row (consent included), enrollments (with their
trigger properties), the ledger of sends (subjects and outcomes; bodies are
never stored), provider events, purchases, app events and any suppression
entry, as JSON-ready values.

**Erasure** deletes the subscriber row and everything about them: enrollments,
the ledger, provider events (theirs or about their sends) and app events.
Purchases are kept for the revenue figures but anonymised (no subscriber, no
send, no payload). The address itself is not kept: a suppression entry
``sha256:<hex of the normalised address>`` takes the place of any plain one, and
every suppression check matches that form too
(:func:`nurture.store.queries.suppressed_among`,
:func:`nurture.store.audience.suppressed_emails`). So an erased address that
comes back (``subscribers add``, an import, the API) may be stored again but is
never enrolled or mailed until an admin removes the suppression.

Every function flushes but does not commit: the caller owns the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlmodel import Session, SQLModel

from nurture.audience.input import normalise_email
from nurture.store import api as api_store
from nurture.store import audience as audience_store
from nurture.store import personal_data as store

__all__ = ["ERASURE_REASON", "Erasure", "erase_personal_data", "export_personal_data"]

ERASURE_REASON = "personal data erased on request"


def _plain(row: SQLModel, *, leave_out: tuple[str, ...] = ()) -> dict[str, Any]:
    values: dict[str, Any] = row.model_dump(mode="json")
    for name in leave_out:
        values.pop(name, None)
    return values


def export_personal_data(session: Session, email: str) -> dict[str, Any] | None:
    """Everything held about ``email`` (any case), or None when nothing is.

    Raises :class:`~nurture.audience.input.InvalidSubscriberError` for an
    address that is not one.
    """
    address = normalise_email(email)
    subscriber = audience_store.subscriber_by_email(session, address)
    suppressions = store.suppression_entries(session, address)
    if subscriber is None and not suppressions:
        return None
    data: dict[str, Any] = {
        "email": address,
        "subscriber": None,
        "enrollments": [],
        "sends": [],
        "events": [],
        "purchases": [],
        "app_events": [],
        "suppression": [_plain(row, leave_out=("id",)) for row in suppressions],
    }
    if subscriber is None:
        return data
    sid = subscriber.id
    data["subscriber"] = _plain(subscriber)
    data["enrollments"] = [
        _plain(row, leave_out=("claimed_by", "claimed_until"))
        for row in audience_store.enrollments_of(session, sid)
    ]
    data["sends"] = [
        _plain(row, leave_out=("lease_until",)) for row in audience_store.sends_of(session, sid)
    ]
    data["events"] = [_plain(row) for row in store.events_of(session, sid)]
    data["purchases"] = [_plain(row) for row in store.purchases_of(session, sid)]
    data["app_events"] = [_plain(row) for row in api_store.app_events_of(session, sid)]
    return data


@dataclass(frozen=True)
class Erasure:
    """What :func:`erase_personal_data` did: rows deleted (or anonymised) by kind."""

    address: str
    found: bool
    counts: dict[str, int] = field(default_factory=dict)


def erase_personal_data(session: Session, email: str, now: datetime) -> Erasure:
    """Erase what is held about ``email`` and keep it suppressed by its hash.

    Safe to repeat: a second erasure finds nothing more to delete.
    """
    address = normalise_email(email)
    subscriber = audience_store.subscriber_by_email(session, address)
    counts: dict[str, int] = {}
    if subscriber is not None and subscriber.id is not None:
        counts = store.erase_rows(session, subscriber.id)
    store.suppress_hashed(session, address, ERASURE_REASON, now)
    return Erasure(address, subscriber is not None, counts)
