"""The dashboard (``/admin`` and ``GET /admin/api/dashboard``): what went out,
what is waiting, whether the workers tick, and how close the list is to the
lines mailbox providers enforce.

Definitions (the README repeats them):

* **Today** is since midnight in the admin's zone, **this week** since Monday
  00:00 there; sends are ledger rows counted by the time they were decided
  (``send.decided_at``), by status.
* **The queue**: active enrollments due now (``next_due_at <= now``), and
  those due within the next hour.
* **Workers**: each worker's last tick and its age; a worker is *late* when
  it has not ticked for :func:`late_after` (five dispatch intervals, at least
  a minute).
* **Rates over the last 7 days**: the *bounce rate* is ``bounced`` events
  divided by ``sent`` sends, the *complaint rate* ``complained`` events
  divided by ``sent`` sends (events by when they occurred, sends by when they
  were decided). Both are drawn against Gmail's and Yahoo's spam-rate lines
  for bulk senders: :data:`WARNING_LINE` (0.1 %, keep under it) and
  :data:`LIMIT_LINE` (0.3 %, mail is refused at it); a rate at or above a
  line is a ``warning`` or a ``danger``.
* **Paused sequences** and why (the error budget, a failing ``when``, the
  complaint rate: :mod:`nurture.audience.complaints`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

from sqlalchemy.engine import Engine

from nurture.admin.users import admin_zone
from nurture.audience.complaints import WINDOW, ComplaintLimit
from nurture.core.vocabulary import EventKind, SendStatus
from nurture.store import deliverability, heartbeat
from nurture.store import problems as problem_store
from nurture.store.problems import PausedSequence

__all__ = [
    "LIMIT_LINE",
    "WARNING_LINE",
    "Dashboard",
    "Rate",
    "SequenceRates",
    "WorkerLine",
    "as_json",
    "late_after",
    "level",
    "load",
    "period_starts",
]

WARNING_LINE = 0.001
"""0.1 %: the spam rate Gmail and Yahoo ask bulk senders to stay under."""
LIMIT_LINE = 0.003
"""0.3 %: the spam rate at which they start refusing a bulk sender's mail."""
QUEUE_HORIZON = timedelta(hours=1)


def level(fraction: float) -> str:
    """``danger`` at or above :data:`LIMIT_LINE`, ``warning`` at or above
    :data:`WARNING_LINE`, else ``ok``."""
    if fraction >= LIMIT_LINE - 1e-12:
        return "danger"
    if fraction >= WARNING_LINE - 1e-12:
        return "warning"
    return "ok"


@dataclass(frozen=True)
class Rate:
    """``count`` events per ``sends`` sent."""

    count: int
    sends: int

    @property
    def fraction(self) -> float:
        return self.count / self.sends if self.sends else 0.0

    @property
    def level(self) -> str:
        return level(self.fraction)


@dataclass(frozen=True)
class SequenceRates:
    sequence_id: str
    sends: int
    bounces: Rate
    complaints: Rate


@dataclass(frozen=True)
class WorkerLine:
    worker_id: str
    last_tick_at: datetime
    age_seconds: float
    late: bool
    last_error: str | None


@dataclass(frozen=True)
class Dashboard:
    now: datetime
    zone: str
    today_since: datetime
    week_since: datetime
    today: dict[str, int]
    week: dict[str, int]
    due_now: int
    due_next_hour: int
    workers: list[WorkerLine]
    bounces: Rate
    complaints: Rate
    sequences: list[SequenceRates]
    paused: list[PausedSequence]
    complaint_pause_rate: float
    complaint_pause_min_sends: int

    @property
    def today_total(self) -> int:
        return sum(self.today.values())

    @property
    def week_total(self) -> int:
        return sum(self.week.values())


def period_starts(now: datetime, zone: str) -> tuple[datetime, datetime]:
    """Local midnight today and on this week's Monday in ``zone``, as aware datetimes."""
    tz = admin_zone(zone)
    local = now.astimezone(tz)
    today = datetime.combine(local.date(), time(0), tzinfo=tz)
    monday = datetime.combine(local.date() - timedelta(days=local.weekday()), time(0), tzinfo=tz)
    return today, monday


def late_after(dispatch_interval: float) -> timedelta:
    """How long without a tick makes a worker late."""
    return timedelta(seconds=max(60.0, 5 * dispatch_interval))


