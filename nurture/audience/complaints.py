"""Spam complaints per sequence, and the pause when they are too many.

Gmail and Yahoo refuse bulk mail from senders whose spam-complaint rate stays
at or above 0.3 % (and ask them to keep it under 0.1 %). A sequence whose
**complaint rate** over the last :data:`WINDOW` — ``complained`` events that
occurred in the window divided by its ``sent`` ledger rows decided in the
window — reaches ``complaint_pause_rate``, over at least
``complaint_pause_min_sends`` sends, is paused the way a spent error budget
pauses one: its ``sequence_state`` row says ``paused`` with the reason, the
dispatcher sends nothing of it until ``nurture resume SEQUENCE`` (or the
problems page's "resume"), and the pause is logged once at WARNING.

The check runs when complaints are recorded (once per webhook post, for the
sequences the post's new complaints name), not per email: a rate only rises
when a complaint arrives.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.engine import Connection

from nurture.core.vocabulary import EventKind
from nurture.store import deliverability, queries

__all__ = [
    "WINDOW",
    "ComplaintLimit",
    "ComplaintRate",
    "check_complaint_rates",
    "complaint_rates",
    "over_limit",
    "pause_reason",
    "percent",
]

log = logging.getLogger("nurture.audience.complaints")

WINDOW = timedelta(days=7)


@dataclass(frozen=True)
class ComplaintLimit:
    """``complaint_pause_rate`` (a fraction; 0 turns the pause off) and
    ``complaint_pause_min_sends``."""

    rate: float = 0.003
    min_sends: int = 1000


@dataclass(frozen=True)
class ComplaintRate:
    """One sequence's sends and complaints over :data:`WINDOW`."""

    sequence_id: str
    sends: int
    complaints: int

    @property
    def rate(self) -> float:
        return self.complaints / self.sends if self.sends else 0.0


def percent(fraction: float) -> str:
    """``0.0042`` as ``0.42%``."""
    return f"{fraction * 100:.2f}%"


def over_limit(rate: ComplaintRate, limit: ComplaintLimit) -> bool:
    """Whether ``rate`` crosses ``limit`` (the rate reached, over enough sends)."""
    if limit.rate <= 0 or rate.sends <= 0 or rate.sends < limit.min_sends:
        return False
    # complaints / sends >= rate, without a division's rounding at the line.
    return rate.complaints >= limit.rate * rate.sends - 1e-9


def pause_reason(rate: ComplaintRate, limit: ComplaintLimit) -> str:
    days = WINDOW.days
    return (
        f"complaint rate {percent(rate.rate)} over {rate.sends:,} sends in {days} days "
        f"≥ {percent(limit.rate)}. Find out why people report it as spam, then "
        f"`nurture resume {rate.sequence_id}`."
    )


def complaint_rates(
    conn: Connection, now: datetime, sequence_ids: Collection[str] | None = None
) -> list[ComplaintRate]:
    """Sends and complaints over the window ending ``now``, per sequence (of
    ``sequence_ids`` when given), by sequence id."""
    since = now - WINDOW
    sends = deliverability.sent_counts(conn, since, sequence_ids)
    complaints = deliverability.event_counts(conn, since, (EventKind.COMPLAINED,), sequence_ids)
    by_sequence: dict[str, int] = {}
    for (sequence, _kind), count in complaints.items():
        if sequence is not None:
            by_sequence[sequence] = by_sequence.get(sequence, 0) + count
    names = sorted(set(sends) | set(by_sequence))
    return [ComplaintRate(name, sends.get(name, 0), by_sequence.get(name, 0)) for name in names]


def check_complaint_rates(
    conn: Connection,
    sequence_ids: Collection[str],
    limit: ComplaintLimit,
    now: datetime,
) -> list[str]:
    """Pause each of ``sequence_ids`` whose complaint rate crosses ``limit``;
    return those this call paused (one already paused is left as it is)."""
    if limit.rate <= 0 or not sequence_ids:
        return []
    paused: list[str] = []
    for rate in complaint_rates(conn, now, sequence_ids):
        if not over_limit(rate, limit):
            continue
        reason = pause_reason(rate, limit)
        if queries.pause_sequence(conn, rate.sequence_id, reason, now):
            log.warning("sequence %s paused by its complaint rate: %s", rate.sequence_id, reason)
            paused.append(rate.sequence_id)
    return paused
