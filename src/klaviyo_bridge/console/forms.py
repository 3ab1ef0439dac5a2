"""Form pieces several pages share: the schedule block (presets, custom cron, zone, delay) and
the saved-authentication choice. Validation is the library's (``schedule.cron.validate``,
``cli.schedule_cmd._check_name``); this module only maps its errors onto form fields."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from starlette.datastructures import FormData

from ..schedule.naming import check_schedule_name as _check_name
from ..errors import ConfigError
from ..schedule.cron import CronSchedule, validate

#: The seed console's drop-down: (value, label). "" = None (runs only by hand).
PRESETS = (("", "None (run by hand)"), ("@hourly", "@hourly (:00)"), ("@daily", "@daily (midnight)"),
           ("@monthly", "@monthly"), ("custom", "Custom cron…"))
COMMON_ZONES = ("UTC", "America/Los_Angeles", "America/New_York", "Europe/London", "Europe/Paris",
                "Asia/Tokyo", "Asia/Singapore", "Australia/Sydney")


#: The schedule errors' fields -> this form's field names.
FORM_FIELDS = {"cron": "cron", "timezone": "schedule_timezone", "delay": "delay"}


@dataclass
class ScheduleInput:
    preset: str = ""
    cron: str = ""
    timezone: str = "UTC"
    delay: str = "0"
    errors: dict[str, str] = field(default_factory=dict)
    runs: list[datetime] = field(default_factory=list)
    describe: str = ""

    @classmethod
    def from_form(cls, form: FormData) -> "ScheduleInput":
        return cls(preset=str(form.get("preset") or ""), cron=str(form.get("cron") or "").strip(),
                   timezone=str(form.get("schedule_timezone") or "UTC").strip() or "UTC",
                   delay=str(form.get("delay") or "0").strip() or "0")

    @property
    def expression(self) -> str:
        return self.cron if self.preset == "custom" else self.preset

    @property
    def delay_seconds(self) -> int:
        try:
            return int(self.delay)
        except ValueError:
            return -1

    def check(self, now: datetime | None = None) -> bool:
        """Validate with the library; fill ``errors`` (cron / schedule_timezone / delay) and the next 5 runs."""
        self.errors = schedule_errors(self.expression, self.timezone, self.delay)
        if not self.errors:
            schedule = CronSchedule.parse(self.expression, self.timezone, self.delay_seconds)
            self.runs = schedule.next_runs(now or datetime.now(timezone.utc), 5)
            self.describe = schedule.describe()
        return not self.errors


def schedule_errors(expression: str, tz: str, delay: str | int) -> dict[str, str]:
    errors: dict[str, str] = {}
    try:
        seconds = int(delay)
    except (TypeError, ValueError):
        return {"delay": "the delay must be a whole number of seconds"}
    for problem in validate(expression, tz, seconds):
        key = FORM_FIELDS.get(problem.field or "cron", "cron")
        errors[key] = f"{errors[key]}; {problem}" if key in errors else str(problem)
    return errors


def name_error(name: str) -> str | None:
    try:
        _check_name(name)
    except ConfigError as exc:
        return str(exc)
    return None


def text(form: FormData, name: str, default: str = "") -> str:
    return str(form.get(name) or default).strip()


def without_empty(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v not in (None, "", [], False)}
