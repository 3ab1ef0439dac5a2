"""The client against the emulator: real JSON:API paging, filters, errors and rate limits.

In-process (httpx.ASGITransport) for speed, plus one run over a real socket on 127.0.0.1.
"""

import asyncio
from datetime import datetime

import httpx
import pytest

from klaviyo_bridge.api import query as q
from klaviyo_bridge.api.client import KlaviyoClient
from klaviyo_bridge.api.ratelimit import RateLimiter
from klaviyo_bridge.api.settings import ClientSettings
from klaviyo_bridge.errors import AuthError, InvalidRequest, NotFound
from klaviyo_emulator.app import create_app
from klaviyo_emulator.server import running_emulator
from klaviyo_emulator.settings import EmulatorSettings
from klaviyo_spec import operation

EMU = EmulatorSettings(seed=7, profiles=523, events=2111, lists=3, rate_limits=False)
BASE = "http://emulator.local"


def client(app, *, key=EMU.api_key, limiter=None, sleep=asyncio.sleep, **settings) -> KlaviyoClient:
    return KlaviyoClient(
        ClientSettings(api_key=key, base_url=BASE, **settings),
        transport=httpx.ASGITransport(app=app),
        limiter=limiter or RateLimiter(enabled=False),
        sleep=sleep,
    )


@pytest.fixture(scope="module")
def app():
    return create_app(EMU)


