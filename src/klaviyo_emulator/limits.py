"""The server side of Klaviyo's rate limits: one sliding log per operation and tier.

Klaviyo limits each endpoint per account with a burst window (1 s), a steady window
(1 min) and for some a daily cap, all published in ``x-klaviyo-ratelimit``. Some
operations have a lower tier for some requests (``get_profiles`` asking for
``additional-fields[profile]=predictive_analytics``): those requests are counted in
their own log against the lower limits.

The emulator keeps, per (operation, tier), the arrival times of granted requests and
refuses one when any window already holds its count. Sliding logs are stricter than
fixed windows: a client that keeps them keeps Klaviyo's too.

An account may have lower limits than the published ones (``--rate-limits SPEC``,
``EmulatorSettings.rate_limit_overrides``): ``get_profiles=5/50`` gives get_profiles 5 a
second and 50 a minute (``5/50/1000`` adds a daily cap), ``get_profiles:predictive=2/20`` one
tier of it (the tier's parameter value), ``*=0.1`` every operation a tenth of its published
limits (at least 1). The RateLimit-* headers then tell the account's limits, as Klaviyo's do.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

from klaviyo_spec import RateLimit


def parse_overrides(text: str) -> dict[str, "RateLimit | float"]:
    """``OP[:TIER]=BURST/STEADY[/DAILY]`` or ``*=FACTOR`` items, comma-separated; a ValueError
    names the bad item."""
    out: dict[str, RateLimit | float] = {}
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        key, eq, value = item.partition("=")
        key = key.strip()
        try:
            if not eq or not key:
                raise ValueError
            if key == "*":
                factor = float(value)
                if not 0 < factor:
                    raise ValueError
                out[key] = factor
                continue
            numbers = [int(n) for n in value.split("/")]
            if len(numbers) not in (2, 3) or min(numbers) < 1:
                raise ValueError
        except ValueError:
            raise ValueError(
                f"rate limit override {item!r}: use OP=BURST/STEADY[/DAILY] (e.g. get_profiles=5/50), "
                "OP:TIER=BURST/STEADY or *=FACTOR (e.g. *=0.1)"
            ) from None
        out[key] = RateLimit(numbers[0], numbers[1], numbers[2] if len(numbers) == 3 else None)
    return out


def overridden(overrides: dict[str, RateLimit | float], operation_id: str, tier: str, limit: RateLimit) -> RateLimit:
    """The account's limit for this operation and tier under ``overrides``."""
    if not overrides:
        return limit
    tier_value = tier.partition("=")[2]
    found = overrides.get(f"{operation_id}:{tier_value}") if tier else overrides.get(operation_id)
    if isinstance(found, RateLimit):
        return found
    factor = overrides.get("*")
    if isinstance(factor, float):

        def scale(n: int) -> int:
            return max(1, int(n * factor))

        return RateLimit(
            scale(limit.burst_per_second), scale(limit.steady_per_minute), scale(limit.daily) if limit.daily else None
        )
    return limit


class WindowLog:
    """Sliding log for one operation and tier: N requests per T seconds, for each window."""

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self.windows = limit.windows()
        self._log: deque[float] = deque(maxlen=max(n for n, _ in self.windows))

    def wait(self, now: float) -> float:
        """Seconds until one more request fits every window (0: it fits now)."""
        log, at = self._log, now
        for count, seconds in self.windows:
            if len(log) >= count:
                at = max(at, log[-count] + seconds)
        return at - now

    def take(self, now: float) -> None:
        self._log.append(now)

    @property
    def last(self) -> float:
        return self._log[-1] if self._log else float("-inf")

    def steady_state(self, now: float) -> tuple[int, int, int]:
        """(limit, remaining, seconds until a slot frees) of the steady window, for the headers."""
        count, seconds = self.limit.steady_per_minute, 60.0
        log = self._log
        # Granted slots are in arrival order; count those still in the window from the right.
        used = 0
        for t in reversed(log):
            if t <= now - seconds or used >= count:
                break
            used += 1
        oldest = log[-used] if used else now
        reset = max(0, math.ceil(oldest + seconds - now)) if used else 0
        return count, max(0, count - used), reset


class ServerLimits:
    """Every operation's logs for one account (one emulator)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, enabled: bool = True) -> None:
        self.clock = clock
        self.enabled = enabled
        self._logs: dict[tuple[str, str], WindowLog] = {}

    def log(self, operation_id: str, tier: str, limit: RateLimit) -> WindowLog:
        key = (operation_id, tier)
        found = self._logs.get(key)
        if found is None:
            found = self._logs[key] = WindowLog(limit)
        return found

    def admit(
        self, operation_id: str, limit: RateLimit, *, tier: str = "", arrived: float | None = None
    ) -> tuple[float | None, WindowLog]:
        """Count one request: (None, log) when granted, else (seconds until a slot frees, log).

        ``arrived``: when the request came in, if the caller knows it better than "now"; a
        request counted after a later one is taken as arriving with it (never earlier)."""
        log, now = self.log(operation_id, tier, limit), self.clock()
        if not self.enabled:
            return None, log
        at = now if arrived is None else min(now, max(arrived, log.last))
        wait = log.wait(at)
        if wait <= 0:
            log.take(at)
            return None, log
        return max(0.0, wait - (now - at)), log
