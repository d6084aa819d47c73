"""When is a step due? Pure functions of the anchor time, the rules and a zone.

The rules, stated the way APScheduler states its triggers:

* ``wait`` counts from the *anchor*: the moment the previous step was due (sent
  or skipped), or the enrollment for the first step. An email that went out
  over 15 minutes late (an outage, a retry) anchors at when it went out
  (``EnrollmentState.anchor``).
* ``N minutes`` / ``N hours`` are elapsed time: ``4 hours`` after 22:00 is
  02:00, or 03:00 local on a spring-forward night.
* ``N days`` / ``N weeks`` are **local calendar days** in the subscriber's zone.
  Without ``at`` the local wall-clock time of the anchor is kept: ``2 days``
  after Friday 15:00 is Sunday 15:00 local, on either side of a DST change.
  With ``at`` the step is due at that local time on the N-th day after the
  anchor's local date (``2 days at 09:30`` after Monday 23:00 is Wednesday
  09:30), even when that is less than 48 elapsed hours.
* ``at`` with a minute or hour wait means "the first ``at`` at or after the
  wait has elapsed" (``wait: 0, at: 09:30`` enrolled at 10:00 is 09:30 the next
  day).
* A local time that does not exist (the spring-forward gap) moves forward by
  the length of the gap: 02:30 on the last Sunday of March in Stockholm is
  03:30 CEST. An ambiguous local time (fall back) takes the first occurrence
  (``fold=0``), i.e. the summer-time one.
* The send window is ``[start, end)`` in local time on its allowed weekdays. A
  time before ``start`` moves to ``start`` the same day; at or after ``end`` it
  moves to ``start`` on the next allowed day. A step with ``at`` never moves
  to the window's start: on a disallowed day it moves to the next allowed day
  at its ``at`` time (``at`` is validated to lie inside the window).
* Skip dates and public holidays (``holidays`` package, by country code) are
  disallowed days, exactly like weekdays outside the window.

Every function refuses naive datetimes: a time without a zone is a bug. Due
times are returned in UTC: Python compares and subtracts two datetimes that
share a ``tzinfo`` by wall clock, ignoring DST, so local times are only used to
apply local rules, never for arithmetic.

A due time past the last day Python's calendar holds (9999-12-31) is
:data:`NEVER`, never an ``OverflowError``: the dispatcher plans a whole batch
at once, and one subscriber's sequence of long waits (or a clock set near
year 9999) must not fail everyone else's. ``NEVER`` is later than any real
time, so the decision function answers "wait" and the enrollment stays parked;
``simulate`` ends its timeline there with :data:`BEYOND_CALENDAR`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays as holidays_lib

from nurture.core.model import Step
from nurture.core.schedule import SendWindow, SkipDates
from nurture.errors import TimingError

# The longest search for an allowed day. A window allowing one weekday plus a
# run of holidays needs a few weeks at most; two years means the rules allow no
# day at all, which is an error, not a reason to loop forever.
_MAX_DAYS = 2 * 366
_MIDNIGHT = time(0, 0)

NEVER = datetime.max.replace(tzinfo=UTC)
"""The due time of a step that falls after 9999-12-31 (UTC or local): later than
any time that can be written, so waiting for it is waiting forever."""

BEYOND_CALENDAR = "beyond the calendar (year 9999)"
"""Why a step is due :data:`NEVER`, as ``simulate`` says it."""

EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
"""The earliest time nurture stores as something that happened: a purchase,
a provider event's timestamp, a ``--now`` that sends. Before it is a mistake
(and near ``datetime.min`` the arithmetic on it, an attribution window, a
lease, would overflow)."""
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
"""Times from this on are not stored or sent at either: the engine adds days
and years to "now" (a lease, a retry, a wait of five years, a time shown in a
subscriber's zone), and near year 9999 that overflows."""


def require_aware(moment: datetime, name: str = "datetime") -> datetime:
    """Return ``moment`` if it carries a time zone, else raise TimingError."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise TimingError(f"{name} {moment.isoformat()} is naive: give it a time zone")
    return moment


def resolve_local(day: date, clock: time, zone: ZoneInfo) -> datetime:
    """The instant when local wall-clock ``clock`` on ``day`` happens in ``zone``.

    Gap (spring forward): shifted later by the gap's length. Overlap (fall
    back): the first occurrence. The result is normalised, in ``zone``.
    """
    naive = datetime.combine(day, clock)
    # fold=0 reads a gap time with the offset in force before the transition,
    # which lands after the gap by exactly its length once normalised through
    # UTC; for an overlap fold=0 is the first (earlier) occurrence.
    return naive.replace(tzinfo=zone, fold=0).astimezone(UTC).astimezone(zone)


@lru_cache(maxsize=64)
def _holiday_calendar(code: str) -> holidays_lib.HolidayBase:
    country, _, subdiv = code.partition("-")
    return holidays_lib.country_holidays(country, subdiv=subdiv or None)


@dataclass(frozen=True)
class Calendar:
    """Which local days and hours a step may be sent in.

    Answers per day are memoised: the dispatcher asks about the same few days
    for thousands of subscribers, and a holiday lookup is not free.
    """

    window: SendWindow | None = None
    skip_dates: SkipDates | None = None
    _blocked: dict[date, str | None] = field(
        default_factory=dict, compare=False, hash=False, repr=False
    )

    def day_blocked(self, day: date) -> str | None:
        """Why ``day`` is not a sending day, or None when it is one."""
        try:
            return self._blocked[day]
        except KeyError:
            pass
        reason = self._why_blocked(day)
        if len(self._blocked) > 4096:
            self._blocked.clear()
        self._blocked[day] = reason
        return reason

    def _why_blocked(self, day: date) -> str | None:
        if self.window is not None and day.weekday() not in self.window.weekday_numbers():
            return f"{day:%a} is not a sending day"
        if self.skip_dates is not None:
            if day in self.skip_dates.dates:
                return f"{day.isoformat()} is a skip date"
            if self.skip_dates.holidays is not None:
                name = _holiday_calendar(self.skip_dates.holidays).get(day)
                if name is not None:
                    return f"{day.isoformat()} is a holiday ({name})"
        return None

    def contains(self, moment: datetime, zone: ZoneInfo) -> bool:
        """Whether an email may go out at ``moment``; never at a moment whose
        local time is past the calendar's end (nothing can be sent then)."""
        try:
            local = require_aware(moment, "moment").astimezone(zone)
        except OverflowError:
            return False
        if self.day_blocked(local.date()) is not None:
            return False
        return self.window is None or self.window.contains(local.time())


