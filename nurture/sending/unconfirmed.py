"""Closing the loop on ``unknown`` sends with the provider's events.

An ``unknown`` send may or may not have reached the provider. When SendGrid's
Event Webhook reports anything about it, the webhook settles it as ``sent``
(:mod:`nurture.audience.provider_events`). When it reports nothing, silence
means something only if the webhook is working: reconcile then retries the
send **once**, through the same path as ``nurture sends resolve --resend``
(the row becomes ``retry``, due at once, under the same send id, and its
enrollment due again), with a resolution saying so. A row settled once (by
reconcile or an admin) keeps its resolution and is never picked again, so an
email is retried at most once this way.

Silence proves nothing, and the row stays ``unknown`` for an admin, when the
webhook is not configured (the caller passes no window), when no provider
event was received within the window, or when none was received since the
send went unknown (the webhook may have been down meanwhile).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy.engine import Connection

from nurture.core.vocabulary import SendStatus
from nurture.sending.resolve import resend_problem
from nurture.store import provider_events as store
from nurture.store.resolve import UnknownSend, find_sends, make_enrollment_due, settle_send

__all__ = ["RETRIED_BY", "retry_unconfirmed"]

RETRIED_BY = "reconcile"
"""``resolved_by`` of a send reconcile retried."""

log = logging.getLogger("nurture.sending.unconfirmed")


def retry_unconfirmed(conn: Connection, now: datetime, window: timedelta) -> list[int]:
    """Retry (once) each ``unknown`` send that no event is about, ``window``
    after it went unknown, if the webhook has reported other sends since then
    and within ``window`` of ``now``. Returns the ledger ids retried."""
    last = store.last_delivery_event(conn)
    if last is None or last < now - window:
        return []
    retried: list[int] = []
    for send_id, since in store.unconfirmed_sends(conn, before=now - window):
        if last < since:
            continue  # nothing heard from the provider since this one went unknown
        found = find_sends(conn, ids=[send_id])
        if not found:
            continue
        problem = resend_problem(conn, found[0])
        if problem is not None:
            continue  # left unknown for an admin, who sees why with --resend
        if _retry(conn, found[0], now, window):
            retried.append(send_id)
    if retried:
        log.warning(
            "reconcile: %d unknown send(s) without a provider event retried once", len(retried)
        )
    return retried


def _retry(conn: Connection, send: UnknownSend, now: datetime, window: timedelta) -> bool:
    """Settle ``send`` as ``retry`` and make its enrollment due, both or neither."""
    savepoint = conn.begin_nested()
    settled = settle_send(
        conn,
        send.id,
        status=SendStatus.RETRY,
        resolution=(
            f"resend: no provider event within {int(window.total_seconds())} s although the "
            "event webhook reported other sends; retried once automatically, never again"
        ),
        by=RETRIED_BY,
        now=now,
        next_attempt_at=now,
    )
    if settled and make_enrollment_due(conn, send.enrollment_id, now):
        savepoint.commit()
        return True
    savepoint.rollback()
    return False
