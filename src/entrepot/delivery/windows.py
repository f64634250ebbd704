"""Maintenance windows: times when nothing is sent to a target.

A window is written as text in the target's timezone:

- ``"daily 23:30-00:15"``: every day; a window that ends before it starts runs
  past midnight.
- ``"Sun 02:00-04:00"`` or ``"Mon-Fri 22:00:30-22:45"``: on those weekdays
  (the day the window starts). Seconds are optional.
- ``"2026-12-24T22:00:00+00:00/2026-12-25T02:00:00+00:00"``: one fixed interval
  in ISO 8601; a time without an offset is read in the target's timezone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_RECURRING = re.compile(
    r"^(?P<days>daily|[a-z]{3}(?:-[a-z]{3})?)\s+"
    r"(?P<start>\d{1,2}:\d{2}(?::\d{2})?)-(?P<end>\d{1,2}:\d{2}(?::\d{2})?)$"
)


class InvalidWindowError(ValueError):
    """Raised when a maintenance window's text cannot be read."""


@dataclass(frozen=True)
class RecurringWindow:
    """A window that comes back on the given weekdays (0 = Monday)."""

    weekdays: frozenset[int]
    start: time
    end: time

    def occurrence_around(self, moment: datetime) -> tuple[datetime, datetime] | None:
        """Return the occurrence that contains ``moment``, if one does."""
        for days_back in (0, 1):
            day = (moment - timedelta(days=days_back)).date()
            if day.weekday() not in self.weekdays:
                continue
            opens = datetime.combine(day, self.start, moment.tzinfo)
            closes = datetime.combine(day, self.end, moment.tzinfo)
            if closes <= opens:
                closes += timedelta(days=1)
            if opens <= moment < closes:
                return opens, closes
        return None


@dataclass(frozen=True)
class FixedWindow:
    """A single interval."""

    opens: datetime
    closes: datetime

    def occurrence_around(self, moment: datetime) -> tuple[datetime, datetime] | None:
        return (self.opens, self.closes) if self.opens <= moment < self.closes else None


Window = RecurringWindow | FixedWindow


class MaintenanceSchedule:
    """The maintenance windows of one target.

    ``lead_seconds`` starts each window that much early, so that a request sent
    just before a window opens does not arrive inside it.
    """

    def __init__(self, windows: Iterable[Window], timezone: str, lead_seconds: float = 0.0):
        self.windows = list(windows)
        self.zone = ZoneInfo(timezone)
        self.lead = timedelta(seconds=lead_seconds)

    @classmethod
    def parse(
        cls, texts: Iterable[str], timezone: str = "UTC", lead_seconds: float = 0.0
    ) -> MaintenanceSchedule:
        zone = ZoneInfo(timezone)
        return cls([parse_window(text, zone) for text in texts], timezone, lead_seconds)

    def closed_until(self, moment: datetime) -> datetime | None:
        """Return when sending may resume if ``moment`` falls in a window, else None.

        A window counts as open from ``lead_seconds`` before its start until its end.
        """
        local = moment.astimezone(self.zone)
        latest_end: datetime | None = None
        for window in self.windows:
            for probe in (local, local + self.lead):
                occurrence = window.occurrence_around(probe)
                if occurrence is not None and (latest_end is None or occurrence[1] > latest_end):
                    latest_end = occurrence[1]
        if latest_end is None:
            return None
        # A window may end inside another, or just before the next opens.
        following = self.closed_until(latest_end)
        return following or latest_end


def parse_window(text: str, zone: ZoneInfo) -> Window:
    """Read one window; raises `InvalidWindowError` naming the text."""
    cleaned = " ".join(text.strip().lower().split())
    if "/" in cleaned:
        return _parse_fixed(text, zone)
    match = _RECURRING.match(cleaned)
    if match is None:
        raise InvalidWindowError(
            f"invalid maintenance window {text!r}; write e.g. 'daily 23:30-00:15', "
            "'Sun 02:00-04:00' or an ISO interval 'START/END'"
        )
    return RecurringWindow(
        weekdays=_parse_days(match["days"], text),
        start=_parse_time(match["start"], text),
        end=_parse_time(match["end"], text),
    )


def _parse_fixed(text: str, zone: ZoneInfo) -> FixedWindow:
    try:
        opens, closes = (datetime.fromisoformat(part.strip()) for part in text.split("/", 1))
    except ValueError as exc:
        raise InvalidWindowError(f"invalid maintenance window {text!r}: {exc}") from exc
    opens = opens if opens.tzinfo else opens.replace(tzinfo=zone)
    closes = closes if closes.tzinfo else closes.replace(tzinfo=zone)
    if closes <= opens:
        raise InvalidWindowError(f"maintenance window {text!r} ends before it starts")
    return FixedWindow(opens, closes)


def _parse_days(days: str, text: str) -> frozenset[int]:
    if days == "daily":
        return frozenset(range(7))
    first, _, last = days.partition("-")
    try:
        start = WEEKDAYS.index(first)
        end = WEEKDAYS.index(last or first)
    except ValueError as exc:
        raise InvalidWindowError(f"unknown weekday in maintenance window {text!r}") from exc
    count = (end - start) % 7 + 1
    return frozenset((start + offset) % 7 for offset in range(count))


def _parse_time(value: str, text: str) -> time:
    try:
        return time.fromisoformat(value.zfill(5) if len(value) == 4 else value)
    except ValueError as exc:
        raise InvalidWindowError(f"invalid time {value!r} in maintenance window {text!r}") from exc
