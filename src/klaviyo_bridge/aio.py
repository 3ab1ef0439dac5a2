"""Run a coroutine to completion on the fastest event loop installed.

uvloop (a dependency except on Windows) runs the loop and socket transports in C: a
1M-event import cost the bridge ~10% less CPU than on asyncio's own loop. Semantics are
asyncio.run's (a fresh loop, closed at the end, Ctrl-C cancels the main task).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    try:  # deferred (tests/test_layers.py ALLOWED): optional, absent on Windows
        import uvloop
    except ImportError:  # Windows, or a minimal install
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)
