"""Schedule names and cron settings checked once, for the CLI, the console and workflows alike."""

from __future__ import annotations

import re

from ..errors import ConfigError
from .cron import CronSchedule, validate

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def check_schedule_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise ConfigError(f"schedule name {name!r} is invalid: use letters, digits, '_', '.', '-' (up to 100)",
                          key="name")
    return name


def checked_schedule(cron: str, tz: str, delay: int) -> CronSchedule:
    """The parsed schedule, or one ConfigError listing every problem (keyed to ``cron``)."""
    errors = validate(cron, tz, delay)
    if errors:
        raise ConfigError("; ".join(str(e) for e in errors), key="cron")
    return CronSchedule.parse(cron, tz, delay)
