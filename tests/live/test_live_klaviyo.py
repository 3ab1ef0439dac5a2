"""Opt-in check against the real Klaviyo API.

Runs only with ``pytest -m live`` and a private key in ``KLAVIYO_API_KEY``
(read-only calls: accounts and one page of lists). Never part of the default run.
"""

import os

import pytest

from klaviyo_bridge.api.client import KlaviyoClient
from klaviyo_bridge.api.query import Query
from klaviyo_bridge.api.settings import ClientSettings

pytestmark = pytest.mark.live


@pytest.fixture
def live_settings():
    key = os.environ.get("KLAVIYO_API_KEY")
    if not key:
        pytest.skip("set KLAVIYO_API_KEY to run live tests")
    return ClientSettings(api_key=key, base_url="https://a.klaviyo.com")


async def test_reads_account_and_a_page_of_lists(live_settings):
    async with KlaviyoClient(live_settings) as client:
        accounts = await client.request("get_accounts")
        assert accounts["data"] and accounts["data"][0]["type"] == "account"
        async for page in client.pages("get_lists", query=Query(page_size=10)):
            assert all(item["type"] == "list" for item in page.data)
            break
