"""Form pieces several pages share: the schedule block (presets, custom cron, zone, delay) and
the saved-authentication choice. Validation is the library's (``schedule.naming.schedule_settings``,
``check_schedule_name``); this module only maps its errors' fields onto form fields."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from starlette.datastructures import FormData

from ..errors import BridgeError, ConfigError
from ..schedule.cron import CronSchedule
from ..schedule.naming import check_schedule_name as _check_name
from ..schedule.naming import schedule_settings

#: The seed console's drop-down: (value, label). "" = None (runs only by hand).
PRESETS = (
    ("", "None (run by hand)"),
    ("@hourly", "@hourly (:00)"),
    ("@daily", "@daily (midnight)"),
    ("@monthly", "@monthly"),
    ("custom", "Custom cron…"),
)
COMMON_ZONES = (
    "UTC",
    "America/Los_Angeles",
    "America/New_York",
    "Europe/London",
    "Europe/Paris",
    "Asia/Tokyo",
    "Asia/Singapore",
    "Australia/Sydney",
)


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
        return cls(
            preset=str(form.get("preset") or ""),
            cron=str(form.get("cron") or "").strip(),
            timezone=str(form.get("schedule_timezone") or "UTC").strip() or "UTC",
            delay=str(form.get("delay") or "0").strip() or "0",
        )

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
    """The schedule settings' problems (``schedule_settings``, as the CLI and workflows check
    them) by this form's field names."""
    text = str(delay).strip()
    seconds: str | int = int(text) if re.fullmatch(r"-?\d+", text) else text
    try:
        schedule_settings(expression, tz, seconds)
    except ConfigError as exc:
        return field_messages(exc, FORM_FIELDS)
    return {}


def field_messages(exc: BridgeError, names: dict[str, str] | None = None) -> dict[str, str]:
    """{form field: message} from the error's problems (several for one field joined by "; ")."""
    errors: dict[str, str] = {}
    for problem in exc.problems:
        key = (names or {}).get(problem.field or "", problem.field or "_form")
        errors[key] = f"{errors[key]}; {problem.message}" if key in errors else problem.message
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
