"""Cron schedules with the seed's semantics: when does a schedule fire, and when does it run.

Why this exists: imports (connector:create) and exports (sched:create) take a cron
expression, an IANA time zone and a delay, exactly as the seeds describe them
(001 "Schedule Query Export Jobs", 004 "Scheduled Execution").  This module turns those
three settings into run times; the scheduler only asks "what is due after T?".

The rules, each taken from the seeds (where the seed and classic cron differ, the seed wins):

* Five fields -- minute, hour, day of month, month, day of week -- separated by exactly
  one space.  Each field is ``*``, a value, a range ``2-5``, a list ``2,3,4,5``, a step
  ``*/5`` or ``a-b/n``, or a list of any of these except ``*`` (``2,*/5,8-10``).  Day and
  month names (``sun``..``sat``, ``jan``..``dec``) work anywhere a number does, in any case.
  Day of week 7 is accepted as Sunday (classic cron does; the seed's table shows 0-6).
* **Steps differ from classic cron.**  ``*/n`` selects the multiples of n inside the
  field's range; the seed documents ``0 0 */5 * *`` as "every 5 days starting on the 5th"
  and ``5,*/10,25`` as the 5th, 10th, 20th and 25th, while classic cron counts from the
  field's minimum (1, 6, 11, ...).  Only day of month and month are affected; see
  ``fields._step_start``.  Ranges with a step (``1-20/5``) start at the range's first
  value, as in classic cron (the seed does not describe them).
* **Conflicting day fields differ from classic cron.**  Classic cron runs on days that
  match day of month OR day of week.  The seed: "the specification requesting to execute
  more often is followed while the other schedule specification is ignored" (its
  example, ``0 0 1 * 1``, runs every Monday and ignores the 1st).  "More often" is
  decided by counting matching days over the 400-year Gregorian cycle, restricted to the
  months the month field allows: day of week k weekdays counts k/7 of those days; day of
  month counts each listed day in each allowed month (29 February in 97 of 400 years;
  days a month lacks count zero).  A tie goes to day of week, the field the seed's
  example keeps.  A field is "restricted" when it does not allow every value of its
  range (so ``*``, ``*/1`` and ``1-31`` are all unrestricted); when only one day field
  is restricted, it alone decides.
* Presets: ``@hourly`` (= ``0 * * * *``), ``@daily`` (= ``0 0 * * *``), ``@monthly``
  (= ``0 0 1 * *``), also as the console's drop-down labels ``@hourly (:00)`` and
  ``@daily (midnight)``.  ``""`` (also written ``'""'``) and the drop-down's ``None``
  give a schedule with no run time: it only runs by hand, ``next_runs`` returns ``[]``.
* Time zone: IANA names only (``timezones.resolve_timezone``), default UTC.  The
  fields are wall-clock times in that zone; DST gaps and overlaps follow
  ``timezones.resolve_local`` (skipped times run at the end of the gap, repeated times
  once, at the first occurrence).
* Delay (``--delay`` / "Delay execution"): the job runs ``delay_seconds`` of elapsed time
  after its scheduled time.  ``Fire`` carries both; ``next_runs`` returns run times.

Why not croniter or cronsim: both implement classic cron -- ``*/n`` from the field
minimum, day of month OR day of week, their own DST policies -- which disagrees with the
seed's table in exactly the places above, and their errors do not name the field.  What
is left once those rules are ours is a walk over days, hours and minutes (``_walk``).
tests/schedule/test_days.py checks our results against croniter on expressions where the
seed and classic cron agree (skipped when croniter is absent: it is not a runtime dependency).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from fractions import Fraction
from typing import Iterator
from zoneinfo import ZoneInfo

from klaviyo_bridge.errors import ScheduleError
from klaviyo_bridge.schedule.describe import describe
from klaviyo_bridge.schedule.fields import (
    DAY_NAMES,
    FIELDS,
    MONTH_NAMES,
    CronSyntaxError,
    parse_field,
)
from klaviyo_bridge.schedule.timezones import UTC, resolve_local, resolve_timezone

#: Preset names (lower case) and the five-field expression each stands for.
PRESETS: dict[str, str] = {
    "@hourly": "0 * * * *",
    "@hourly (:00)": "0 * * * *",
    "@daily": "0 0 * * *",
    "@daily (midnight)": "0 0 * * *",
    "@monthly": "0 0 1 * *",
}
#: Spellings of "no scheduled run time".
MANUAL = frozenset({"", '""', "''", "none"})

# Days per month over the 400-year cycle, as fractions of a year's average month.
_MONTH_DAYS = {m: 31 for m in (1, 3, 5, 7, 8, 10, 12)} | {m: 30 for m in (4, 6, 9, 11)} | {2: 29}
_FEB_29 = Fraction(97, 400)
_MAX_EMPTY_DAYS = 366 * 9  # 29 February can be 8 years away (2096 -> 2104)


@dataclass(frozen=True)
class Fire:
    """One firing of a schedule: when it is scheduled and when it runs (after the delay).

    Both are aware datetimes in the schedule's zone.  Compare or subtract them in UTC:
    Python does same-zone arithmetic on the wall clock, which is wrong across DST.
    """

    scheduled_at: datetime
    run_at: datetime


def _day_weight(day: int, month: int) -> Fraction:
    if day > _MONTH_DAYS[month]:
        return Fraction(0)
    return _FEB_29 if (month, day) == (2, 29) else Fraction(1)


def _month_length(month: int) -> Fraction:
    return Fraction(28) + _FEB_29 if month == 2 else Fraction(_MONTH_DAYS[month])


def day_frequencies(days: frozenset[int], weekdays: frozenset[int], months: frozenset[int]) -> tuple[Fraction, Fraction]:
    """Average matching days per year for (day of month, day of week), within ``months``."""
    by_month_day = sum((_day_weight(d, m) for m in months for d in days), Fraction(0))
    by_weekday = Fraction(len(weekdays), 7) * sum((_month_length(m) for m in months), Fraction(0))
    return by_month_day, by_weekday


def _check_after(after: datetime) -> datetime:
    if not isinstance(after, datetime):
        raise ScheduleError(f"'after' must be a datetime, got {type(after).__name__}")
    if after.tzinfo is None or after.utcoffset() is None:
        raise ScheduleError("'after' must be timezone-aware (give it an offset or a zone)")
    return after.astimezone(UTC)


def check_delay(delay_seconds: object) -> int:
    if isinstance(delay_seconds, bool) or not isinstance(delay_seconds, int):
        raise ScheduleError(f"delay must be a whole number of seconds, got {delay_seconds!r}", field="delay")
    if delay_seconds < 0:
        raise ScheduleError(f"delay must not be negative, got {delay_seconds}", field="delay")
    return delay_seconds


def _split(expression: str) -> list[tuple[str, int]]:
    """Split on single spaces; return (text, column) per field or raise CronSyntaxError."""

    def fail(message: str, column: int | None = None) -> CronSyntaxError:
        return CronSyntaxError(f"cron expression '{expression}': {message}", expression=expression, column=column)

    if expression != expression.strip():
        raise fail("remove the leading/trailing whitespace", 0 if expression[:1].isspace() else len(expression.rstrip()))
    for column, char in enumerate(expression):
        if char.isspace() and char != " ":
            raise fail(f"use a single space between fields, not {char!r}", column)
    if "  " in expression:
        raise fail("fields must be separated by a single space (found two spaces)", expression.index("  "))
    texts = expression.split(" ")
    if len(texts) != 5:
        raise fail(f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(texts)}")
    fields, column = [], 0
    for text in texts:
        fields.append((text, column))
        column += len(text) + 1
    return fields


def _parse_fields(expression: str) -> tuple[list[frozenset[int] | None], list[ScheduleError]]:
    values: list[frozenset[int] | None] = []
    errors: list[ScheduleError] = []
    for spec, (text, column) in zip(FIELDS, _split(expression)):
        try:
            values.append(parse_field(spec, text, expression=expression, column=column))
        except CronSyntaxError as exc:
            values.append(None)
            errors.append(exc)
    return values, errors


def _expand_preset(expression: str) -> str | None:
    """Return the five-field text (or "" for no schedule); CronSyntaxError for unknown presets."""
    if not isinstance(expression, str):
        raise ScheduleError(f"cron expression must be a string, got {type(expression).__name__}", field="cron")
    if expression.lower() in MANUAL:
        return ""
    if expression.startswith("@"):
        preset = PRESETS.get(expression.lower())
        if preset is None:
            raise CronSyntaxError(
                f"unknown preset '{expression}': use @hourly, @daily, @monthly or five fields such as '0 0 * * 0'",
                expression=expression,
                token=expression,
                column=0,
            )
        return preset
    if expression.lower().startswith("custom cron"):
        raise CronSyntaxError(
            "'Custom cron...' needs an expression: five fields such as '10 0 * * *'", expression=expression, column=0
        )
    return expression


def validate(expression: str, timezone: str = "UTC", delay_seconds: int = 0) -> list[ScheduleError]:
    """Every problem with these schedule settings (empty list when they are valid).

    For the CLI and the console: all field errors are reported together, each a
    ``CronSyntaxError`` naming its field; a bad time zone is a ``TimezoneError``.
    """
    errors: list[ScheduleError] = []
    try:
        text = _expand_preset(expression)
        if text:
            values, errors = _parse_fields(text)
            if not errors:
                CronSchedule._from_values(expression, text, values, "UTC", 0)
    except ScheduleError as exc:
        errors.append(exc)
    for check in (lambda: resolve_timezone(timezone), lambda: check_delay(delay_seconds)):
        try:
            check()
        except ScheduleError as exc:
            errors.append(exc)
    return errors


@dataclass(frozen=True)
class CronSchedule:
    """A parsed schedule.  Build it with ``CronSchedule.parse``."""

    expression: str
    timezone: str = "UTC"
    delay_seconds: int = 0
    minutes: frozenset[int] = frozenset()
    hours: frozenset[int] = frozenset()
    days_of_month: frozenset[int] = frozenset()
    months: frozenset[int] = frozenset()
    days_of_week: frozenset[int] = frozenset()
    #: "day of month" or "day of week" when both were restricted and one was dropped.
    ignored_day_field: str | None = None
    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"), repr=False, compare=False)

    @classmethod
    def parse(cls, expression: str, timezone: str = "UTC", delay_seconds: int = 0) -> "CronSchedule":
        """Parse and check everything; raise the first ``ScheduleError`` found."""
        text = _expand_preset(expression)
        zone = resolve_timezone(timezone)
        delay = check_delay(delay_seconds)
        if not text:
            return cls(expression, timezone, delay, zone=zone)
        values, errors = _parse_fields(text)
        if errors:
            raise errors[0]
        return cls._from_values(expression, text, values, timezone, delay)

    @classmethod
    def _from_values(
        cls, expression: str, text: str, values: list[frozenset[int] | None], timezone: str, delay: int
    ) -> "CronSchedule":
        """``values``: the five fields of ``_parse_fields`` when it found no error (none is None)."""
        parsed = [value for value in values if value is not None]
        minutes, hours, days, months, weekdays = parsed
        ignored = None
        days_restricted = days != FIELDS[2].full
        weekdays_restricted = weekdays != FIELDS[4].full
        if days_restricted and weekdays_restricted:
            by_day, by_weekday = day_frequencies(days, weekdays, months)
            ignored = "day of week" if by_day > by_weekday else "day of month"
        if ignored == "day of month":
            days = FIELDS[2].full
        elif ignored == "day of week":
            weekdays = FIELDS[4].full
        if days != FIELDS[2].full and not any(_day_weight(d, m) for d in days for m in months):
            field_text = text.split(" ")
            raise CronSyntaxError(
                f"cron field 3 (day of month) '{field_text[2]}': never occurs in month(s) '{field_text[3]}' in '{text}'",
                expression=expression,
                field=3,
                field_name="day of month",
                token=field_text[2],
                column=len(field_text[0]) + len(field_text[1]) + 2,
            )
        return cls(expression, timezone, delay, minutes, hours, days, months, weekdays, ignored, zone=resolve_timezone(timezone))

    # -- questions ---------------------------------------------------------------------

    @property
    def is_manual(self) -> bool:
        """True for the "no scheduled run time" schedule (``""`` / ``None``)."""
        return not self.minutes

    def matches_day(self, day: date) -> bool:
        """Whether the schedule fires (at some time) on this local calendar day."""
        return day.month in self.months and day.day in self.days_of_month and (day.weekday() + 1) % 7 in self.days_of_week

    def _walk(self, after_utc: datetime) -> Iterator[datetime]:
        """Scheduled instants strictly after ``after_utc``, in order, forever."""
        day = after_utc.astimezone(self.zone).date() - timedelta(days=1)
        times = [(h, m) for h in sorted(self.hours) for m in sorted(self.minutes)]
        last = after_utc
        empty = 0
        while True:
            if self.matches_day(day):
                empty = 0
                for hour, minute in times:
                    local = resolve_local(datetime(day.year, day.month, day.day, hour, minute), self.zone)
                    instant = local.astimezone(UTC)
                    if instant > last:  # equal instants: skipped times folded into one
                        last = instant
                        yield local
            else:
                empty += 1
                if empty > _MAX_EMPTY_DAYS:  # pragma: no cover - parse() rules this out
                    raise ScheduleError(f"cron expression '{self.expression}' never fires")
            day += timedelta(days=1)

    def next_fires(self, after: datetime, n: int = 1) -> list[Fire]:
        """The next ``n`` firings whose run time is strictly after ``after``."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ScheduleError(f"n must be a non-negative whole number, got {n!r}")
        after_utc = _check_after(after)
        if self.is_manual or n == 0:
            return []
        delay = timedelta(seconds=self.delay_seconds)
        fires = []
        for scheduled in self._walk(after_utc - delay):
            run_at = (scheduled.astimezone(UTC) + delay).astimezone(self.zone)
            fires.append(Fire(scheduled, run_at))
            if len(fires) == n:
                return fires
        return fires  # pragma: no cover - _walk never ends

    def next_scheduled(self, after: datetime, n: int = 1) -> list[datetime]:
        """The next ``n`` scheduled times strictly after ``after`` (delay not added)."""
        delay = timedelta(seconds=self.delay_seconds)
        return [f.scheduled_at for f in self.next_fires(_check_after(after) + delay, n)]

    def next_runs(self, after: datetime, n: int = 1) -> list[datetime]:
        """The next ``n`` run times (scheduled time + delay) strictly after ``after``."""
        return [f.run_at for f in self.next_fires(after, n)]

    def next_run(self, after: datetime) -> datetime | None:
        """The next run time strictly after ``after``; None for a schedule run by hand."""
        runs = self.next_runs(after, 1)
        return runs[0] if runs else None

    def describe(self) -> str:
        """A short English description, e.g. "at 00:10 every day (UTC)"."""
        return describe(self)


__all__ = ["CronSchedule", "Fire", "PRESETS", "validate", "day_frequencies", "DAY_NAMES", "MONTH_NAMES"]