@pytest.mark.parametrize(
    "operation_id, page_size, expected",
    [
        ("get_profiles", 37, EMU.profiles),
        ("get_profiles", None, EMU.profiles),
        ("get_events", 1000, EMU.events),
        ("get_events", 333, EMU.events),
        ("get_lists", 2, EMU.lists),
    ],
)
async def test_paging_to_exhaustion_gives_every_record_once(app, operation_id, page_size, expected):
    async with client(app) as c:
        ids, pages = [], 0
        async for page in c.pages(operation_id, query=q.Query(page_size=page_size)):
            ids.extend(r["id"] for r in page.data)
            pages += 1
    assert len(ids) == expected and len(set(ids)) == expected
    size = page_size or operation(operation_id).page_size_default
    assert pages == -(-expected // size)


async def test_list_members_add_up_through_the_relationship_endpoint(app):
    async with client(app) as c:
        lists = [item async for item in c.records("get_lists")]
        for item in lists:
            members = [
                m async for m in c.records("get_profiles_for_list", path_params={"id": item["id"]}, query=q.Query(page_size=100))
            ]
            doc = await c.get_resource("get_list", item["id"], query=q.Query(additional_fields={"list": ["profile_count"]}))
            assert len(members) == doc["data"]["attributes"]["profile_count"]


async def test_datetime_filters_select_what_a_local_filter_selects(app):
    async with client(app) as c:
        everyone = [p async for p in c.records("get_profiles", query=q.Query(page_size=100, fields={"profile": ["updated"]}))]
        stamps = sorted(datetime.fromisoformat(p["attributes"]["updated"]) for p in everyone)
        pivot = stamps[len(stamps) // 3]
        later = [
            p async for p in c.records("get_profiles", query=q.Query(filters=(q.greater_than("updated", pivot),), page_size=100))
        ]
        earlier = [
            p async for p in c.records("get_profiles", query=q.Query(filters=(q.less_than("updated", pivot),), page_size=100))
        ]
    assert len(later) == sum(s > pivot for s in stamps)
    assert len(earlier) == sum(s < pivot for s in stamps)
    assert len(later) + len(earlier) + sum(s == pivot for s in stamps) == EMU.profiles


async def test_event_window_filters_partition_the_events(app):
    async with client(app) as c:
        first = await c.request("get_events", query=q.Query(sort="datetime", page_size=1))
        last = await c.request("get_events", query=q.Query(sort="-datetime", page_size=1))
        lo = datetime.fromisoformat(first["data"][0]["attributes"]["datetime"])
        hi = datetime.fromisoformat(last["data"][0]["attributes"]["datetime"])
        mid = lo + (hi - lo) / 2
        a = [
            e
            async for e in c.records(
                "get_events",
                query=q.Query(filters=(q.greater_or_equal("datetime", lo), q.less_than("datetime", mid)), page_size=1000),
            )
        ]
        b = [
            e
            async for e in c.records(
                "get_events",
                query=q.Query(filters=(q.greater_or_equal("datetime", mid), q.less_or_equal("datetime", hi)), page_size=1000),
            )
        ]
    assert len(a) + len(b) == EMU.events
    assert not {e["id"] for e in a} & {e["id"] for e in b}


async def test_equals_and_any_filters_with_quotes_round_trip(app):
    async with client(app) as c:
        some = [p async for p in c.records("get_profiles", query=q.Query(page_size=5))][:3]
        emails = [p["attributes"]["email"] for p in some]
        found = [p async for p in c.records("get_profiles", query=q.Query(filters=(q.any_of("email", emails),)))]
        one = [p async for p in c.records("get_profiles", query=q.Query(filters=(q.equals("email", emails[0]),)))]
    assert sorted(p["id"] for p in found) == sorted(p["id"] for p in some)
    assert [p["id"] for p in one] == [some[0]["id"]]


async def test_include_brings_related_resources(app):
    async with client(app) as c:
        doc = await c.request("get_events", query=q.Query(page_size=10, include=["metric", "profile"]))
    kinds = {r["type"] for r in doc["included"]}
    assert kinds == {"metric", "profile"}


async def test_server_side_rejections_become_invalid_request(app):
    async with client(app) as c:
        with pytest.raises(InvalidRequest) as info:
            await c.request("get_profiles", params=[("filter", "equals(nickname,'x')")])
    assert info.value.status == 400 and "nickname" in info.value.detail


async def test_wrong_key_and_unknown_id(app):
    async with client(app, key="pk_wrong") as c:
        with pytest.raises(AuthError, match="the API key was rejected"):
            await c.request("get_lists")
    async with client(app) as c:
        with pytest.raises(NotFound):
            await c.get_resource("get_list", "NOPE00")


class SharedClock:
    """One fake time for the emulator's limiter and the client's sleeps."""

    def __init__(self):
        self.now = 1000.0
        self.slept = []

    def __call__(self):
        return self.now

    async def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds


async def test_server_429s_are_retried_after_retry_after():
    clock = SharedClock()
    app = create_app(EmulatorSettings(profiles=10, events=0, rate_limits=True), clock=clock)
    async with client(app, limiter=RateLimiter(enabled=False), sleep=clock.sleep) as c:
        for _ in range(4):  # get_accounts: 1/s burst
            await c.request("get_accounts")
    assert c.stats.throttled >= 1 and c.stats.retries == c.stats.throttled
    assert all(s >= 1 for s in clock.slept)


async def test_client_limiter_prevents_429s_entirely():
    clock = SharedClock()
    app = create_app(EmulatorSettings(profiles=10, events=0, rate_limits=True), clock=clock)
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)
    async with client(app, limiter=limiter, sleep=clock.sleep) as c:
        await asyncio.gather(*(c.request("get_accounts") for _ in range(20)))
    assert c.stats.throttled == 0 and c.stats.requests == 20
    # 20 requests at 1/s and 15/min: the 16th must wait for the minute window.
    assert clock.now - 1000.0 >= 60


def test_over_a_real_socket():
    async def read_all(base_url):
        settings = ClientSettings(api_key=EMU.api_key, base_url=base_url)
        async with KlaviyoClient(settings, limiter=RateLimiter(enabled=False)) as c:
            return [p["id"] async for p in c.records("get_profiles", query=q.Query(page_size=100))]

    with running_emulator(EMU) as base_url:
        assert base_url.startswith("http://127.0.0.1:")
        ids = asyncio.run(read_all(base_url))
    assert len(set(ids)) == EMU.profiles
