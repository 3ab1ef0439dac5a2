"""describe(): a short line for connector:list / cron:next, built from what will actually run."""

from __future__ import annotations

import pytest

from klaviyo_bridge.schedule import CronSchedule


@pytest.mark.parametrize(
    "expr, tz, delay, text",
    [
        ("10 0 * * *", "UTC", 0, "at 00:10 every day (UTC)"),
        ("@hourly", "UTC", 0, "every hour at :00 every day (UTC)"),
        ("@monthly", "Asia/Tokyo", 0, "at 00:00 on the 1st of the month (Asia/Tokyo)"),
        ("0 0 1-10 * *", "UTC", 0, "at 00:00 on the 1st-10th of the month (UTC)"),
        ("0 0 5,*/10,25 * *", "UTC", 0, "at 00:00 on the 5th, 10th, 20th, 25th, 30th of the month (UTC)"),
        ("* * * * *", "UTC", 0, "every minute every day (UTC)"),
        (
            "0 9 * jan-mar mon-fri",
            "Europe/Berlin",
            600,
            "at 09:00 on Mon-Fri in Jan-Mar (Europe/Berlin); each run starts 600s after its scheduled time",
        ),
        ("0 0 1 * 1", "UTC", 0, "at 00:00 on Mon (UTC); day of month ignored (the other day field runs more often)"),
        ("", "UTC", 0, "no schedule (runs only when started by hand)"),
    ],
)
def test_describe(expr, tz, delay, text):
    assert CronSchedule.parse(expr, timezone=tz, delay_seconds=delay).describe() == text
