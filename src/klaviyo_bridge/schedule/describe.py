"""Short English descriptions of a parsed schedule, for connector:list and cron:next.

Why separate: wording is presentation and changes for reasons the cron rules never do.
The text is built from the parsed value sets (after presets, names and the seed's
day-field rule), so it describes what will actually run, not what was typed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from klaviyo_bridge.schedule.fields import DAY_NAMES, FIELDS, MONTH_NAMES

if TYPE_CHECKING:
    from klaviyo_bridge.schedule.cron import CronSchedule


def _runs(values: frozenset[int], label: Callable[[int], str] = str) -> str:
    """'1-10, 15, 20' style: consecutive values collapse to ranges."""
    ordered = sorted(values)
    parts, start = [], None
    for index, value in enumerate(ordered):
        if start is None:
            start = value
        if index + 1 == len(ordered) or ordered[index + 1] != value + 1:
            if value - start >= 2:
                parts.append(f"{label(start)}-{label(value)}")
            else:
                parts.extend(label(v) for v in range(start, value + 1))
            start = None
    return ", ".join(parts)


def _ordinal(day: int) -> str:
    suffix = "th" if 10 <= day % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def _time(schedule: CronSchedule) -> str:
    minutes, hours = schedule.minutes, schedule.hours
    every_hour = hours == FIELDS[1].full
    if minutes == FIELDS[0].full:
        return "every minute" if every_hour else f"every minute of hour(s) {_runs(hours)}"
    if every_hour:
        if len(minutes) == 1:
            return f"every hour at :{min(minutes):02d}"
        return f"at minute(s) {_runs(minutes)} of every hour"
    if len(minutes) * len(hours) <= 4:
        return "at " + ", ".join(f"{h:02d}:{m:02d}" for h in sorted(hours) for m in sorted(minutes))
    return f"at minute(s) {_runs(minutes)} of hour(s) {_runs(hours)}"


def _days(schedule: CronSchedule) -> str:
    parts = []
    if schedule.days_of_month != FIELDS[2].full:
        parts.append(f"on the {_runs(schedule.days_of_month, _ordinal)} of the month")
    if schedule.days_of_week != FIELDS[4].full:
        parts.append("on " + _runs(schedule.days_of_week, lambda d: DAY_NAMES[d].capitalize()))
    if not parts:
        parts.append("every day")
    if schedule.months != FIELDS[3].full:
        parts.append("in " + _runs(schedule.months, lambda m: MONTH_NAMES[m - 1].capitalize()))
    return " ".join(parts)


def describe(schedule: CronSchedule) -> str:
    if schedule.is_manual:
        return "no schedule (runs only when started by hand)"
    text = f"{_time(schedule)} {_days(schedule)} ({schedule.timezone})"
    if schedule.ignored_day_field:
        text += f"; {schedule.ignored_day_field} ignored (the other day field runs more often)"
    if schedule.delay_seconds:
        text += f"; each run starts {schedule.delay_seconds}s after its scheduled time"
    return text
