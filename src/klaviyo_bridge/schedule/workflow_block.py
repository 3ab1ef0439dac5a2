"""A workflow's ``schedule:`` block, as digdag writes it, turned into a cron schedule::

    timezone: Asia/Tokyo          # top level; IANA names only (default UTC)
    schedule:
      daily>: 07:00:00            # or: cron>: "0 1 * * *" / hourly>: 30:00 /
                                  #     weekly>: Sun,09:00:00 / monthly>: 1,09:00:00

Our cron has minute resolution, so the seconds of ``HH:MM:SS`` become the schedule's delay
(``daily>: 07:00:30`` is ``0 7 * * *`` with a 30 s delay): the run starts at exactly that time.
YAML 1.1 reads an unquoted ``10:00:00`` as the base-60 integer 36000; both forms are accepted.
``skip_on_overtime: true`` is accepted (our scheduler never overlaps a schedule's runs); other
digdag options (``start``, ``end``, ``skip_delayed_by``) are refused rather than ignored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from .cron import CronSchedule
from .naming import schedule_settings

OPERATORS = ("cron>", "hourly>", "daily>", "weekly>", "monthly>")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_DAY_NAMES = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
_CLOCK = re.compile(r"^(\d{1,2}):(\d{1,2}):(\d{1,2})$")
_MINSEC = re.compile(r"^(\d{1,2}):(\d{1,2})$")


@dataclass(frozen=True)
class WorkflowSchedule:
    cron: str
    timezone: str
    delay_seconds: int
    source: str  # the operator as written, e.g. "daily>: 07:00:00"

    def parsed(self) -> CronSchedule:
        return CronSchedule.parse(self.cron, self.timezone, self.delay_seconds)


def _clock(value: Any, where: str) -> tuple[int, int, int]:
    """HH:MM:SS (a string, or YAML's base-60 integer) -> (hour, minute, second)."""
    if isinstance(value, int) and not isinstance(value, bool):
        hour, rest = divmod(value, 3600)
        minute, second = divmod(rest, 60)
    else:
        m = _CLOCK.match(str(value).strip())
        if not m:
            raise ConfigError(f"{where}: expected HH:MM:SS, got {value!r}", key=where)
        hour, minute, second = (int(g) for g in m.groups())
    if not (0 <= hour <= 23 and 0 <= minute <= 59 and 0 <= second <= 59):
        raise ConfigError(f"{where}: {value!r} is not a time of day (00:00:00 to 23:59:59)", key=where)
    return hour, minute, second


def _minsec(value: Any, where: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        minute, second = divmod(value, 60)
    else:
        m = _MINSEC.match(str(value).strip())
        if not m:
            raise ConfigError(f"{where}: expected MM:SS (minute and second of each hour), got {value!r}", key=where)
        minute, second = (int(g) for g in m.groups())
    if not (0 <= minute <= 59 and 0 <= second <= 59):
        raise ConfigError(f"{where}: {value!r} is not MM:SS within an hour (00:00 to 59:59)", key=where)
    return minute, second


def _split_day(value: Any, where: str) -> tuple[str, str]:
    text = str(value).strip()
    day, sep, clock = text.partition(",")
    if not sep:
        raise ConfigError(f"{where}: expected DAY,HH:MM:SS, got {value!r}", key=where)
    return day.strip(), clock.strip()


def parse_schedule(doc: Mapping[str, Any], origin: str = "workflow") -> WorkflowSchedule | None:
    """The workflow's schedule, validated (None when it has no ``schedule:`` block)."""
    block = doc.get("schedule")
    tz = doc.get("timezone", "UTC")
    if block is None:
        return None
    if not isinstance(tz, str) or not tz.strip():
        raise ConfigError(f"{origin}: timezone must be an IANA time zone name such as Asia/Tokyo", key="timezone")
    if not isinstance(block, Mapping):
        raise ConfigError(f"{origin}: schedule must be a mapping such as 'daily>: 07:00:00'", key="schedule")
    options = {k: v for k, v in block.items() if not str(k).endswith(">")}
    operators = [k for k in block if str(k).endswith(">")]
    if len(operators) != 1 or operators[0] not in OPERATORS:
        found = ", ".join(map(str, operators)) or "none"
        raise ConfigError(f"{origin}: schedule needs exactly one of {', '.join(OPERATORS)} (found: {found})", key="schedule")
    for key, value in options.items():
        if key == "skip_on_overtime" and value in (True, False):
            continue  # runs of one schedule never overlap here; an overtime slot runs once, later
        raise ConfigError(
            f"{origin}: schedule option {key!r} is not supported (supported: one operator, and skip_on_overtime)",
            key=f"schedule.{key}",
        )
    op = operators[0]
    value = block[op]
    where = f"{origin}: schedule.{op}"
    delay = 0
    if op == "cron>":
        if not isinstance(value, str):
            raise ConfigError(f'{where}: give the cron expression as a string, e.g. "0 1 * * *"', key="schedule.cron>")
        cron = value.strip()
    elif op == "hourly>":
        minute, delay = _minsec(value, where)
        cron = f"{minute} * * * *"
    elif op == "daily>":
        hour, minute, delay = _clock(value, where)
        cron = f"{minute} {hour} * * *"
    elif op == "weekly>":
        day, clock = _split_day(value, where)
        if day.lower() not in _DAYS and day.lower() not in _DAY_NAMES:
            raise ConfigError(f"{where}: {day!r} is not a day of the week (Sun, Mon, ... Sat)", key="schedule.weekly>")
        hour, minute, delay = _clock(clock, where)
        cron = f"{minute} {hour} * * {_DAYS.index(day.lower()[:3])}"
    else:  # monthly>
        day, clock = _split_day(value, where)
        if not day.isdigit() or not 1 <= int(day) <= 31:
            raise ConfigError(f"{where}: {day!r} is not a day of the month (1-31)", key="schedule.monthly>")
        hour, minute, delay = _clock(clock, where)
        cron = f"{minute} {hour} {int(day)} * *"
    if not cron:
        raise ConfigError(f"{where}: the cron expression is empty", key="schedule")
    try:
        schedule_settings(cron, tz.strip(), delay)  # the same checks and words as sched:create and the console
    except ConfigError as exc:
        raise exc.within(where) from None
    return WorkflowSchedule(cron, tz.strip(), delay, f"{op} {value}")
