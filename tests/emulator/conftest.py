"""Fixtures for emulator tests: a small account served in-process (httpx.ASGITransport)."""

from __future__ import annotations

import httpx
import pytest

from klaviyo_emulator.app import create_app
from klaviyo_emulator.settings import DEFAULT_API_KEY, EmulatorSettings

HEADERS = {"Authorization": f"Klaviyo-API-Key {DEFAULT_API_KEY}", "revision": "2026-07-15", "accept": "application/vnd.api+json"}
SMALL = EmulatorSettings(seed=3, profiles=437, events=1999, lists=4, rate_limits=False)


@pytest.fixture(scope="session")
def small_app():
    return create_app(SMALL)


@pytest.fixture(scope="session")
def account(small_app):
    return small_app.state.emulator.account


@pytest.fixture
async def client(small_app):
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=small_app), base_url="http://emulator.test", headers=HEADERS
    ) as c:
        yield c


async def collect(client: httpx.AsyncClient, url: str, params: dict | None = None) -> tuple[list[dict], int]:
    """Follow links.next to exhaustion; returns all resources and the number of pages."""
    items, pages = [], 0
    response = await client.get(url, params=params)
    while True:
        assert response.status_code == 200, response.text
        body = response.json()
        items += body["data"]
        pages += 1
        nxt = body["links"].get("next")
        if not nxt:
            return items, pages
        response = await client.get(nxt)
