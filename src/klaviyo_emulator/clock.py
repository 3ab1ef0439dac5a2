"""The account's clock: what "now" is for the synthetic data and for every write.

``--clock`` / ``EmulatorSettings.clock`` takes:

* ``real`` (the default of ``klaviyo-emulator`` / ``klaviyo-bridge emulator``): the data spreads
  over the two years before the real time at start, and profiles, lists, events and jobs
  created while it runs are stamped with the real time, so an incremental import after an
  export shows the new data;
* ``fixed:ISO`` (e.g. ``fixed:2026-01-01T00:00:00Z``): now is ISO and stays there (same
  seed and same requests, same bytes);
* ``offset:DURATION`` (e.g. ``offset:-30d``, ``offset:+2h``, ``offset:-90s``): the real time
  shifted by DURATION, moving.

Without a clock (``None``, the library's and the tests' default), now is ``settings.now`` plus
the time elapsed on the app's clock (a fake clock in tests).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from .timefmt import parse_datetime

_OFFSET_RE = re.compile(r"^([+-]?)(\d+(?:\.\d+)?)([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class ClockSpec:
    kind: str  # "real" | "fixed" | "offset"
    at: float = 0.0  # fixed: the instant; offset: seconds added to the real time

    def start(self, wall: Callable[[], float] = time.time) -> int:
        """Now at the emulator's start (epoch seconds): the anchor of the synthetic data."""
        return int(self.at) if self.kind == "fixed" else int(wall() + self.at)

    def now_function(self, wall: Callable[[], float] = time.time) -> Callable[[], int]:
        if self.kind == "fixed":
            at = int(self.at)
            return lambda: at
        offset = self.at
        return lambda: int(wall() + offset)

    def describe(self) -> str:
        if self.kind == "fixed":
            return f"fixed at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(self.at))}"
        if self.kind == "offset":
            return f"real time {'+' if self.at >= 0 else '-'}{abs(self.at):g}s"
        return "real time"


def parse_clock(text: str) -> ClockSpec:
    """'real' | 'fixed:ISO' | 'offset:[+-]N(s|m|h|d)'; a ValueError names what is wrong."""
    text = text.strip()
    kind, _, arg = text.partition(":")
    if kind == "real" and not arg:
        return ClockSpec("real")
    if kind == "fixed":
        at = parse_datetime(arg) if arg else None
        if at is None:
            raise ValueError(f"--clock fixed:ISO needs an ISO 8601 datetime, e.g. fixed:2026-01-01T00:00:00Z (got {arg!r})")
        return ClockSpec("fixed", float(at))
    if kind == "offset":
        m = _OFFSET_RE.match(arg)
        if not m:
            raise ValueError(f"--clock offset:DURATION needs e.g. offset:-30d, offset:+2h or offset:-90s (got {arg!r})")
        seconds = float(m.group(2)) * _UNIT[m.group(3)]
        return ClockSpec("offset", -seconds if m.group(1) == "-" else seconds)
    raise ValueError(f"unknown clock {text!r}: use real, fixed:ISO or offset:DURATION")
