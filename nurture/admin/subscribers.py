"""What an admin does to one subscriber: find them, unsubscribe them, export
or erase their data, preview any step as they would get it.

The actions are the services the rest of nurture uses — leaving
(:mod:`nurture.audience.leaving`, as the unsubscribe links do) and personal
data (:mod:`nurture.audience.personal_data`, as ``nurture subscribers
export|erase`` do) — each recorded with who did it
(:func:`nurture.store.admins.add_action`) in the same transaction. An
erasure's record names the subscriber's id, never the erased address.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session

from nurture.audience.input import InvalidSubscriberError, normalise_email
from nurture.audience.leaving import Left, unsubscribe
from nurture.audience.personal_data import erase_personal_data, export_personal_data
from nurture.core.loader import LoadedSequence
from nurture.core.rendering import TemplateLibrary
from nurture.core.subscriber import Subscriber
from nurture.errors import NurtureError
from nurture.sending.composer import Composer
from nurture.store import admins
from nurture.store import explain as store
from nurture.store.db import session_factory
from nurture.store.explain import SubscriberHit
from nurture.store.tables import SubscriberRow

__all__ = [
    "PAGE_SIZE",
    "NoSuchSubscriber",
    "Preview",
    "SearchPage",
    "SubscriberActionError",
    "erase",
    "export",
    "preview_step",
    "search",
    "unsubscribe_subscriber",
]

PAGE_SIZE = 50
PREVIEW_KEY = "preview"
"""The send key a preview is rendered with (no ledger row has it)."""


class SubscriberActionError(NurtureError):
    """An action that cannot be done as asked (no such subscriber, the typed
    address does not match)."""


class NoSuchSubscriber(SubscriberActionError):
    """The subscriber is not (or no longer) stored."""


@dataclass(frozen=True)
class SearchPage:
    query: str
    hits: tuple[SubscriberHit, ...]
    next_after: int | None
    """The ``after`` of the next page, None on the last page."""


def search(engine: Engine, text: str, *, after: int = 0, limit: int = PAGE_SIZE) -> SearchPage:
    """Subscribers whose address or name starts with ``text`` (any case)."""
    text = text.strip()[:320]
    with engine.connect() as conn:
        hits = store.search(conn, text, after=max(after, 0), limit=limit + 1)
    more = len(hits) > limit
    hits = hits[:limit]
    return SearchPage(text, tuple(hits), hits[-1].id if more and hits else None)


def _subscriber(session: Session, subscriber_id: int) -> SubscriberRow:
    row = session.get(SubscriberRow, subscriber_id)
    if row is None:
        raise NoSuchSubscriber(f"no subscriber #{subscriber_id}")
    return row


def unsubscribe_subscriber(
    engine: Engine,
    subscriber_id: int,
    *,
    admin: str,
    now: datetime,
    sequence_id: str | None = None,
) -> Left:
    """Unsubscribe from one sequence or (None) from all email, as the links do;
    what changed."""
    with session_factory(engine)() as session:
        row = _subscriber(session, subscriber_id)
        left = unsubscribe(session, row, now=now, sequence_id=sequence_id, via="admin")
        admins.add_action(
            session,
            at=now,
            admin=admin,
            action="unsubscribe",
            target=f"subscriber #{subscriber_id}",
            detail={"sequence": sequence_id, "ended": list(left.ended), "changed": left.changed},
        )
        session.commit()
        return left


def export(engine: Engine, subscriber_id: int, *, admin: str, now: datetime) -> dict[str, Any]:
    """Everything held about the subscriber (``nurture subscribers export``);
    the access is recorded."""
    with session_factory(engine)() as session:
        row = _subscriber(session, subscriber_id)
        data = export_personal_data(session, row.email)
        if data is None:  # the row was just read: only a concurrent erasure
            raise NoSuchSubscriber(f"no subscriber #{subscriber_id}")
        admins.add_action(
            session, at=now, admin=admin, action="export", target=f"subscriber #{subscriber_id}"
        )
        session.commit()
        return data


def erase(
    engine: Engine, subscriber_id: int, typed: str, *, admin: str, now: datetime
) -> dict[str, int]:
    """Erase the subscriber's data, once ``typed`` is their address (any case);
    the rows deleted by kind."""
    with session_factory(engine)() as session:
        row = _subscriber(session, subscriber_id)
        try:
            confirmed = normalise_email(typed) == row.email
        except InvalidSubscriberError:
            confirmed = False
        if not confirmed:
            raise SubscriberActionError(
                "the address typed does not match this subscriber's: nothing was erased"
            )
        erased = erase_personal_data(session, row.email, now)
        admins.add_action(
            session,
            at=now,
            admin=admin,
            action="erase",
            target=f"subscriber #{subscriber_id}",
            detail={"counts": dict(erased.counts)},
        )
        session.commit()
        return dict(erased.counts)


@dataclass(frozen=True)
class Preview:
    sequence_id: str
    step_id: str
    subject: str = ""
    preheader: str = ""
    text: str = ""
    html: str = ""
    error: str | None = None
    steps: tuple[str, ...] = ()


def preview_step(
    engine: Engine,
    sequences: Mapping[str, LoadedSequence],
    library: Callable[[], TemplateLibrary],
    subscriber_id: int,
    sequence_id: str,
    step_id: str,
    *,
    base_url: str,
    secret_key: str,
    postal_address: str,
    unsubscribe_mailbox: str | None,
    now: datetime,
) -> Preview | None:
    """The step rendered for this subscriber as the composer renders it to
    send (links not tracked, as ``nurture preview``); None when there is no
    such subscriber. A render that fails is the preview's ``error``."""
    with engine.connect() as conn:
        found = store.subscriber_file(conn, subscriber_id, now)
    if found is None:
        return None
    loaded = sequences.get(sequence_id)
    if loaded is None:
        return Preview(sequence_id, step_id, error=f"no valid sequence {sequence_id!r}")
    steps = tuple(step.id for step in loaded.sequence.steps)
    try:
        step = loaded.sequence.step(step_id)
    except KeyError:
        known = ", ".join(steps)
        return Preview(
            sequence_id, step_id, error=f"no step {step_id!r} (steps: {known})", steps=steps
        )
    view = Subscriber.of(found.row)
    for enrollment in found.enrollments:  # the trigger's properties, as the dispatcher sees them
        if enrollment.sequence_id == sequence_id:
            view = replace(view, trigger_properties=enrollment.trigger_properties)
    composer = Composer(
        library,
        base_url=base_url,
        secret_key=secret_key,
        postal_address=postal_address,
        unsubscribe_mailbox=unsubscribe_mailbox,
    )
    try:
        composed = composer(loaded, step, view, PREVIEW_KEY, now)
        rendered = composed.rendered
        subject = composed.subject
    except Exception as exc:  # the marketer's template or the subscriber's data
        return Preview(sequence_id, step_id, error=f"could not render: {exc}", steps=steps)
    return Preview(
        sequence_id, step_id, subject, rendered.preheader, rendered.text, rendered.html,
        steps=steps,
    )  # fmt: skip
