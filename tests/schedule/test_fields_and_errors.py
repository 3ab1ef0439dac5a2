"""Field syntax (names, lists, ranges, steps, Sunday as 7) and errors that point at the field."""

from __future__ import annotations

from datetime import datetime

import pytest

from klaviyo_bridge.errors import BridgeError, ScheduleError
from klaviyo_bridge.schedule import CronSchedule, CronSyntaxError, validate


def fields(expr: str) -> tuple[list[int], ...]:
    s = CronSchedule.parse(expr)
    return tuple(sorted(v) for v in (s.minutes, s.hours, s.days_of_month, s.months, s.days_of_week))


# -- names --------------------------------------------------------------------------------


@pytest.mark.parametrize("day", ["sun", "SUN", "Sun", "0", "7"])
def test_sunday_by_name_any_case_and_as_0_or_7(day):
    assert fields(f"0 0 * * {day}")[4] == [0]


def test_named_days_and_months_in_ranges_and_lists():
    assert fields("0 0 * jan-mar,Jun,dec mon-wed,FRI")[3:] == ([1, 2, 3, 6, 12], [1, 2, 3, 5])


def test_all_names_map_to_their_numbers():
    names = "sun,mon,tue,wed,thu,fri,sat"
    assert fields(f"0 0 * * {names}")[4] == list(range(7))  # unrestricted, same as '*'
    months = "jan,feb,mar,apr,may,jun,jul,aug,sep,oct,nov,dec"
    assert fields(f"0 0 * {months} *")[3] == list(range(1, 13))


def test_range_ending_in_7_wraps_to_sunday():
    assert fields("0 0 * * fri-7")[4] == [0, 5, 6]
    assert fields("0 0 * * 5-7")[4] == [0, 5, 6]
    assert fields("0 0 * * fri-sun")[4] == [0, 5, 6]
    assert fields("0 0 * * sun-tue")[4] == [0, 1, 2]


def test_named_values_run_on_the_right_days():
    # 2024-05-06 is a Monday.
    s = CronSchedule.parse("0 9 * * mon,fri")
    assert [d.isoformat() for d in s.next_runs(datetime.fromisoformat("2024-05-06T10:00:00+00:00"), 3)] == [
        "2024-05-10T09:00:00+00:00",
        "2024-05-13T09:00:00+00:00",
        "2024-05-17T09:00:00+00:00",
    ]


# -- lists, ranges, steps ------------------------------------------------------------------


def test_range_with_step_starts_at_the_range_start():
    assert fields("1-20/5 0 * * *")[0] == [1, 6, 11, 16]
    assert fields("0 0 2-31/10 * *")[2] == [2, 12, 22]


def test_steps_count_from_zero_on_every_field():
    # minute/hour/day of week start at 0: same as classic cron.
    assert fields("*/15 */6 * * *")[:2] == ([0, 15, 30, 45], [0, 6, 12, 18])
    assert fields("0 0 * * */2")[4] == [0, 2, 4, 6]
    # day of month and month start at 1: multiples of the step (the seed's reading).
    assert fields("0 0 */7 * *")[2] == [7, 14, 21, 28]
    assert fields("0 0 1 */3 *")[3] == [3, 6, 9, 12]
    assert fields("0 0 1 */1 *")[3] == list(range(1, 13))


def test_list_mixing_values_steps_and_ranges():
    assert fields("0 1,*/8,20-21 * * *")[1] == [0, 1, 8, 16, 20, 21]
    assert fields("0 0 1,*/15,20-22/2 * *")[2] == [1, 15, 20, 22, 30]


# -- presets -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "preset, same_as",
    [
        ("@hourly", "0 * * * *"),
        ("@HOURLY", "0 * * * *"),
        ("@daily", "0 0 * * *"),
        ("@monthly", "0 0 1 * *"),
        ("@daily (midnight)", "0 0 * * *"),
        ("@hourly (:00)", "0 * * * *"),
    ],
)
def test_presets_expand(preset, same_as):
    assert fields(preset) == fields(same_as)
    assert CronSchedule.parse(preset).expression == preset  # shown as typed


@pytest.mark.parametrize("preset", ["@weekly", "@yearly", "@annually", "@reboot", "@midnight"])
def test_presets_the_seed_does_not_list_are_rejected_with_the_alternatives(preset):
    with pytest.raises(CronSyntaxError, match="use @hourly, @daily, @monthly"):
        CronSchedule.parse(preset)


# -- errors point at the field --------------------------------------------------------------


