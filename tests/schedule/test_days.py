"""Day rules: the seed's "more often wins" for conflicting day fields, month ends, leap days,
and agreement with croniter wherever the seed and classic cron mean the same thing."""

from __future__ import annotations

from datetime import datetime, timezone
from fractions import Fraction

import pytest

from klaviyo_bridge.schedule import CronSchedule
from klaviyo_bridge.schedule.cron import day_frequencies


def iso(expr: str, after: str, n: int) -> list[str]:
    s = CronSchedule.parse(expr)
    return [d.isoformat()[:10] for d in s.next_runs(datetime.fromisoformat(after), n)]


# -- conflicting day fields -----------------------------------------------------------------


@pytest.mark.parametrize(
    "expr, ignored",
    [
        ("0 0 1 * 1", "day of month"),  # the seed's example: Mondays (52/yr) beat the 1st (12/yr)
        ("0 0 1-10 * 1", "day of week"),  # 120 days a year beat 52 Mondays
        ("0 0 1-7 * 1", "day of week"),  # 84 > 52.18
        ("0 0 1-4 * 1", "day of month"),  # 48 < 52.18
        ("0 0 */5 * mon-fri", "day of month"),  # 72 < 260.9
        ("0 0 1-28 * sat,sun", "day of week"),  # 336 > 104.4
        ("0 0 29,30,31 feb,mar 1", "day of month"),  # feb: 0.2425, mar: 3 -> 3.24 < 8.6 Mondays
    ],
)
def test_the_day_field_that_runs_more_often_wins(expr, ignored):
    assert CronSchedule.parse(expr).ignored_day_field == ignored


def test_frequencies_are_counted_within_the_allowed_months():
    days, weekdays = day_frequencies(frozenset({1, 2, 3, 4}), frozenset({1}), frozenset({2}))
    assert days == 4
    assert weekdays == Fraction(1, 7) * (28 + Fraction(97, 400))
    assert days < weekdays  # 4 days in February vs ~4.03 Mondays


def test_a_tie_goes_to_day_of_week():
    # jan+apr+jun = 91 days = 13 weeks: 13 Mondays; days 1-4 in three months plus the 31st
    # (January only) = 13 days.  Equal, so day of week is kept, as in the seed's example.
    expr = "0 0 1-4,31 jan,apr,jun 1"
    s = CronSchedule.parse(expr)
    by_day, by_weekday = day_frequencies(frozenset({1, 2, 3, 4, 31}), frozenset({1}), frozenset({1, 4, 6}))
    assert by_day == by_weekday == 13
    assert s.ignored_day_field == "day of month"


def test_unrestricted_spellings_do_not_conflict():
    assert CronSchedule.parse("0 0 1-31 * 0-6").ignored_day_field is None
    assert CronSchedule.parse("0 0 */1 * 1").ignored_day_field is None


def test_when_only_one_day_field_is_restricted_it_alone_decides():
    assert iso("0 0 13 * *", "2024-09-01T00:00:00+00:00", 2) == ["2024-09-13", "2024-10-13"]
    assert iso("0 0 * * fri", "2024-09-01T00:00:00+00:00", 2) == ["2024-09-06", "2024-09-13"]
    # '1-31' allows every day: not a restriction, so Fridays decide (classic cron would OR).
    assert iso("0 0 1-31 * fri", "2024-09-01T00:00:00+00:00", 2) == ["2024-09-06", "2024-09-13"]


def test_the_day_of_month_side_wins_and_day_of_week_is_ignored():
    # 1st-10th beat Mondays: runs on the first ten days, Monday or not, and not on later Mondays.
    runs = iso("0 0 1-10 * 1", "2024-09-09T12:00:00+00:00", 3)
    assert runs == ["2024-09-10", "2024-10-01", "2024-10-02"]


def test_describe_mentions_the_ignored_field():
    assert "day of month ignored" in CronSchedule.parse("0 0 1 * 1").describe()


# -- month ends and leap years ----------------------------------------------------------------


def test_31st_skips_months_with_30_days():
    assert iso("0 0 31 * *", "2024-01-31T12:00:00+00:00", 4) == [
        "2024-03-31",
        "2024-05-31",
        "2024-07-31",
        "2024-08-31",
    ]


def test_30th_skips_february():
    assert iso("0 0 30 * *", "2024-01-30T12:00:00+00:00", 2) == ["2024-03-30", "2024-04-30"]


def test_feb_29_runs_only_in_leap_years_and_not_in_2100():
    assert iso("0 0 29 feb *", "2023-01-01T00:00:00+00:00", 3) == [
        "2024-02-29",
        "2028-02-29",
        "2032-02-29",
    ]
    assert iso("0 0 29 2 *", "2096-03-01T00:00:00+00:00", 1) == ["2104-02-29"]


def test_last_days_of_february_in_leap_and_common_years():
    assert iso("0 0 28-31 2 *", "2023-02-27T00:00:00+00:00", 4) == [
        "2023-02-28",
        "2024-02-28",
        "2024-02-29",
        "2025-02-28",
    ]


def test_month_names_with_month_ends():
    assert iso("0 0 31 jan,apr,dec *", "2024-02-01T00:00:00+00:00", 2) == ["2024-12-31", "2025-01-31"]


def test_sunday_as_0_and_7_run_on_the_same_days():
    a = iso("0 0 * * 0", "2024-09-01T12:00:00+00:00", 3)
    assert a == iso("0 0 * * 7", "2024-09-01T12:00:00+00:00", 3) == ["2024-09-08", "2024-09-15", "2024-09-22"]


# -- same answers as croniter where the seed and classic cron agree -----------------------------

CLASSIC = [
    "0 * * * *",
    "0 0 * * *",
    "0 0 1 * *",
    "0 0 1-10 * *",
    "0 0 1,11,21 * *",
    "30 */2 1 * *",
    "*/7 3-5 * * *",
    "15 10 * * mon-fri",
    "0 12 * jan,jul sun",
    "5,35 */6 13 * *",
    "0 0 31 * *",
    "0 0 29 2 *",
    "59 23 * * 6",
    "1-20/5 0 2-31/10 * *",
    "0 0 * */1 0-6",
]


@pytest.mark.parametrize("expr", CLASSIC)
def test_agrees_with_croniter_on_classic_expressions(expr):
    croniter = pytest.importorskip("croniter").croniter
    start = datetime(2023, 12, 30, 7, 13, tzinfo=timezone.utc)
    it = croniter(expr, start)
    expected = [it.get_next(datetime) for _ in range(40)]
    assert CronSchedule.parse(expr).next_runs(start, 40) == expected
