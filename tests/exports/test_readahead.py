"""Reading ahead: an export's chunks are prepared in a worker thread while earlier ones are sent."""

import asyncio
import threading
from collections.abc import Iterator

import pytest

from klaviyo_bridge.exports.readahead import ReadAhead


async def test_items_arrive_in_order_and_an_error_after_them():
    def gen() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("row 3: bad")

    got = []
    ahead = ReadAhead(gen())
    with pytest.raises(ValueError, match="row 3"):
        async for item in ahead:
            got.append(item)
    assert got == [1, 2]
    await ahead.aclose()


async def test_it_reads_at_most_depth_items_ahead():
    produced: list[int] = []

    def gen() -> Iterator[int]:
        for i in range(10):
            produced.append(i)
            yield i

    ahead = ReadAhead(gen(), depth=2)
    for _ in range(50):  # let the worker run as far as it may
        await asyncio.to_thread(lambda: None)
    assert produced == [0, 1]
    assert await ahead.__anext__() == 0
    for _ in range(50):
        await asyncio.to_thread(lambda: None)
    assert produced == [0, 1, 2]
    await ahead.aclose()
    assert produced == [0, 1, 2]


async def test_aclose_returns_only_once_the_thread_has_left_the_iterator():
    """The caller closes the query's result after ``aclose``: the thread must not still read it."""
    started, release = threading.Event(), threading.Event()
    inside = []

    def gen() -> Iterator[int]:
        inside.append(True)
        started.set()
        release.wait()
        inside.pop()
        yield 1

    ahead = ReadAhead(gen())
    await asyncio.to_thread(started.wait)
    closing = asyncio.ensure_future(ahead.aclose())
    for _ in range(20):
        await asyncio.sleep(0)
    assert not closing.done() and inside == [True]
    release.set()
    await closing
    assert inside == []