@pytest.mark.parametrize(
    "expr, field, name, token, message",
    [
        ("0 0 32 * *", 3, "day of month", "32", "cron field 3 (day of month) '32': out of range 1-31"),
        ("60 0 * * *", 1, "minute", "60", "cron field 1 (minute) '60': out of range 0-59"),
        ("0 24 * * *", 2, "hour", "24", "cron field 2 (hour) '24': out of range 0-23"),
        ("0 0 0 * *", 3, "day of month", "0", "cron field 3 (day of month) '0': out of range 1-31"),
        ("0 0 * 13 *", 4, "month", "13", "cron field 4 (month) '13': out of range 1-12"),
        ("0 0 * * 8", 5, "day of week", "8", "cron field 5 (day of week) '8': out of range 0-6"),
        ("0 0 * foo *", 4, "month", "foo", "cron field 4 (month) 'foo': unknown name; names are jan"),
        ("0 0 * * monday", 5, "day of week", "monday", "cron field 5 (day of week) 'monday': unknown name"),
        ("x 0 * * *", 1, "minute", "x", "cron field 1 (minute) 'x': not a number"),
        ("0 0 1,,2 * *", 3, "day of month", "1,,2", "stray comma"),
        ("0 0 1, * *", 3, "day of month", "1,", "stray comma"),
        ("0 0 10-5 * *", 3, "day of month", "10-5", "range goes backwards"),
        ("*/0 0 * * *", 1, "minute", "0", "step must be at least 1"),
        ("*/x 0 * * *", 1, "minute", "x", "step must be a positive whole number"),
        ("*/60 0 * * *", 1, "minute", "60", "step larger than the field's maximum 59"),
        ("5/10 0 * * *", 1, "minute", "5/10", "a step needs '*' or a range"),
        ("0 0 *,5 * *", 3, "day of month", "*", "'*' cannot be part of a list"),
        ("0 0 1- * *", 3, "day of month", "1-", "missing value"),
        ("0 0 -1 * *", 3, "day of month", "-1", "missing value"),
        ("0 0 1.5 * *", 3, "day of month", "1.5", "not a number"),
    ],
)
def test_field_errors_name_the_field_and_token(expr, field, name, token, message):
    with pytest.raises(CronSyntaxError) as caught:
        CronSchedule.parse(expr)
    error = caught.value
    assert message in str(error)
    assert (error.field_number, error.field_name, error.token, error.expression) == (field, name, token, expr)
    assert error.field == "cron" and error.to_dict()["field"] == "cron"  # the setting, as data
    assert isinstance(error, ScheduleError) and isinstance(error, BridgeError)


def test_error_column_points_into_the_expression():
    error = validate("0 0 1,40 * *")[0]
    assert error.column == 6 and "0 0 1,40 * *"[error.column :].startswith("40")
    error = validate("0 0 * jan-xyz *")[0]
    assert "0 0 * jan-xyz *"[error.column :].startswith("xyz")


@pytest.mark.parametrize(
    "expr, message",
    [
        ("0 0 * *", "expected 5 fields"),
        ("0 0 * * * *", "got 6"),
        ("0  0 * * *", "single space (found two spaces)"),
        ("0 0\t* * *", "single space between fields, not '\\t'"),
        (" 0 0 * * *", "leading/trailing whitespace"),
        ("0 0 * * * ", "leading/trailing whitespace"),
        ("   ", "leading/trailing whitespace"),
        ("Custom cron...", "needs an expression"),
    ],
)
def test_structural_errors(expr, message):
    with pytest.raises(CronSyntaxError) as caught:
        CronSchedule.parse(expr)
    assert message in str(caught.value)
    assert caught.value.field_number is None


def test_day_that_never_occurs_in_the_chosen_months_is_an_error():
    with pytest.raises(CronSyntaxError, match=r"cron field 3 \(day of month\) '31': never occurs"):
        CronSchedule.parse("0 0 31 apr,jun,sep,nov *")
    with pytest.raises(CronSyntaxError, match="never occurs"):
        CronSchedule.parse("0 0 30,31 feb *")
    CronSchedule.parse("0 0 29 feb *")  # leap days do occur


def test_validate_reports_every_problem_at_once_and_nothing_when_valid():
    assert validate("10 0 * * *") == []
    assert validate("") == []
    problems = validate("99 0 32 * funday", timezone="PST", delay_seconds=-5)
    assert [getattr(p, "field_number", None) for p in problems] == [1, 3, 5, None, None]
    assert [p.field for p in problems] == ["cron", "cron", "cron", "timezone", "delay"]
    assert "America/Los_Angeles" in str(problems[3])
    assert "negative" in str(problems[4])


@pytest.mark.parametrize("bad", [None, 1.5, "10", True])
def test_delay_must_be_whole_seconds(bad):
    with pytest.raises(ScheduleError, match="whole number of seconds"):
        CronSchedule.parse("@daily", delay_seconds=bad)


def test_delay_must_not_be_negative():
    with pytest.raises(ScheduleError, match="must not be negative"):
        CronSchedule.parse("@daily", delay_seconds=-1)


def test_after_must_be_timezone_aware():
    with pytest.raises(ScheduleError, match="timezone-aware"):
        CronSchedule.parse("@daily").next_runs(datetime(2024, 1, 1), 1)


def test_non_string_expression_is_a_schedule_error():
    with pytest.raises(ScheduleError, match="must be a string"):
        CronSchedule.parse(None)  # type: ignore[arg-type]
