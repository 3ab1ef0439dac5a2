"""Every cron example and described run time in the seeds, with the expected times written out.

Seed 001 ("Schedule Query Export Jobs": drop-down presets, the "Custom cron..." tables and
the conflicting-day-fields rule) and seed 004 ("Scheduled Execution": connector:create
"10 0 * * *", @hourly/@daily/@monthly, --timezone, Delay).
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from klaviyo_bridge.schedule import CronSchedule


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def runs(expr: str, after: str, n: int, tz: str = "UTC", delay: int = 0) -> list[str]:
    schedule = CronSchedule.parse(expr, timezone=tz, delay_seconds=delay)
    return [d.isoformat() for d in schedule.next_runs(at(after), n)]


# -- 001: drop-down values ------------------------------------------------------------------


@pytest.mark.parametrize("expr", ["@daily (midnight)", "@daily"])
def test_daily_preset_runs_at_midnight_in_the_time_zone(expr):
    # "Run once a day at midnight (00:00 am) in the specified time zone."
    assert runs(expr, "2024-03-14T09:15:00+00:00", 3, tz="Asia/Tokyo") == [
        "2024-03-15T00:00:00+09:00",
        "2024-03-16T00:00:00+09:00",
        "2024-03-17T00:00:00+09:00",
    ]


@pytest.mark.parametrize("expr", ["@hourly (:00)", "@hourly"])
def test_hourly_preset_runs_every_hour_at_00_minutes(expr):
    # "Run every hour at 00 minutes."
    assert runs(expr, "2024-03-14T09:15:00+00:00", 3) == [
        "2024-03-14T10:00:00+00:00",
        "2024-03-14T11:00:00+00:00",
        "2024-03-14T12:00:00+00:00",
    ]


@pytest.mark.parametrize("expr", ["None", "none", "", '""'])
def test_none_and_empty_mean_no_scheduled_run_time(expr):
    # "None | No schedule." and '"" | Create a job that has no scheduled run time.'
    schedule = CronSchedule.parse(expr)
    assert schedule.is_manual
    assert schedule.next_runs(at("2024-03-14T09:15:00+00:00"), 5) == []
    assert schedule.next_run(at("2024-03-14T09:15:00+00:00")) is None
    assert "by hand" in schedule.describe()


# -- 001: "Custom cron... Details", first table ----------------------------------------------


def test_0_star_star_star_star_runs_once_an_hour():
    assert runs("0 * * * *", "2024-03-14T22:30:00+00:00", 3) == [
        "2024-03-14T23:00:00+00:00",
        "2024-03-15T00:00:00+00:00",
        "2024-03-15T01:00:00+00:00",
    ]


def test_0_0_star_star_star_runs_once_a_day_at_midnight():
    assert runs("0 0 * * *", "2024-02-28T12:00:00+00:00", 3) == [
        "2024-02-29T00:00:00+00:00",
        "2024-03-01T00:00:00+00:00",
        "2024-03-02T00:00:00+00:00",
    ]


@pytest.mark.parametrize("expr", ["0 0 1 * *", "@monthly"])
def test_monthly_runs_at_midnight_on_the_first_day_of_the_month(expr):
    # "Run once a month at midnight on the morning of the first day of the month."
    # (004 lists @monthly among the three special options.)
    assert runs(expr, "2023-12-15T00:00:00+00:00", 3) == [
        "2024-01-01T00:00:00+00:00",
        "2024-02-01T00:00:00+00:00",
        "2024-03-01T00:00:00+00:00",
    ]


# -- 001: field values table ------------------------------------------------------------------


def test_wildcard_example_first_day_of_each_month():
    # '0 0 1 * *': "midnight (00:00) on the first day of each month" -- at the start instant
    # itself nothing runs (times are strictly after), the next is a month later.
    assert runs("0 0 1 * *", "2024-04-01T00:00:00+00:00", 2) == [
        "2024-05-01T00:00:00+00:00",
        "2024-06-01T00:00:00+00:00",
    ]


def test_range_example_first_ten_days_of_each_month():
    # '0 0 1-10 * *': "midnight (00:00) on the first 10 days of each month"
    expected = [f"2024-04-{d:02d}T00:00:00+00:00" for d in range(1, 11)]
    expected.append("2024-05-01T00:00:00+00:00")
    assert runs("0 0 1-10 * *", "2024-03-31T12:00:00+00:00", 11) == expected


def test_list_example_1st_11th_21st():
    # '0 0 1,11,21 * *': "every 1st, 11th, and 21st day of each month"
    assert runs("0 0 1,11,21 * *", "2024-01-31T00:00:00+00:00", 4) == [
        "2024-02-01T00:00:00+00:00",
        "2024-02-11T00:00:00+00:00",
        "2024-02-21T00:00:00+00:00",
        "2024-03-01T00:00:00+00:00",
    ]


def test_periodicity_example_every_2_hours_from_0030_on_the_1st():
    # '30 */2 1 * *': "on the 1st of every month, every 2 hours starting at 00:30"
    expected = [f"2024-06-01T{h:02d}:30:00+00:00" for h in range(0, 24, 2)]
    expected.append("2024-07-01T00:30:00+00:00")
    assert runs("30 */2 1 * *", "2024-05-20T00:00:00+00:00", 13) == expected


def test_periodicity_example_every_5_days_starting_on_the_5th():
    # '0 0 */5 * *': "midnight (00:00) every 5 days starting on the 5th of each month".
    # Seed semantics (classic cron would give the 1st, 6th, 11th, ...).
    assert runs("0 0 */5 * *", "2024-01-31T00:00:00+00:00", 6) == [
        "2024-02-05T00:00:00+00:00",
        "2024-02-10T00:00:00+00:00",
        "2024-02-15T00:00:00+00:00",
        "2024-02-20T00:00:00+00:00",
        "2024-02-25T00:00:00+00:00",
        "2024-03-05T00:00:00+00:00",
    ]
    # In a 30-day month the 30th is also a 5-day step from the 5th.
    assert runs("0 0 */5 * *", "2024-04-26T00:00:00+00:00", 2) == [
        "2024-04-30T00:00:00+00:00",
        "2024-05-05T00:00:00+00:00",
    ]


def test_list_of_value_step_and_value_5th_10th_20th_25th():
    # '0 0 5,*/10,25 * *': "midnight (00:00) every 5th, 10th, 20th, and 25th day of each month"
    assert runs("0 0 5,*/10,25 * *", "2024-01-31T00:00:00+00:00", 5) == [
        "2024-02-05T00:00:00+00:00",
        "2024-02-10T00:00:00+00:00",
        "2024-02-20T00:00:00+00:00",
        "2024-02-25T00:00:00+00:00",
        "2024-03-05T00:00:00+00:00",
    ]


def test_list_of_value_step_and_value_also_runs_on_the_30th():
    # The seed's prose stops at the 25th; */10 (multiples of 10, like */5 above) also
    # selects the 30th in months that have one.  Documented choice, see fields._step_start.
    assert runs("0 0 5,*/10,25 * *", "2024-04-25T00:00:00+00:00", 2) == [
        "2024-04-30T00:00:00+00:00",
        "2024-05-05T00:00:00+00:00",
    ]


def test_the_seed_list_syntax_2_step_5_range_8_10():
    # '2,*/5,8-10' from the table's header, in the minute field.
    schedule = CronSchedule.parse("2,*/5,8-10 0 * * *")
    assert sorted(schedule.minutes) == [0, 2, 5, 8, 9, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55]


# -- 001: conflicting day fields --------------------------------------------------------------


def test_conflicting_day_fields_follow_the_one_that_runs_more_often():
    # '0 0 1 * 1': the 1st of the month vs every Monday -- "The latter specification is
    # followed": every Monday at midnight, and the 1st (a Wednesday in May 2024) is ignored.
    schedule = CronSchedule.parse("0 0 1 * 1")
    assert schedule.ignored_day_field == "day of month"
    assert [d.isoformat() for d in schedule.next_runs(at("2024-04-30T00:00:00+00:00"), 3)] == [
        "2024-05-06T00:00:00+00:00",
        "2024-05-13T00:00:00+00:00",
        "2024-05-20T00:00:00+00:00",
    ]


# -- 004: connector:create "10 0 * * *", time zone, delay ------------------------------------


def test_connector_create_example_runs_daily_at_0010_utc_by_default():
    # The history table shows the runs of "10 0 * * *" (UTC) on 2015-04-11 .. 2015-04-16.
    assert runs("10 0 * * *", "2015-04-10T00:10:04+00:00", 6) == [f"2015-04-{d}T00:10:00+00:00" for d in range(11, 17)]


def test_connector_create_in_asia_tokyo():
    # "--timezone ... like 'Asia/Tokyo'": 00:10 Tokyo time is 15:10 UTC the day before.
    schedule = CronSchedule.parse("10 0 * * *", timezone="Asia/Tokyo")
    first = schedule.next_run(at("2015-04-10T00:00:00+00:00"))
    assert first.isoformat() == "2015-04-11T00:10:00+09:00"
    assert first.astimezone(timezone.utc).isoformat() == "2015-04-10T15:10:00+00:00"


def test_delay_transfer_runs_after_the_scheduled_time():
    # "Delay Transfer -- You can specify a delay to the execution time."
    schedule = CronSchedule.parse("10 0 * * *", delay_seconds=300)
    # At 00:10:04 the 00:10 slot is scheduled in the past but its run (00:15) is ahead.
    fires = schedule.next_fires(at("2015-04-10T00:10:04+00:00"), 2)
    assert [(f.scheduled_at.isoformat(), f.run_at.isoformat()) for f in fires] == [
        ("2015-04-10T00:10:00+00:00", "2015-04-10T00:15:00+00:00"),
        ("2015-04-11T00:10:00+00:00", "2015-04-11T00:15:00+00:00"),
    ]
    assert [d.isoformat() for d in schedule.next_scheduled(at("2015-04-10T00:10:04+00:00"), 2)] == [
        "2015-04-11T00:10:00+00:00",
        "2015-04-12T00:10:00+00:00",
    ]
