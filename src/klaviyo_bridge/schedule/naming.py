"""Schedule names and cron settings checked once, for the CLI, the console and workflows alike.

``ScheduleSettings`` is the schedule's settings model (cron, timezone, delay): every entry point
validates through it, and ``validation.config_error_from`` turns its report into the same
``ConfigError`` (one problem per field: ``cron``, ``timezone``, ``delay``) wherever it came from.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from ..errors import ConfigError, ScheduleError
from ..validation import config_error_from
from .cron import CronSchedule, check_delay, validate
from .timezones import resolve_timezone

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def check_schedule_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise ConfigError(f"schedule name {name!r} is invalid: use letters, digits, '_', '.', '-' (up to 100)", key="name")
    return name


class ScheduleSettings(BaseModel):
    """When a schedule runs: a cron expression or preset ("" = only by hand), the IANA zone of
    its fields, and a delay in whole seconds after each time."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cron: str
    timezone: str = "UTC"
    delay: int = 0

    @field_validator("cron", mode="before")
    @classmethod
    def _cron(cls, value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueError(f"cron expression must be a string, got {type(value).__name__}")
        problems = [p for p in validate(value) if p.field == "cron"]  # the zone and delay are checked below
        if problems:
            raise ValueError("; ".join(str(p) for p in problems))
        return value

    @field_validator("timezone", mode="before")
    @classmethod
    def _zone(cls, value: Any) -> Any:
        try:
            resolve_timezone(value)
        except (ScheduleError, TypeError) as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("delay", mode="before")
    @classmethod
    def _delay(cls, value: Any) -> Any:
        try:
            return check_delay(value)
        except ScheduleError as exc:
            raise ValueError(str(exc)) from None

    def parsed(self) -> CronSchedule:
        return CronSchedule.parse(self.cron, self.timezone, self.delay)


def schedule_settings(cron: Any, tz: Any = "UTC", delay: Any = 0) -> ScheduleSettings:
    """The validated settings, or one ConfigError naming every bad field (cron, timezone, delay)."""
    try:
        return ScheduleSettings.model_validate({"cron": cron, "timezone": tz, "delay": delay})
    except ValidationError as exc:
        raise config_error_from(exc, ScheduleSettings) from None


def checked_schedule(cron: str, tz: str, delay: int) -> CronSchedule:
    """The parsed schedule, or one ConfigError listing every problem, each naming its field."""
    return schedule_settings(cron, tz, delay).parsed()