@dataclass(frozen=True)
class DueTime:
    """A due time and the reasons it was moved (for simulate and the admin's "why").

    The explanation is formatted only when asked for: the dispatcher computes
    thousands of due times a second and reads none of them.
    """

    at: datetime
    moved_from: datetime | None = None  # local time before the window and skip rules
    reasons: tuple[str, ...] = field(default=())

    @property
    def never(self) -> bool:
        """Whether the step is due :data:`NEVER` (past the end of the calendar)."""
        return self.at >= NEVER

    @property
    def notes(self) -> tuple[str, ...]:
        if self.moved_from is None or self.never:
            return ()
        zone = self.moved_from.tzinfo
        result = self.at.astimezone(zone)
        why = "; ".join(dict.fromkeys(self.reasons))
        start = self.moved_from
        return (f"moved from {start:%a %Y-%m-%d %H:%M} to {result:%a %Y-%m-%d %H:%M}: {why}",)


def next_allowed(
    earliest: datetime, zone: ZoneInfo, calendar: Calendar, at: time | None = None
) -> DueTime:
    """The first allowed moment (UTC) at or after ``earliest``.

    With ``at``, only that local time of day is allowed (``earliest`` is then
    expected to fall on it, as :func:`due_at` arranges). When the moment had to
    move, the single note says from where to where, and why. :data:`NEVER`
    when ``earliest`` is, or when the search runs off the calendar's end.
    """
    require_aware(earliest, "earliest")
    if earliest >= NEVER:
        return DueTime(NEVER)
    try:
        return _next_allowed(earliest, zone, calendar, at)
    except OverflowError:  # 9999-12-31 is blocked or past: no later day exists
        return DueTime(NEVER)


