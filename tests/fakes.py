"""Test doubles shared by test modules: a clock that moves only when told (or slept on)."""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Awaitable
from datetime import datetime, timedelta
from typing import Any


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


class VirtualClock:
    """Virtual seconds for concurrent sleepers: each ``sleep`` waits until ``run`` moves the
    clock to its wake time, earliest first, once every task has gone as far as it can."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = 0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._seq += 1
        heapq.heappush(self._sleepers, (self.now + max(0.0, seconds), self._seq, fut))
        await fut

    async def run(self, work: Awaitable[Any]) -> Any:
        """Await ``work``, moving virtual time whenever nothing else can run."""
        task = asyncio.ensure_future(work)
        while not task.done():
            for _ in range(20):  # let every ready task reach its next sleep
                await asyncio.sleep(0)
            if task.done() or not self._sleepers:
                continue
            wake, _, fut = heapq.heappop(self._sleepers)
            self.now = max(self.now, wake)
            fut.set_result(None)
        return task.result()


class FakeWallClock:
    """A wall clock (aware datetimes) that moves only through ``sleep`` or by setting ``now``."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
