"""Schedules: the seed's cron dialect, IANA time zones and delayed execution.

``CronSchedule.parse(expr, timezone, delay_seconds)`` then ``next_runs(after, n)``;
``validate(expr, timezone, delay_seconds)`` lists problems without scheduling.
"""

from klaviyo_bridge.schedule.cron import PRESETS, CronSchedule, Fire, validate
from klaviyo_bridge.schedule.fields import CronSyntaxError
from klaviyo_bridge.schedule.timezones import TimezoneError, resolve_timezone

__all__ = ["CronSchedule", "CronSyntaxError", "Fire", "PRESETS", "TimezoneError", "resolve_timezone", "validate"]
