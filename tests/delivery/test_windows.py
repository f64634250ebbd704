"""Maintenance windows: recurring, past midnight, on weekdays, fixed intervals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from entrepot.delivery.windows import InvalidWindowError, MaintenanceSchedule


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_daily_window_closed_inside() -> None:
    schedule = MaintenanceSchedule.parse(["daily 23:30-00:15"])
    # 2026-12-02 is a Wednesday.
    assert schedule.closed_until(at("2026-12-02T23:45:00+00:00")) == at(
        "2026-12-03T00:15:00+00:00"
    )
    assert schedule.closed_until(at("2026-12-03T00:10:00+00:00")) == at(
        "2026-12-03T00:15:00+00:00"
    )


def test_daily_window_open_outside() -> None:
    schedule = MaintenanceSchedule.parse(["daily 23:30-00:15"])
    assert schedule.closed_until(at("2026-12-02T23:29:59+00:00")) is None
    assert schedule.closed_until(at("2026-12-03T00:15:00+00:00")) is None


def test_weekday_window_only_on_those_days() -> None:
    schedule = MaintenanceSchedule.parse(["Sun 02:00-04:00"])
    sunday = at("2026-12-06T03:00:00+00:00")
    monday = at("2026-12-07T03:00:00+00:00")
    assert schedule.closed_until(sunday) == at("2026-12-06T04:00:00+00:00")
    assert schedule.closed_until(monday) is None


def test_weekday_range_wraps_the_week() -> None:
    schedule = MaintenanceSchedule.parse(["Sat-Mon 01:00-02:00"])
    closed = [
        day
        for day in range(7)
        if schedule.closed_until(at(f"2026-12-{7 + day:02d}T01:30:00+00:00"))
    ]
    # 2026-12-07 is a Monday; Sat and Sun are 12-12 and 12-13.
    assert closed == [0, 5, 6]


def test_window_read_in_target_timezone() -> None:
    schedule = MaintenanceSchedule.parse(["daily 22:00-23:00"], "America/New_York")
    # 22:30 in New York in December is 03:30 UTC the next day.
    assert schedule.closed_until(at("2026-12-03T03:30:00+00:00")) is not None
    assert schedule.closed_until(at("2026-12-02T22:30:00+00:00")) is None


def test_seconds_in_window_times() -> None:
    schedule = MaintenanceSchedule.parse(["daily 10:00:30-10:00:45"])
    assert schedule.closed_until(at("2026-12-02T10:00:29+00:00")) is None
    assert schedule.closed_until(at("2026-12-02T10:00:31+00:00")) == at(
        "2026-12-02T10:00:45+00:00"
    )


def test_fixed_interval() -> None:
    schedule = MaintenanceSchedule.parse(["2026-12-24T22:00:00+00:00/2026-12-25T02:00:00+00:00"])
    assert schedule.closed_until(at("2026-12-25T01:00:00+00:00")) == at(
        "2026-12-25T02:00:00+00:00"
    )
    assert schedule.closed_until(at("2026-12-25T02:00:00+00:00")) is None


def test_lead_opens_window_early_not_late() -> None:
    opens = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    closes = opens + timedelta(minutes=10)
    schedule = MaintenanceSchedule.parse(
        [f"{opens.isoformat()}/{closes.isoformat()}"], lead_seconds=2
    )
    assert schedule.closed_until(opens - timedelta(seconds=3)) is None
    assert schedule.closed_until(opens - timedelta(seconds=1)) == closes
    assert schedule.closed_until(closes - timedelta(seconds=1)) == closes
    assert schedule.closed_until(closes) is None


def test_adjoining_windows_merge() -> None:
    schedule = MaintenanceSchedule.parse(["daily 01:00-02:00", "daily 02:00-03:00"])
    assert schedule.closed_until(at("2026-12-02T01:30:00+00:00")) == at(
        "2026-12-02T03:00:00+00:00"
    )


@pytest.mark.parametrize(
    "text",
    [
        "nightly 01:00-02:00",
        "daily 25:00-26:00",
        "Funday 01:00-02:00",
        "2026-12-25T02:00/2026-12-24T22:00",
        "daily 1-2",
    ],
)
def test_invalid_window_named_in_error(text: str) -> None:
    with pytest.raises(InvalidWindowError, match="maintenance window"):
        MaintenanceSchedule.parse([text])
