"""IANA-only time zones and the DST rule (gap -> end of the gap, overlap -> first occurrence)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from klaviyo_bridge.errors import ScheduleError
from klaviyo_bridge.schedule import CronSchedule, TimezoneError, resolve_timezone


def iso(expr: str, tz: str, after: str, n: int, delay: int = 0) -> list[str]:
    s = CronSchedule.parse(expr, timezone=tz, delay_seconds=delay)
    return [d.isoformat() for d in s.next_runs(datetime.fromisoformat(after), n)]


# -- names ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "abbreviation, suggestion",
    [
        ("PST", "America/Los_Angeles"),
        ("CST", "America/Chicago"),
        ("EST", "America/New_York"),
        ("JST", "Asia/Tokyo"),
        ("pst", "America/Los_Angeles"),
        ("MST", "America/Denver"),
        ("CET", "Europe/Berlin"),
        ("GMT", "Europe/London"),
    ],
)
def test_abbreviations_are_rejected_with_an_iana_suggestion(abbreviation, suggestion):
    with pytest.raises(TimezoneError) as caught:
        CronSchedule.parse("10 0 * * *", timezone=abbreviation)
    assert f"use {suggestion}" in str(caught.value)
    assert caught.value.timezone == abbreviation and caught.value.suggestion == suggestion
    assert isinstance(caught.value, ScheduleError)


@pytest.mark.parametrize(
    "name, suggestion",
    [
        ("asia/tokyo", "Asia/Tokyo"),
        ("Mars/Olympus_Mons", None),
        ("Japan", None),
        ("+09:00", None),
        ("", "UTC"),
        ("utc", "UTC"),
        (" Asia/Tokyo", "Asia/Tokyo"),
        ("EST5EDT", None),
    ],
)
def test_other_non_iana_names_are_rejected(name, suggestion):
    with pytest.raises(TimezoneError) as caught:
        resolve_timezone(name)
    assert caught.value.suggestion == suggestion
    assert "IANA names only" in str(caught.value)


@pytest.mark.parametrize(
    "name", ["UTC", "Asia/Tokyo", "America/Los_Angeles", "Etc/UTC", "Europe/Berlin", "America/Argentina/Buenos_Aires"]
)
def test_iana_names_are_accepted(name):
    assert str(resolve_timezone(name)) == name


def test_default_zone_is_utc():
    assert CronSchedule.parse("10 0 * * *").timezone == "UTC"


def test_results_are_in_the_schedule_zone_whatever_the_zone_of_after():
    after = datetime(2024, 6, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    run = CronSchedule.parse("0 9 * * *", timezone="America/Los_Angeles").next_run(after)
    assert run.isoformat() == "2024-06-01T09:00:00-07:00"
    assert str(run.tzinfo) == "America/Los_Angeles"


# -- spring forward: skipped local times run at the end of the gap ---------------------------


def test_new_york_spring_forward_skipped_time_runs_at_0300_edt():
    # 2024-03-10: 02:00 EST jumps to 03:00 EDT.
    assert iso("30 2 * * *", "America/New_York", "2024-03-09T00:00:00-05:00", 3) == [
        "2024-03-09T02:30:00-05:00",
        "2024-03-10T03:00:00-04:00",
        "2024-03-11T02:30:00-04:00",
    ]


def test_berlin_spring_forward_skipped_time_runs_at_0300_cest():
    # 2024-03-31: 02:00 CET jumps to 03:00 CEST.
    assert iso("15 2 * * *", "Europe/Berlin", "2024-03-30T12:00:00+01:00", 2) == [
        "2024-03-31T03:00:00+02:00",
        "2024-04-01T02:15:00+02:00",
    ]


def test_several_skipped_times_collapse_into_one_run_and_later_times_are_kept():
    assert iso("0,20,40 2,3 * * *", "America/New_York", "2024-03-10T01:50:00-05:00", 4) == [
        "2024-03-10T03:00:00-04:00",  # 02:00, 02:20, 02:40 and 03:00 itself: one run
        "2024-03-10T03:20:00-04:00",
        "2024-03-10T03:40:00-04:00",
        "2024-03-11T02:00:00-04:00",
    ]


def test_every_15_minutes_across_the_new_york_gap():
    assert iso("*/15 * * * *", "America/New_York", "2024-03-10T01:30:00-05:00", 4) == [
        "2024-03-10T01:45:00-05:00",
        "2024-03-10T03:00:00-04:00",
        "2024-03-10T03:15:00-04:00",
        "2024-03-10T03:30:00-04:00",
    ]


def test_gap_at_midnight_runs_at_the_first_valid_instant():
    # America/Havana springs forward at midnight: 2024-03-10 00:00 CST -> 01:00 CDT.
    assert iso("0 0 * * *", "America/Havana", "2024-03-09T12:00:00-05:00", 2) == [
        "2024-03-10T01:00:00-04:00",
        "2024-03-11T00:00:00-04:00",
    ]


# -- fall back: repeated local times run once, at the first occurrence -----------------------


def test_new_york_fall_back_repeated_time_runs_once_at_the_first_occurrence():
    # 2024-11-03: 02:00 EDT falls back to 01:00 EST; 01:30 happens twice.
    assert iso("30 1 * * *", "America/New_York", "2024-11-02T12:00:00-04:00", 2) == [
        "2024-11-03T01:30:00-04:00",
        "2024-11-04T01:30:00-05:00",
    ]


def test_after_inside_the_second_pass_of_the_repeated_hour_does_not_rerun_it():
    after = "2024-11-03T01:10:00-05:00"  # the second 01:10 (EST), after the 01:30 EDT run
    assert iso("30 1 * * *", "America/New_York", after, 1) == ["2024-11-04T01:30:00-05:00"]


def test_berlin_fall_back_hourly_runs_once_per_local_hour():
    # 2024-10-27: 03:00 CEST falls back to 02:00 CET; the second 02:00 does not run again.
    assert iso("0 * * * *", "Europe/Berlin", "2024-10-27T00:30:00+02:00", 4) == [
        "2024-10-27T01:00:00+02:00",
        "2024-10-27T02:00:00+02:00",
        "2024-10-27T03:00:00+01:00",
        "2024-10-27T04:00:00+01:00",
    ]


def test_daily_job_keeps_its_wall_clock_time_across_dst():
    runs = iso("0 9 * * *", "Europe/Berlin", "2024-03-30T00:00:00+00:00", 2)
    assert runs == ["2024-03-30T09:00:00+01:00", "2024-03-31T09:00:00+02:00"]


# -- delay is elapsed time, also across a DST change ------------------------------------------


def test_delay_is_elapsed_time_across_the_gap():
    # Scheduled 01:30 EST; 3600 s later the wall clock reads 03:30 EDT.
    s = CronSchedule.parse("30 1 * * *", timezone="America/New_York", delay_seconds=3600)
    fire = s.next_fires(datetime.fromisoformat("2024-03-10T00:00:00-05:00"), 1)[0]
    assert fire.scheduled_at.isoformat() == "2024-03-10T01:30:00-05:00"
    assert fire.run_at.isoformat() == "2024-03-10T03:30:00-04:00"
    # Python subtracts same-zone datetimes by wall clock (2 h here); elapsed time is 1 h.
    utc = timezone.utc
    assert fire.run_at.astimezone(utc) - fire.scheduled_at.astimezone(utc) == timedelta(hours=1)


def test_delay_is_elapsed_time_across_the_overlap():
    # Scheduled 01:30 EDT; 3600 s later it is 01:30 again, now EST.
    s = CronSchedule.parse("30 1 * * *", timezone="America/New_York", delay_seconds=3600)
    fire = s.next_fires(datetime.fromisoformat("2024-11-03T00:00:00-04:00"), 1)[0]
    assert fire.run_at.isoformat() == "2024-11-03T01:30:00-05:00"
    assert fire.run_at.fold == 1


def test_run_times_are_strictly_after_and_increasing():
    s = CronSchedule.parse("*/10 0-3 * * *", timezone="America/New_York", delay_seconds=90)
    for after in ("2024-03-09T23:00:00-05:00", "2024-11-02T23:00:00-04:00"):
        start = datetime.fromisoformat(after)
        runs = [r.astimezone(timezone.utc) for r in s.next_runs(start, 60)]
        assert runs[0] > start and runs == sorted(set(runs))
