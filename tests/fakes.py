"""Test doubles shared by test modules: a clock that moves only when told (or slept on)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta


class FakeClock:
    """Monotonic seconds that move only through ``advance`` or ``sleep`` (which yields to the loop)."""

    def __init__(self, now: float = 1000.0, *, sleep_advances: bool = True) -> None:
        self.now = now
        self.sleeps: list[float] = []
        #: False: ``sleep`` only records what was asked (a test that reads grant times from it)
        self.sleep_advances = sleep_advances

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    @property
    def t(self) -> float:
        """The same reading as ``now`` (older tests spell it ``t``)."""
        return self.now

    @t.setter
    def t(self, value: float) -> None:
        self.now = value

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if self.sleep_advances:
            self.now += max(0.0, seconds)
            await asyncio.sleep(0)


class FakeWallClock:
    """A wall clock (aware datetimes) that moves only through ``sleep`` or by setting ``now``."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
