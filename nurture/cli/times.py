"""Times typed on the command line (``--now``, ``events add --at``): read in
one place, with one set of bounds and one way of saying what is allowed.

Two ranges:

* :data:`CALENDAR_START` to :data:`CALENDAR_END`: what Python can write in UTC
  and in any zone (a day's margin at either end of its calendar), the range
  ``simulate`` takes (it handles steps due past the end itself). The global
  ``--now`` is read within it.
* :data:`EARLIEST` to :data:`LATEST`: what a command that stores, sends or
  plans works with. The engine adds days and years to "now" (a lease, a retry,
  a wait of five years, a time shown in a subscriber's zone); near year 9999
  that overflows, and a subscriber enrolled in year 9999 or in year 1 gets no
  email at all. They are the bounds SendGrid events and purchases get too
  (:data:`nurture.core.timing.EARLIEST` and ``LATEST``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from nurture.app.clock import parse_instant
from nurture.core.timing import EARLIEST, LATEST
from nurture.errors import clip

__all__ = [
    "CALENDAR_END",
    "CALENDAR_START",
    "check_time",
    "parse_time",
]

CALENDAR_START = datetime(1, 1, 2, tzinfo=UTC)
CALENDAR_END = datetime(9999, 12, 31, tzinfo=UTC)

# No ISO 8601 time is longer (2026-11-27T15:30:00.123456+01:00:00.000000 is 46).
_LONGEST = 64


def check_time(
    moment: datetime, shown: str, *, earliest: datetime = EARLIEST, latest: datetime = LATEST
) -> datetime:
    """``moment`` if ``earliest <= moment < latest``, else a :class:`ValueError`
    saying which days are allowed; ``shown`` is the value as the user typed it."""
    if earliest <= moment < latest:
        return moment
    first = f"{earliest:%Y-%m-%d}".zfill(10)
    last = f"{latest - timedelta(days=1):%Y-%m-%d}".zfill(10)
    where = "too early" if moment < earliest else "too late"
    raise ValueError(f"{clip(shown)!r} is {where}: give a time from {first} to {last} (UTC)")


def parse_time(text: str, *, earliest: datetime = EARLIEST, latest: datetime = LATEST) -> datetime:
    """An ISO 8601 time with an offset or ``Z``, within ``earliest`` and ``latest``,
    as an aware UTC datetime; else a one-line :class:`ValueError`."""
    if len(text.strip()) > _LONGEST:
        raise ValueError(
            f"{clip(text)!r} ({len(text):,} characters) is not an ISO-8601 time "
            "such as 2026-11-27T15:30:00Z"
        )
    moment = parse_instant(text)  # its ValueError says what is wrong
    return check_time(moment, text, earliest=earliest, latest=latest)
