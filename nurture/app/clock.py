"""Clocks. The core never reads the time; the shell gets it from one of these.

``nurture --now ISO`` (or ``NURTURE_NOW``) fixes the time for a whole process,
for tests, demos and replaying an incident ("what would have happened at
09:00?"). The demo runs the real dispatcher on an :class:`AcceleratedClock`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


def parse_instant(text: str) -> datetime:
    """An ISO-8601 instant with an offset or ``Z``; a naive time is refused."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"{text!r} is not an ISO-8601 time such as 2026-11-27T15:30:00Z") from exc
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone: add an offset such as +01:00 or Z")
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{text!r} is outside the years 1 to 9999 in UTC") from None


class FixedClock:
    """Always the same instant."""

    def __init__(self, instant: datetime) -> None:
        if instant.tzinfo is None:
            raise ValueError("FixedClock needs an aware datetime")
        self.instant = instant.astimezone(UTC)

    def __call__(self) -> datetime:
        return self.instant


class AcceleratedClock:
    """Starts at ``start`` and runs ``speed`` times faster than real time."""

    def __init__(
        self, start: datetime, speed: float, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        if start.tzinfo is None:
            raise ValueError("AcceleratedClock needs an aware start")
        self.start = start.astimezone(UTC)
        self.speed = speed
        self._monotonic = monotonic
        self._origin = monotonic()

    def restart(self) -> None:
        """Start counting from ``start`` again, from this moment."""
        self._origin = self._monotonic()

    def __call__(self) -> datetime:
        elapsed = (self._monotonic() - self._origin) * self.speed
        return self.start + timedelta(seconds=elapsed)