def _by_status(counts: dict[str, int]) -> dict[str, int]:
    """Every status, in the vocabulary's order (zeros included)."""
    return {status.value: counts.get(status.value, 0) for status in SendStatus}


def load(
    engine: Engine,
    *,
    now: datetime,
    zone: str,
    dispatch_interval: float,
    limit: ComplaintLimit,
) -> Dashboard:
    """The dashboard at ``now`` for an admin whose zone is ``zone`` (UTC when
    it is not an IANA zone)."""
    zone = admin_zone(zone).key
    today_since, week_since = period_starts(now, zone)
    since = now - WINDOW
    late = late_after(dispatch_interval)
    with engine.connect() as conn:
        until = now + timedelta(microseconds=1)
        today = deliverability.sends_by_status(conn, today_since, until)
        week = deliverability.sends_by_status(conn, week_since, until)
        due_now, due_soon = deliverability.queue_counts(conn, now, now + QUEUE_HORIZON)
        ticks = heartbeat.worker_ticks(conn)
        sent = deliverability.sent_counts(conn, since)
        events = deliverability.event_counts(conn, since, (EventKind.BOUNCED, EventKind.COMPLAINED))
        paused = problem_store.paused(conn)
    workers = [
        WorkerLine(
            tick.worker_id,
            tick.last_tick_at,
            max(0.0, (now - tick.last_tick_at).total_seconds()),
            now - tick.last_tick_at > late,
            tick.last_error,
        )
        for tick in ticks
    ]
    total_sent = sum(sent.values())

    def total(kind: EventKind) -> int:
        return sum(count for (_, k), count in events.items() if k == kind)

    names = sorted(set(sent) | {sequence for sequence, _ in events if sequence is not None})
    sequences = [
        SequenceRates(
            name,
            sent.get(name, 0),
            Rate(events.get((name, EventKind.BOUNCED), 0), sent.get(name, 0)),
            Rate(events.get((name, EventKind.COMPLAINED), 0), sent.get(name, 0)),
        )
        for name in names
    ]
    return Dashboard(
        now=now,
        zone=zone,
        today_since=today_since,
        week_since=week_since,
        today=_by_status(today),
        week=_by_status(week),
        due_now=due_now,
        due_next_hour=due_soon,
        workers=workers,
        bounces=Rate(total(EventKind.BOUNCED), total_sent),
        complaints=Rate(total(EventKind.COMPLAINED), total_sent),
        sequences=sequences,
        paused=paused,
        complaint_pause_rate=limit.rate,
        complaint_pause_min_sends=limit.min_sends,
    )


def as_json(board: Dashboard) -> dict[str, object]:
    """The dashboard as plain JSON values (times as ISO 8601 in UTC)."""

    def rate(value: Rate) -> dict[str, object]:
        return {
            "count": value.count,
            "sends": value.sends,
            "rate": value.fraction,
            "level": value.level,
        }

    return {
        "now": board.now.isoformat(),
        "zone": board.zone,
        "today": {"since": board.today_since.astimezone(UTC).isoformat(), "by_status": board.today},
        "week": {"since": board.week_since.astimezone(UTC).isoformat(), "by_status": board.week},
        "queue": {"due_now": board.due_now, "due_next_hour": board.due_next_hour},
        "workers": [
            {
                "worker_id": w.worker_id,
                "last_tick_at": w.last_tick_at.isoformat(),
                "age_seconds": w.age_seconds,
                "late": w.late,
                "last_error": w.last_error,
            }
            for w in board.workers
        ],
        "rates_7_days": {
            "warning_line": WARNING_LINE,
            "limit_line": LIMIT_LINE,
            "bounces": rate(board.bounces),
            "complaints": rate(board.complaints),
            "sequences": [
                {
                    "sequence_id": s.sequence_id,
                    "sends": s.sends,
                    "bounces": rate(s.bounces),
                    "complaints": rate(s.complaints),
                }
                for s in board.sequences
            ],
        },
        "paused": [
            {"sequence_id": p.sequence_id, "reason": p.reason, "since": p.since.isoformat()}
            for p in board.paused
        ],
        "complaint_pause": {
            "rate": board.complaint_pause_rate,
            "min_sends": board.complaint_pause_min_sends,
        },
    }
