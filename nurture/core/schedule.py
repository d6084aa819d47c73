"""When a step may go out, as a sequence file writes it: the wait, the time of
day, the send window and the skip dates (public holidays and explicit dates).

These are the rules of the file format that :mod:`nurture.core.timing` turns
into due times; :mod:`nurture.core.model` builds steps and sequences out of
them. Parsing the written forms (``'2 days'``, ``'4h'``, ``"09:30"``) lives
here with the models that hold them.
"""

from __future__ import annotations

import re
from datetime import date, time, timedelta
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]

_WAIT_UNITS = {
    "m": "minutes", "min": "minutes", "mins": "minutes", "minute": "minutes",
    "minutes": "minutes",
    "h": "hours", "hour": "hours", "hours": "hours",
    "d": "days", "day": "days", "days": "days",
    "w": "weeks", "week": "weeks", "weeks": "weeks",
}  # fmt: skip
_UNIT_MINUTES = {"minutes": 1, "hours": 60, "days": 24 * 60, "weeks": 7 * 24 * 60}
MAX_WAIT_MINUTES = 5 * 366 * 24 * 60
"""The longest wait (5 years): a longer one is a typo, and would overflow dates."""
_WAIT_RE = re.compile(r"^\s*(\d+)\s*([a-z]+)\s*$")
_TIME_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


_TIME_SCHEMA = WithJsonSchema(
    {"type": "string", "pattern": _TIME_RE.pattern, "description": "24-hour local time HH:MM"}
)
WAIT_SCHEMA = WithJsonSchema(
    {
        "anyOf": [
            {"const": 0},
            {
                "type": "string",
                "pattern": r"^\s*\d+\s*(m|min|mins|minutes?|h|hours?|d|days?|w|weeks?)\s*$",
            },
        ],
        "description": "0, '30 minutes', '4 hours', '2 days', '1 week', '30m', '4h', '2d', '1w'",
    }
)
LocalTime = Annotated[time, _TIME_SCHEMA]


# The base of every model of the file format (here and in nurture.core.model):
# an unknown key is an error at its line, and a loaded sequence never changes.
class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Delay(Strict):
    """How long after the previous step was due (or after enrollment); after
    it went out, if that was over 15 minutes late (an outage delays the rest
    of the series).

    ``minutes`` and ``hours`` are elapsed time. ``days`` and ``weeks`` are
    *local calendar* days in the subscriber's zone: ``2 days`` after Monday
    10:00 is Wednesday 10:00 local time, whatever DST did in between.
    """

    amount: int = Field(ge=0)
    unit: Literal["minutes", "hours", "days", "weeks"] = "minutes"

    @model_validator(mode="after")
    def _at_most_the_longest_wait(self) -> Delay:
        minutes = self.amount * _UNIT_MINUTES[self.unit]
        if minutes > MAX_WAIT_MINUTES:
            raise ValueError(
                f"a wait of {self.amount} {self.unit} is longer than 5 years, the longest allowed"
            )
        return self

    @classmethod
    def parse(cls, value: Any) -> Delay:
        if isinstance(value, Delay):
            return value
        if isinstance(value, bool):
            raise ValueError("wait must be 0 or a duration such as '2 days' or '4h'")
        if isinstance(value, int):
            if value != 0:
                raise ValueError(
                    f"a bare number is ambiguous: write '{value} days', '{value}h' or '{value}m'"
                )
            return cls(amount=0, unit="minutes")
        if isinstance(value, dict):
            return cls.model_validate(value)
        if isinstance(value, str):
            text = value.strip().lower()
            if text == "0":
                return cls(amount=0, unit="minutes")
            match = _WAIT_RE.match(text)
            if match and match.group(2) in _WAIT_UNITS:
                return cls.model_validate(
                    {"amount": int(match.group(1)), "unit": _WAIT_UNITS[match.group(2)]}
                )
        raise ValueError(
            f"invalid wait {value!r}: use 0, '30 minutes', '4 hours', '2 days', '1 week' "
            "or the compact '30m', '4h', '2d', '1w'"
        )

    @property
    def calendar_days(self) -> int:
        """Local calendar days to add (0 for minute/hour waits)."""
        if self.unit == "days":
            return self.amount
        if self.unit == "weeks":
            return 7 * self.amount
        return 0

    @property
    def elapsed(self) -> timedelta:
        """Elapsed time to add (zero for day/week waits)."""
        if self.unit == "minutes":
            return timedelta(minutes=self.amount)
        if self.unit == "hours":
            return timedelta(hours=self.amount)
        return timedelta(0)

    def __str__(self) -> str:
        if self.amount == 0:
            return "0"
        unit = self.unit if self.amount != 1 else self.unit[:-1]
        return f"{self.amount} {unit}"


def parse_time(value: Any) -> time:
    if isinstance(value, time):
        return value
    if isinstance(value, str) and _TIME_RE.match(value.strip()):
        hour, minute = value.strip().split(":")
        return time(int(hour), int(minute))
    raise ValueError(f"invalid time {value!r}: use 24-hour 'HH:MM', for example \"09:30\"")


@lru_cache(maxsize=256)
def _weekday_numbers(days: tuple[str, ...]) -> frozenset[int]:
    return frozenset(WEEKDAYS.index(d) for d in days)


def _every_day() -> list[Weekday]:
    return ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class SendWindow(Strict):
    """Days of the week and local hours [start, end) when emails may go out."""

    days: list[Weekday] = Field(default_factory=lambda: _every_day(), min_length=1)
    start: LocalTime
    end: LocalTime

    @field_validator("start", "end", mode="before")
    @classmethod
    def _time(cls, value: Any) -> time:
        return parse_time(value)

    @model_validator(mode="after")
    def _ordered(self) -> SendWindow:
        if self.start >= self.end:
            raise ValueError(
                f"send_window start {self.start:%H:%M} must be before end {self.end:%H:%M}"
            )
        return self

    def weekday_numbers(self) -> frozenset[int]:
        return _weekday_numbers(tuple(self.days))

    def contains(self, moment: time) -> bool:
        return self.start <= moment < self.end


class SkipDates(Strict):
    """Days never to send on: public holidays of a country, and explicit dates."""

    holidays: str | None = Field(
        default=None,
        description="Country code known to the 'holidays' package, e.g. SE, US, or US-NY "
        "for a subdivision.",
    )
    dates: list[date] = Field(default_factory=list)

    @field_validator("holidays")
    @classmethod
    def _known_country(cls, value: str | None) -> str | None:
        if value is None:
            return None
        import holidays as holidays_lib
        from holidays.registry import EntityLoader

        # The codes are a table in the registry; the subdivisions come from
        # the one country's module. (``list_supported_countries()`` imports
        # all 250 of them: a quarter of a second on every command that loads
        # a sequence with holidays.)
        written_country, dash, written_subdiv = value.partition("-")
        country, subdiv = written_country.upper(), written_subdiv.upper()
        if country not in EntityLoader.get_country_codes():
            raise ValueError(f"unknown holiday country {value!r} (use an ISO code such as SE)")
        if dash and not subdiv:
            known = sorted(getattr(holidays_lib, country).subdivisions)
            such = f", or a subdivision such as {country}-{known[0]}" if known else ""
            raise ValueError(f"no subdivision after the dash in {value!r}: write {country}{such}")
        if subdiv and subdiv not in getattr(holidays_lib, country).subdivisions:
            raise ValueError(f"unknown subdivision {written_subdiv!r} for {country}")
        return value.upper()
