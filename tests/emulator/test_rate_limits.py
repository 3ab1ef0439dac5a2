"""Klaviyo's rate limits as the emulator applies them: a sliding burst and steady window per
operation and tier (from ``x-klaviyo-ratelimit`` and the spec's per-parameter tiers),
RateLimit-* headers on every answer, Retry-After on 429."""

from __future__ import annotations

import httpx

import klaviyo_spec as spec
from klaviyo_emulator.app import create_app
from klaviyo_emulator.settings import EmulatorSettings

from .conftest import HEADERS
from .writes_helpers import FakeClock

PREDICTIVE = {"additional-fields[profile]": "predictive_analytics", "page[size]": "1"}


def _client(clock: FakeClock) -> httpx.AsyncClient:
    app = create_app(EmulatorSettings(profiles=20, events=20, lists=2, rate_limits=True), clock=clock)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://e.test", headers=HEADERS)


async def test_every_answer_carries_the_steady_window_state():
    clock = FakeClock()
    steady = spec.operation("get_lists").ratelimit.steady_per_minute
    async with _client(clock) as c:
        remaining = []
        for _ in range(3):
            r = await c.get("/api/lists")
            assert r.status_code == 200
            assert r.headers["RateLimit-Limit"] == str(steady)
            assert 1 <= int(r.headers["RateLimit-Reset"]) <= 60
            remaining.append(int(r.headers["RateLimit-Remaining"]))
            clock.advance(0.5)
        assert remaining == [steady - 1, steady - 2, steady - 3]
        # a 400 still counts and still says so
        bad = await c.get("/api/lists", params={"sort": "colour"})
        assert bad.status_code == 400 and bad.headers["RateLimit-Remaining"] == str(steady - 4)
        clock.advance(61)
        assert (await c.get("/api/lists")).headers["RateLimit-Remaining"] == str(steady - 1)


async def test_429_says_when_to_come_back():
    clock = FakeClock()
    async with _client(clock) as c:
        assert (await c.get("/api/accounts")).status_code == 200  # XS: 1/s, 15/m
        r = await c.get("/api/accounts")
        assert r.status_code == 429 and r.headers["Retry-After"] == "1"
        assert r.headers["RateLimit-Remaining"] == "14"
        assert r.json()["errors"][0]["code"] == "throttled"
        # the steady window: 15 a minute, then a wait until the oldest leaves it
        for _ in range(14):
            clock.advance(1.0)
            assert (await c.get("/api/accounts")).status_code == 200
        clock.advance(1.0)
        r = await c.get("/api/accounts")
        assert r.status_code == 429 and 44 <= int(r.headers["Retry-After"]) <= 46
        assert r.headers["RateLimit-Remaining"] == "0"


async def test_windows_slide_rather_than_reset_on_the_second():
    clock = FakeClock(1000.9)
    async with _client(clock) as c:
        burst = spec.operation("get_metrics").ratelimit.burst_per_second
        assert [(await c.get("/api/metrics")).status_code for _ in range(burst)] == [200] * burst
        clock.t = 1001.1  # a new calendar second, but the ten requests were 0.2 s ago
        assert (await c.get("/api/metrics")).status_code == 429
        clock.t = 1001.95
        assert (await c.get("/api/metrics")).status_code == 200


async def test_predictive_analytics_are_counted_in_their_lower_tier():
    clock = FakeClock()
    tier_name, tier = spec.operation("get_profiles").ratelimit_for(list(PREDICTIVE.items()))
    assert tier_name == "additional-fields[profile]=predictive_analytics" and tier.burst_per_second == 10
    async with _client(clock) as c:
        statuses = [(await c.get("/api/profiles", params=PREDICTIVE)).status_code for _ in range(tier.burst_per_second + 1)]
        assert statuses == [200] * tier.burst_per_second + [429]
        last = await c.get("/api/profiles", params=PREDICTIVE)
        assert last.headers["RateLimit-Limit"] == str(tier.steady_per_minute)
        # the operation's own tier is untouched
        plain = await c.get("/api/profiles", params={"page[size]": "1"})
        assert plain.status_code == 200
        assert plain.headers["RateLimit-Limit"] == str(spec.operation("get_profiles").ratelimit.steady_per_minute)


async def test_limits_off_still_report_the_window():
    app = create_app(EmulatorSettings(profiles=5, events=5, lists=1, rate_limits=False), clock=FakeClock())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://e.test", headers=HEADERS) as c:
        statuses = {(await c.get("/api/accounts")).status_code for _ in range(5)}
        r = await c.get("/api/accounts")
        assert statuses == {200} and r.headers["RateLimit-Limit"] == "15"
