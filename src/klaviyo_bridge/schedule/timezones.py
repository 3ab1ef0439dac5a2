"""Time zones for schedules: IANA names only, and one rule for DST gaps and overlaps.

Why its own module: the seed (connector:create, "Scheduled Execution") accepts only
"extended" names such as 'Asia/Tokyo' and warns that abbreviations like PST and CST
"may lead to unexpected schedules".  Python's zoneinfo happily loads 'EST' or 'MST'
(fixed offsets without DST) and legacy aliases such as 'Japan', so a plain
``ZoneInfo(name)`` is not enough: we reject every name that is not ``UTC`` or an
``Area/Location`` name and suggest the IANA name the user most likely meant.

DST, decided once for every schedule (wall-clock times come from the cron fields):

* a local time that does not exist (skipped by a spring-forward gap) runs at the first
  valid instant after the gap, i.e. the moment of the transition (02:30 on the day New
  York springs forward runs at 03:00 EDT); several skipped times collapse into one run;
* a local time that occurs twice (fall-back overlap) runs once, at its first occurrence
  (the daylight-time one, ``fold=0``); the repeated hour produces no second run.
"""

from __future__ import annotations

import zoneinfo
from datetime import datetime, timedelta, timezone
from functools import lru_cache

from klaviyo_bridge.errors import ScheduleError

UTC = timezone.utc

#: Common abbreviations and the IANA zone people usually mean by them.
ABBREVIATIONS: dict[str, str] = {
    "PST": "America/Los_Angeles",
    "PDT": "America/Los_Angeles",
    "PT": "America/Los_Angeles",
    "MST": "America/Denver",
    "MDT": "America/Denver",
    "MT": "America/Denver",
    "CST": "America/Chicago",
    "CDT": "America/Chicago",
    "CT": "America/Chicago",
    "EST": "America/New_York",
    "EDT": "America/New_York",
    "ET": "America/New_York",
    "AKST": "America/Anchorage",
    "HST": "Pacific/Honolulu",
    "GMT": "Europe/London",
    "BST": "Europe/London",
    "WET": "Europe/Lisbon",
    "CET": "Europe/Berlin",
    "CEST": "Europe/Berlin",
    "MET": "Europe/Berlin",
    "EET": "Europe/Athens",
    "MSK": "Europe/Moscow",
    "IST": "Asia/Kolkata",
    "JST": "Asia/Tokyo",
    "KST": "Asia/Seoul",
    "HKT": "Asia/Hong_Kong",
    "SGT": "Asia/Singapore",
    "AEST": "Australia/Sydney",
    "AEDT": "Australia/Sydney",
    "NZST": "Pacific/Auckland",
    "NZDT": "Pacific/Auckland",
    "BRT": "America/Sao_Paulo",
}


class TimezoneError(ScheduleError):
    """The schedule's time zone is not an accepted IANA name.

    Attributes: ``timezone`` (what was given) and ``suggestion`` (an IANA name, or None).
    """

    def __init__(self, message: str, *, timezone: str, suggestion: str | None = None) -> None:
        super().__init__(
            message, field="timezone", hint=f"use {suggestion}" if suggestion else "use an IANA name such as Europe/Berlin"
        )
        self.timezone = timezone
        self.suggestion = suggestion


@lru_cache(maxsize=1)
def _available() -> dict[str, str]:
    return {name.lower(): name for name in zoneinfo.available_timezones()}


def _reject(name: str, why: str, suggestion: str | None) -> TimezoneError:
    hint = f"use {suggestion}" if suggestion else "use an IANA name such as Europe/Berlin"
    return TimezoneError(
        f"time zone '{name}': {why}; {hint} (IANA names only, as in Asia/Tokyo or America/Los_Angeles)",
        timezone=name,
        suggestion=suggestion,
    )


@lru_cache(maxsize=256)
def resolve_timezone(name: str) -> zoneinfo.ZoneInfo:
    """Return the zone for an IANA ``Area/Location`` name (or ``UTC``); else TimezoneError."""
    if not isinstance(name, str) or not name.strip():
        raise _reject(str(name), "no time zone given", "UTC")
    if name != name.strip():
        raise _reject(name, "remove the surrounding spaces", name.strip())
    upper = name.upper()
    if upper in ABBREVIATIONS:
        raise _reject(
            name, "abbreviations are not supported (they are ambiguous and ignore daylight saving time)", ABBREVIATIONS[upper]
        )
    if name == "UTC":
        return zoneinfo.ZoneInfo("UTC")
    if "/" not in name:
        suggestion = "UTC" if upper in {"UTC", "UCT", "ZULU", "UNIVERSAL", "Z"} else None
        raise _reject(name, "not an Area/Location name", suggestion)
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        pass
    suggestion = _available().get(name.lower())
    raise _reject(name, "unknown time zone" + (" (names are case-sensitive)" if suggestion else ""), suggestion)


def _exists(local: datetime) -> bool:
    """True when the wall time ``local`` (aware, fold=0) survives a UTC round trip."""
    back = local.astimezone(UTC).astimezone(local.tzinfo)
    return back.replace(tzinfo=None, fold=0) == local.replace(tzinfo=None, fold=0)


def resolve_local(naive: datetime, zone: zoneinfo.ZoneInfo) -> datetime:
    """Turn a wall-clock time into an instant in ``zone`` by the module's DST rule.

    Repeated times take their first occurrence; skipped times move to the end of the gap
    (the transition instant).  The result is normalised (``fold`` set as zoneinfo would
    set it), so its ``utcoffset()`` and ``isoformat()`` are the real ones.
    """
    local = naive.replace(tzinfo=zone, fold=0)
    if _exists(local):
        return local.astimezone(UTC).astimezone(zone)
    # In a gap: fold=1 reads the time with the offset after the transition, fold=0 with
    # the offset before it; the transition instant lies between the two readings.
    early = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)
    late = local.astimezone(UTC)
    if early > late:
        early, late = late, early
    after_offset = naive.replace(tzinfo=zone, fold=1).utcoffset()
    low, high = 0, int((late - early).total_seconds())
    while low < high:  # first second whose offset is the post-transition one
        middle = (low + high) // 2
        if (early + timedelta(seconds=middle)).astimezone(zone).utcoffset() == after_offset:
            high = middle
        else:
            low = middle + 1
    return (early + timedelta(seconds=low)).astimezone(zone)