def _next_allowed(
    earliest: datetime, zone: ZoneInfo, calendar: Calendar, at: time | None
) -> DueTime:
    """:func:`next_allowed` without its guard against the calendar's end."""
    reasons: list[str] = []
    start = moment = earliest.astimezone(zone)
    window = calendar.window

    def found(result: datetime) -> DueTime:
        if result == start:
            return DueTime(result.astimezone(UTC))
        return DueTime(result.astimezone(UTC), start, tuple(reasons))

    for _ in range(_MAX_DAYS):
        local = moment.astimezone(zone)
        day = local.date()
        blocked = calendar.day_blocked(day)
        if blocked is None and at is not None:
            if window is None or window.contains(local.time()):
                return found(local)
            blocked = f"{local:%H:%M} is outside the send window"
        if blocked is None and window is not None:
            if local.time() < window.start:
                reasons.append(f"the window opens at {window.start:%H:%M}")
                moment = resolve_local(day, window.start, zone)
                # A window start inside a DST gap can shift past the window's
                # end; the next pass checks the shifted time again.
                if window.contains(moment.time()) and moment.date() == day:
                    return found(moment)
                blocked = f"{window.start:%H:%M} does not exist on {day.isoformat()}"
            elif local.time() >= window.end:
                blocked = f"the window closes at {window.end:%H:%M}"
            else:
                return found(local)
        elif blocked is None:
            return found(local)
        reasons.append(blocked)
        clock = at if at is not None else (window.start if window is not None else _MIDNIGHT)
        moment = resolve_local(day + timedelta(days=1), clock, zone)
    raise TimingError(f"no allowed sending day within {_MAX_DAYS} days of {earliest.isoformat()}")


def earliest_after_wait(step: Step, anchor: datetime, zone: ZoneInfo) -> datetime:
    """The earliest moment (UTC) the step's ``wait`` and ``at`` allow, before the
    window; :data:`NEVER` when that is past the calendar's end (a long wait
    after an anchor late in year 9999, or many long waits in a row)."""
    require_aware(anchor, "anchor")
    if anchor >= NEVER:
        return NEVER
    try:
        return _earliest_after_wait(step, anchor, zone)
    except OverflowError:
        return NEVER


def _earliest_after_wait(step: Step, anchor: datetime, zone: ZoneInfo) -> datetime:
    local = anchor.astimezone(zone)
    days = step.wait.calendar_days
    if days:
        target_day = local.date() + timedelta(days=days)
        clock = step.at or local.time()
        return resolve_local(target_day, clock, zone).astimezone(UTC)
    earliest = anchor.astimezone(UTC) + step.wait.elapsed  # elapsed time: UTC arithmetic
    if step.at is None:
        return earliest
    day = earliest.astimezone(zone).date()
    candidate = resolve_local(day, step.at, zone).astimezone(UTC)
    if candidate < earliest:
        candidate = resolve_local(day + timedelta(days=1), step.at, zone).astimezone(UTC)
    return candidate


def due_at(step: Step, anchor: datetime, zone: ZoneInfo, calendar: Calendar) -> DueTime:
    """When ``step`` is due (UTC), given the anchor (previous due time or enrollment)."""
    earliest = earliest_after_wait(step, anchor, zone)
    return next_allowed(earliest, zone, calendar, step.at)
