"""The checks behind the admin fuzzing fixes, without a database: row ids,
send-log dates outside years 1-9999 in UTC, and admin time zones."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from nurture.admin.sendlog import SendLogError, parse_filter, parse_moment
from nurture.admin.users import AdminUserError, admin_zone, check_zone
from nurture.core.places import known_timezones
from nurture.store.ids import MAX_ID, parse_id


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", 1),
        ("007", 7),
        (str(MAX_ID), MAX_ID),
        ("0" * 40 + "12", 12),
        (str(MAX_ID + 1), None),
        (str(2**63), None),
        ("9" * 5000, None),  # int() would raise for more than 4,300 digits
        ("0", None),
        ("-1", None),
        ("+1", None),
        (" 1", None),
        ("1_000", None),
        ("١٢", None),  # Arabic-Indic digits: int() reads them, no link writes them
        ("²", None),  # isdigit() but not int()
        ("", None),
    ],
)
def test_a_row_id_is_ascii_digits_within_the_id_column(text: str, expected: int | None) -> None:
    assert parse_id(text) == expected


def test_a_page_position_may_be_zero() -> None:
    assert parse_id("0", minimum=0) == 0
    assert parse_id(str(MAX_ID + 1), minimum=0) is None


@pytest.mark.parametrize(
    ("text", "zone", "end"),
    [
        ("9999-12-31", "UTC", True),
        ("0001-01-01", "Europe/Stockholm", False),
        ("0001-01-01T00:00:00+14:00", "UTC", False),
        ("0001-01-01T00:00:00", "Asia/Tokyo", False),
        ("9999-12-31T23:59:59-14:00", "UTC", True),
        ("9999-12-31T23:00:00", "America/New_York", False),
    ],
)
def test_a_moment_outside_years_1_to_9999_in_utc_is_refused(
    text: str, zone: str, end: bool
) -> None:
    with pytest.raises(SendLogError, match="year from 1 to 9999"):
        parse_moment(text, zone, end=end)


def test_the_first_and_last_moments_in_utc_are_read() -> None:
    assert parse_moment("0001-01-01") == datetime(1, 1, 1, tzinfo=UTC)
    assert parse_moment("9999-12-30", end=True) == datetime(9999, 12, 31, tzinfo=UTC)
    assert parse_moment("9999-12-31T23:59:59Z") == datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
    with pytest.raises(SendLogError, match="year from 1 to 9999"):
        parse_filter(until="9999-12-31", zone="Europe/Stockholm")


@pytest.mark.parametrize(
    "zone",
    ["Europe", "America/Argentina", "A" * 300, "localtime", "Factory", "posixrules", "", "../UTC"],
)
def test_an_admin_zone_is_checked_as_every_other_zone(zone: str) -> None:
    with pytest.raises(AdminUserError, match="is not a time zone"):
        check_zone(zone)
    assert admin_zone(zone).key == "UTC"


def test_every_known_zone_is_an_admin_zone() -> None:
    for zone in ("Europe/Stockholm", "America/Argentina/Buenos_Aires", "UTC"):
        assert check_zone(zone) == zone and admin_zone(zone).key == zone
    assert "localtime" not in known_timezones()
