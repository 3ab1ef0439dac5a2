"""Test doubles shared by test modules: a clock that moves only when told (or slept on)."""

from __future__ import annotations

import asyncio


class FakeClock:
    """Monotonic seconds that move only through ``advance`` or ``sleep`` (which yields to the loop)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)
