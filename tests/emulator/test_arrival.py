"""The emulator's HTTP protocol stamps each request's arrival for the rate limiter."""

from __future__ import annotations

import time

import httpx

from klaviyo_emulator.arrival import arrived_at
from klaviyo_emulator.server import serving


async def _echo_arrival(scope, receive, send):
    if scope["type"] != "http":
        return
    stamp = arrived_at(scope)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": repr(stamp).encode()})


def test_each_request_carries_the_time_it_began_arriving():
    with serving(_echo_arrival) as url:
        before = time.monotonic()
        first = float(httpx.get(url + "/").text)
        second = float(httpx.get(url + "/").text)
        after = time.monotonic()
    assert before <= first <= second <= after
