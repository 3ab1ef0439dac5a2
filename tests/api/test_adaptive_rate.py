"""The client paces each rate tier from the server's RateLimit-* headers, not only from the spec.

The emulator runs in process on a fake clock shared with the clients' sleeps, with an account
whose limits are lower than the published ones (``rate_limit_overrides``), or with a second user
of the key. What is asserted is how many requests were answered 429, never a duration.
"""

import asyncio

import httpx
import pytest

from klaviyo_bridge.api.client import KlaviyoClient, _header_count
from klaviyo_bridge.api.query import Query
from klaviyo_bridge.api.ratelimit import RateLimiter
from klaviyo_bridge.api.settings import ClientSettings
from klaviyo_emulator.app import create_app
from klaviyo_emulator.limits import parse_overrides
from klaviyo_emulator.settings import EmulatorSettings
from klaviyo_spec import RateLimit

BASE = "http://emulator.local"


class Clock:
    """Fake time: only sleeps move it (requests take no time)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)


def make_client(app, clock: Clock, *, adaptive: bool = True) -> KlaviyoClient:
    settings = ClientSettings(api_key=EmulatorSettings().api_key, base_url=BASE)
    limiter = RateLimiter(clock=clock, sleep=clock.sleep, margin=0.08, adaptive=adaptive, probe=adaptive)
    return KlaviyoClient(settings, transport=httpx.ASGITransport(app=app), limiter=limiter, sleep=clock.sleep)


async def read_pages(client: KlaviyoClient, pages: int, **query) -> int:
    n = 0
    async for _ in client.pages("get_profiles", query=Query(page_size=5, **query)):
        n += 1
        if n == pages:
            break
    return n


async def one_client_on_a_lower_limit(adaptive: bool) -> KlaviyoClient:
    clock = Clock()
    # published: 75/s, 750/min; this account: 3/s, 20/min
    app = create_app(EmulatorSettings(profiles=300, events=0, rate_limit_overrides="get_profiles=3/20"), clock=clock)
    async with make_client(app, clock, adaptive=adaptive) as client:
        assert await read_pages(client, 50) == 50
    return client


async def test_a_lower_account_limit_slows_the_client_down_instead_of_drawing_429s():
    client = await one_client_on_a_lower_limit(adaptive=True)
    assert client.stats.throttled == 0
    lim = client.limiter.limiter("get_profiles")
    assert [n for n, _ in lim.windows] == [2, 20]  # steady from the header, burst in proportion
    # Without reading the headers the same run is answered 429 again and again.
    blind = await one_client_on_a_lower_limit(adaptive=False)
    assert blind.stats.throttled >= 5


async def two_users_of_one_key(adaptive: bool) -> tuple[KlaviyoClient, KlaviyoClient]:
    """Two clients with budgets of their own (another tool on the key), taking turns."""
    clock = Clock()
    app = create_app(EmulatorSettings(profiles=400, events=0, rate_limit_overrides="*=0.1"), clock=clock)  # 7/s, 75/min
    a, b = make_client(app, clock, adaptive=adaptive), make_client(app, clock, adaptive=adaptive)
    async with a, b:
        pages = [a.pages("get_profiles", query=Query(page_size=5)), b.pages("get_profiles", query=Query(page_size=5))]
        for _ in range(60):
            for it in pages:
                await anext(it)
    return a, b


async def test_a_second_user_of_the_key_is_seen_in_the_headers_and_shares_the_windows():
    a, b = await two_users_of_one_key(adaptive=True)
    requests = a.stats.requests + b.stats.requests
    throttled = a.stats.throttled + b.stats.throttled
    assert requests >= 120
    assert throttled <= 3, (throttled, requests)
    a, b = await two_users_of_one_key(adaptive=False)
    assert a.stats.throttled + b.stats.throttled >= 10


async def test_a_user_that_stopped_leaves_the_whole_burst_to_the_other():
    """Another user of the key read 30 pages and stopped; its requests stay in the server's
    one-minute window, but they are no longer traffic of this second: the client that reads
    now soon paces at the account's whole burst, not at its share of the minute's requests
    (two importers on one key took 5x the rate-limit bound that way, the later one at 1/s)."""
    clock = Clock()
    app = create_app(EmulatorSettings(profiles=400, events=0, rate_limit_overrides="*=0.1"), clock=clock)  # 7/s, 75/min
    a, b = make_client(app, clock), make_client(app, clock)
    async with a, b:
        assert await read_pages(b, 30) == 30
        started = clock.now
        assert await read_pages(a, 20) == 20
    lim = a.limiter.limiter("get_profiles")
    assert [n for n, _ in lim.windows] == [7, 75 - 30]  # the whole burst; the minute less b's 30
    assert a.stats.throttled == 0 and b.stats.throttled == 0
    # 20 requests at up to 7 a second (after the first answer): about 3 s of the fake clock, not 10+
    assert clock.now - started < 6


async def test_a_lower_tier_is_paced_on_its_own():
    """get_profiles with predictive analytics is counted in a tier of its own (10/s, 150/min
    published; 2/s, 10/min on this account): its requests wait for that tier's windows and
    plain get_profiles requests do not."""
    clock = Clock()
    app = create_app(
        EmulatorSettings(profiles=200, events=0, rate_limit_overrides="get_profiles:predictive_analytics=2/10"), clock=clock
    )
    async with make_client(app, clock) as client:
        await read_pages(client, 25, additional_fields={"profile": ("predictive_analytics",)})
        assert client.stats.throttled <= 1
        tiered = client.limiter.limiter("get_profiles", "additional-fields[profile]=predictive_analytics")
        assert [n for n, _ in tiered.windows] == [1, 10]
        before = clock.now
        await read_pages(client, 20)
        assert clock.now == before  # the default tier (75/s, 750/min) had room for all 20 at once
    assert client.stats.throttled <= 1


async def test_remaining_zero_holds_the_tier_back_until_reset():
    clock = Clock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep, limits={"get_lists": RateLimit(10, 100)})
    limiter.observe("get_lists", "", 100, 0, 30)
    assert await limiter.acquire("get_lists") == pytest.approx(29)


def test_rate_limit_header_values():
    assert _header_count("700") == 700
    assert _header_count("75, 75;w=1, 700;w=60") == 700
    assert _header_count("nonsense") is None
    assert _header_count(None) is None


def test_emulator_override_spec_errors_name_the_item():
    assert parse_overrides("get_profiles=5/50,*=0.5") == {"get_profiles": RateLimit(5, 50), "*": 0.5}
    with pytest.raises(ValueError, match="'get_profiles=5'"):
        parse_overrides("get_profiles=5")
    with pytest.raises(ValueError):
        EmulatorSettings(rate_limit_overrides="*=zero")


def test_emulator_headers_tell_the_accounts_own_limit():
    clock = Clock()
    app = create_app(EmulatorSettings(profiles=10, events=0, rate_limit_overrides="get_lists=5/40"), clock=clock)

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
            headers = {"Authorization": f"Klaviyo-API-Key {EmulatorSettings().api_key}", "revision": "2025-01-15"}
            return [await http.get("/api/lists", headers=headers) for _ in range(6)]

    answers = asyncio.run(go())
    assert [r.status_code for r in answers] == [200] * 5 + [429]
    assert answers[0].headers["RateLimit-Limit"] == "40"
    assert answers[4].headers["RateLimit-Remaining"] == "35"


async def test_until_a_tier_is_answered_one_request_goes_first():
    """Before any answer told a tier's limit, one request goes alone and the others wait for its
    answer: a run's first wave must not hit an account's lower limit blind."""
    clock = Clock()

    async def still(seconds: float) -> None:  # time stands still while the probe is out
        await asyncio.sleep(0)

    limiter = RateLimiter(clock=clock, sleep=still, probe=True)
    assert await limiter.acquire("get_lists") == 0  # the probe
    second = asyncio.create_task(limiter.acquire("get_lists"))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not second.done()
    limiter.answered("get_lists", "")
    await second
    clock.now += 10  # the probe's answer is long past: the later requests go without waiting
    # another tier, another probe; the answered one no longer waits
    assert await limiter.acquire("get_lists") == 0
    assert await limiter.acquire("get_profiles") == 0  # the probe of get_profiles
