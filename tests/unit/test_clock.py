"""``parse_instant``: the reading of ``--now`` and ``NURTURE_NOW``."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from nurture.app.clock import parse_instant


def test_an_instant_with_an_offset_comes_back_in_utc() -> None:
    assert parse_instant(" 2026-11-27T09:00:00+01:00 ") == datetime(2026, 11, 27, 8, tzinfo=UTC)
    assert parse_instant("2026-11-27T08:00:00Z") == datetime(2026, 11, 27, 8, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("2026-11-27T09:00:00", "no time zone"),
        ("next tuesday", "not an ISO-8601 time"),
        ("0001-01-01T00:00:00+14:00", "outside the years 1 to 9999"),
        ("9999-12-31T23:59:59-14:00", "outside the years 1 to 9999"),
    ],
)
def test_a_time_that_cannot_be_an_instant_is_a_value_error(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_instant(text)
