"""The emulator's HTTP protocol stamps each request's arrival for the rate limiter."""

from __future__ import annotations

import sys

import httpx

from klaviyo_emulator import server
from klaviyo_emulator.arrival import ArrivalStampingProtocol, arrived_at
from klaviyo_emulator.server import serving
from klaviyo_emulator.settings import EmulatorSettings

from ..fakes import FakeClock

HANDLER_LAG = 7.0  # the event loop reaches a handler late (earlier requests' work): the clock moved on


def test_each_request_carries_the_time_it_began_arriving():
    clock = FakeClock(now=100.0)

    class Stamping(ArrivalStampingProtocol):
        pass

    Stamping.clock = staticmethod(clock)

    async def echo_arrival(scope, receive, send):
        if scope["type"] != "http":
            return
        clock.advance(HANDLER_LAG)
        stamp = arrived_at(scope)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": repr(stamp).encode()})

    with serving(echo_arrival, http=Stamping) as url:
        first = float(httpx.get(url + "/").text)
        clock.advance(2.5)
        second = float(httpx.get(url + "/").text)
    # Each is the clock's reading when the request began arriving, not when its handler ran.
    assert (first, second) == (100.0, 100.0 + HANDLER_LAG + 2.5)


def test_a_served_emulator_with_rate_limits_hands_the_gil_to_its_stamping_loop_sooner(monkeypatch):
    """The loop stamps arrivals while the state worker thread decodes and applies bulk imports;
    at Python's default 5 ms switch interval the stamps lagged up to 64 ms under load (a 429
    Klaviyo would not send). ``serve`` owns its process: with limits on it shortens the interval;
    with limits off no stamp is read and the page throughput is kept."""
    seen: list[float] = []
    monkeypatch.setattr(server.uvicorn, "run", lambda *args, **kwargs: seen.append(sys.getswitchinterval()))
    default = sys.getswitchinterval()
    try:
        server.serve(EmulatorSettings(profiles=10, events=10, rate_limits=False))
        server.serve(EmulatorSettings(profiles=10, events=10))
    finally:
        sys.setswitchinterval(default)
    assert seen == [default, server.LIMITS_SWITCH_INTERVAL_SECONDS]
    assert server.LIMITS_SWITCH_INTERVAL_SECONDS < default
