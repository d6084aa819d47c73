"""Timing rules: local calendar days, DST gaps and overlaps, windows, skip dates."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nurture.core.model import Step
from nurture.core.schedule import SendWindow, SkipDates
from nurture.core.timing import (
    Calendar,
    due_at,
    earliest_after_wait,
    next_allowed,
    resolve_local,
)
from nurture.errors import TimingError

STOCKHOLM = ZoneInfo("Europe/Stockholm")
NEW_YORK = ZoneInfo("America/New_York")
WEEKDAYS = SendWindow(days=["mon", "tue", "wed", "thu", "fri"], start="08:00", end="18:00")
NO_CALENDAR = Calendar()


def step(wait: object, at: str | None = None) -> Step:
    return Step.model_validate(
        {"id": "s", "wait": wait, "at": at, "subject": "x", "template": "x.md"}
    )


def local(zone: ZoneInfo, *args: int) -> datetime:
    return datetime(*args, tzinfo=zone)  # type: ignore[misc]


class TestDst:
    def test_two_days_at_0930_across_spring_forward_stockholm(self) -> None:
        # Europe/Stockholm springs forward on Sunday 2026-03-29.
        anchor = local(STOCKHOLM, 2026, 3, 28, 9, 30)
        due = due_at(step("2 days", "09:30"), anchor, STOCKHOLM, NO_CALENDAR).at
        shown = due.astimezone(STOCKHOLM)
        assert (shown.date(), shown.time()) == (date(2026, 3, 30), time(9, 30))
        assert shown.utcoffset() == timedelta(hours=2)
        assert due - anchor == timedelta(hours=47)  # two calendar days, 47 real hours

    def test_two_days_at_0930_across_fall_back_stockholm(self) -> None:
        anchor = local(STOCKHOLM, 2026, 10, 24, 9, 30)
        due = due_at(step("2 days", "09:30"), anchor, STOCKHOLM, NO_CALENDAR).at
        shown = due.astimezone(STOCKHOLM)
        assert (shown.date(), shown.time()) == (date(2026, 10, 26), time(9, 30))
        assert due - anchor == timedelta(hours=49)

    def test_two_days_at_0930_across_new_york_spring_forward(self) -> None:
        # America/New_York springs forward on Sunday 2026-03-08.
        anchor = local(NEW_YORK, 2026, 3, 7, 9, 30)
        due = due_at(step("2 days", "09:30"), anchor, NEW_YORK, NO_CALENDAR).at
        shown = due.astimezone(NEW_YORK)
        assert (shown.date(), shown.time()) == (date(2026, 3, 9), time(9, 30))
        assert due.astimezone(UTC).hour == 13  # EDT: UTC-4

    def test_days_without_at_keep_local_wall_time(self) -> None:
        anchor = local(NEW_YORK, 2026, 10, 31, 15, 0)  # falls back 2026-11-01
        due = due_at(step("1 week"), anchor, NEW_YORK, NO_CALENDAR).at
        assert due.astimezone(NEW_YORK).replace(tzinfo=None) == datetime(2026, 11, 7, 15, 0)

    def test_hours_are_elapsed_time_across_the_gap(self) -> None:
        anchor = local(STOCKHOLM, 2026, 3, 29, 1, 0)
        due = due_at(step("2 hours"), anchor, STOCKHOLM, NO_CALENDAR).at
        assert due.astimezone(STOCKHOLM).time() == time(4, 0)  # 01:00 CET + 2h = 04:00 CEST

    def test_nonexistent_local_time_moves_forward_past_the_gap(self) -> None:
        resolved = resolve_local(date(2026, 3, 29), time(2, 30), STOCKHOLM)
        assert resolved.time() == time(3, 30)
        assert resolved.utcoffset() == timedelta(hours=2)
        resolved = resolve_local(date(2026, 3, 8), time(2, 15), NEW_YORK)
        assert resolved.time() == time(3, 15)

    def test_ambiguous_local_time_takes_the_first_occurrence(self) -> None:
        resolved = resolve_local(date(2026, 10, 25), time(2, 30), STOCKHOLM)
        assert resolved.utcoffset() == timedelta(hours=2)  # still CEST
        resolved = resolve_local(date(2026, 11, 1), time(1, 30), NEW_YORK)
        assert resolved.utcoffset() == timedelta(hours=-4)  # still EDT

    def test_step_at_in_the_gap(self) -> None:
        anchor = local(STOCKHOLM, 2026, 3, 27, 12, 0)
        due = due_at(step("2 days", "02:30"), anchor, STOCKHOLM, NO_CALENDAR).at
        assert due.astimezone(STOCKHOLM).replace(tzinfo=None) == datetime(2026, 3, 29, 3, 30)


class TestWindow:
    cal = Calendar(WEEKDAYS)

    def test_before_start_moves_to_start_same_day(self) -> None:
        due = due_at(step("4 hours"), local(STOCKHOLM, 2026, 11, 24, 2, 0), STOCKHOLM, self.cal)
        assert due.at.astimezone(STOCKHOLM).replace(tzinfo=None) == datetime(2026, 11, 24, 8, 0)
        assert due.notes == (
            "moved from Tue 2026-11-24 06:00 to Tue 2026-11-24 08:00: the window opens at 08:00",
        )

    def test_after_end_moves_to_next_allowed_day(self) -> None:
        # Friday 17:30 + 1 hour = 18:30, after the window: Monday 08:00.
        due = due_at(step("1 hour"), local(STOCKHOLM, 2026, 11, 27, 17, 30), STOCKHOLM, self.cal)
        assert due.at.astimezone(STOCKHOLM).replace(tzinfo=None) == datetime(2026, 11, 30, 8, 0)

    def test_end_is_exclusive(self) -> None:
        due = due_at(step(0), local(STOCKHOLM, 2026, 11, 24, 18, 0), STOCKHOLM, self.cal)
        assert due.at.astimezone(STOCKHOLM).replace(tzinfo=None) == datetime(2026, 11, 25, 8, 0)

    def test_at_on_disallowed_day_keeps_its_time(self) -> None:
        # Friday + 1 day at 09:30 = Saturday: Monday at 09:30, not at the window start.
        due = due_at(
            step("1 day", "09:30"), local(STOCKHOLM, 2026, 11, 27, 10, 0), STOCKHOLM, self.cal
        )
        assert due.at.astimezone(STOCKHOLM).replace(tzinfo=None) == datetime(2026, 11, 30, 9, 30)

    def test_zero_wait_with_at_takes_the_next_occurrence(self) -> None:
        due = due_at(step(0, "09:30"), local(STOCKHOLM, 2026, 11, 24, 10, 0), STOCKHOLM, self.cal)
        assert due.at.astimezone(STOCKHOLM).replace(tzinfo=None) == datetime(2026, 11, 25, 9, 30)


class TestSkipDates:
    def test_holiday_and_skip_date_are_disallowed(self) -> None:
        cal = Calendar(WEEKDAYS, SkipDates(holidays="SE", dates=[date(2026, 12, 24)]))
        # Tue 22 Dec + 2 days = Thu 24 (skip date), Fri 25 (Christmas), weekend -> Mon 28.
        due = due_at(step("2 days", "09:30"), local(STOCKHOLM, 2026, 12, 22, 9, 0), STOCKHOLM, cal)
        assert due.at.astimezone(STOCKHOLM).replace(tzinfo=None) == datetime(2026, 12, 28, 9, 30)
        assert any("skip date" in note for note in due.notes)
        assert any("holiday" in note for note in due.notes)

    def test_us_subdivision_holidays(self) -> None:
        cal = Calendar(None, SkipDates(holidays="US"))
        due = due_at(step(0), local(NEW_YORK, 2026, 7, 4, 10, 0), NEW_YORK, cal)
        assert due.at.astimezone(NEW_YORK).date() == date(2026, 7, 5)

    def test_no_allowed_day_is_an_error_not_a_hang(self) -> None:
        cal = Calendar(
            SendWindow(days=["mon"], start="08:00", end="09:00"),
            SkipDates(dates=[date(2026, 11, 30) + timedelta(weeks=w) for w in range(120)]),
        )
        with pytest.raises(TimingError):
            due_at(step(0), local(STOCKHOLM, 2026, 11, 27, 10, 0), STOCKHOLM, cal)


def test_naive_datetimes_are_rejected() -> None:
    with pytest.raises(TimingError, match="naive"):
        due_at(step(0), datetime(2026, 11, 27, 10, 0), STOCKHOLM, NO_CALENDAR)
    with pytest.raises(TimingError, match="naive"):
        next_allowed(datetime(2026, 11, 27, 10, 0), STOCKHOLM, NO_CALENDAR)


# Property tests -------------------------------------------------------------

ZONES = st.sampled_from(
    [
        STOCKHOLM,
        NEW_YORK,
        ZoneInfo("UTC"),
        ZoneInfo("Australia/Lord_Howe"),
        ZoneInfo("Asia/Kolkata"),
    ]
)
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@st.composite
def windows(draw: st.DrawFn) -> SendWindow:
    start = draw(st.integers(0, 22 * 4)) * 15
    end = draw(st.integers(start // 15 + 1, 24 * 4 - 1)) * 15
    days = draw(st.lists(st.sampled_from(DAYS), min_size=1, max_size=7, unique=True))
    return SendWindow(
        days=days,  # type: ignore[arg-type]
        start=f"{start // 60:02d}:{start % 60:02d}",
        end=f"{end // 60:02d}:{end % 60:02d}",
    )


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Step, datetime, ZoneInfo, Calendar]:
    zone = draw(ZONES)
    window = draw(st.one_of(st.none(), windows()))
    anchor_utc = draw(
        st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31))
    ).replace(tzinfo=UTC)
    amount = draw(st.integers(0, 30))
    unit = draw(st.sampled_from(["m", "h", "d", "w"]))
    wait = 0 if amount == 0 else f"{amount}{unit}"
    at = None
    if draw(st.booleans()):
        if window is None:
            at = draw(st.times()).replace(second=0, microsecond=0)
        else:
            lo = window.start.hour * 60 + window.start.minute
            hi = window.end.hour * 60 + window.end.minute - 1
            minute = draw(st.integers(lo, hi))
            at = time(minute // 60, minute % 60)
    skips = draw(
        st.lists(st.dates(min_value=date(2025, 1, 1), max_value=date(2029, 12, 31)), max_size=5)
    )
    holidays = draw(st.sampled_from([None, "SE", "US"]))
    calendar = Calendar(window, SkipDates(holidays=holidays, dates=skips))
    the_step = step(wait, None if at is None else f"{at:%H:%M}")
    return the_step, anchor_utc.astimezone(zone), zone, calendar


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_due_time_properties(case: tuple[Step, datetime, ZoneInfo, Calendar]) -> None:
    the_step, anchor, zone, calendar = case
    due = due_at(the_step, anchor, zone, calendar).at
    earliest = earliest_after_wait(the_step, anchor, zone)
    moment = due.astimezone(zone)
    # Never earlier than the wait allows.
    assert due >= earliest
    if the_step.wait.calendar_days:
        assert moment.date() >= anchor.astimezone(zone).date() + timedelta(
            days=the_step.wait.calendar_days
        )
    else:
        # Elapsed time, so added in UTC: a zone's datetime plus a timedelta is
        # wall-clock arithmetic, an hour off across a DST change (hypothesis
        # found 25 hours from 02:00 the day before Stockholm's autumn change).
        assert due >= anchor.astimezone(UTC) + the_step.wait.elapsed
    # Always inside the window, never on a skip date or holiday.
    assert calendar.contains(due, zone)
    assert moment.date() not in (calendar.skip_dates.dates if calendar.skip_dates else [])
    # Never more than one window cycle after the earliest allowed moment: the
    # first allowed moment at or after `earliest` (scanned in 15-minute steps
    # from the earliest local day) is on the same local day as the due time.
    if the_step.at is None:
        probe = earliest
        while not calendar.contains(probe, zone):
            probe += timedelta(minutes=15)
        assert probe.astimezone(zone).date() == moment.date()
        assert due <= probe
