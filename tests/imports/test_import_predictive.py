"""Predictive analytics are opt-in: Klaviyo computes them per request (slower, and some accounts
have none), so a default profile import must not ask for them; ``predictive_analytics: true`` must."""

from __future__ import annotations

import httpx
import pytest

from klaviyo_bridge.api import query as q
from klaviyo_bridge.imports.runner import effective_stream, run_import

from .conftest import make_config
from .test_import_values import actual_row, api_documents, expected_row
from .test_runner import NOW, all_records

SOURCES = {
    "profiles": ("get_profiles", None, "/api/profiles"),
    "profiles_in_list": ("get_profiles_for_list", "list_id", "/api/lists/"),
    "profiles_in_segment": ("get_profiles_for_segment", "segment_id", "/api/segments/"),
}


class Recording(httpx.AsyncBaseTransport):
    """Passes requests on and keeps their URLs."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.urls: list[httpx.URL] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.urls.append(request.url)
        return await self.inner.handle_async_request(request)


async def _settings(transport, data_source: str) -> dict:
    _, id_setting, _ = SOURCES[data_source]
    if id_setting is None:
        return {}
    parent = "get_lists" if id_setting == "list_id" else "get_segments"
    return {id_setting: (await all_records(transport, parent))[0]["id"]}


def _profile_requests(recording: Recording, prefix: str) -> list[httpx.URL]:
    return [u for u in recording.urls if u.path.startswith(prefix) and "metric" not in u.path]


@pytest.mark.parametrize("data_source", list(SOURCES))
async def test_default_import_does_not_ask_for_predictive_analytics(transport, warehouse, data_source):
    recording = Recording(transport)
    cfg = make_config(data_source, **await _settings(transport, data_source))
    result = await run_import(cfg, warehouse, "klaviyo", "p", transport=recording, now=NOW)
    requests = _profile_requests(recording, SOURCES[data_source][2])
    assert result.rows > 0 and len(requests) == result.requests
    assert not any("predictive_analytics" in str(u) for u in requests)
    assert not any(n.startswith("predictive_analytics") for n in warehouse.table_arrow("klaviyo", "p").column_names)


@pytest.mark.parametrize("data_source", list(SOURCES))
async def test_predictive_analytics_opt_in_adds_the_columns_with_the_api_values(transport, warehouse, data_source):
    recording = Recording(transport)
    settings = await _settings(transport, data_source)
    cfg = make_config(data_source, predictive_analytics=True, **settings)
    await run_import(cfg, warehouse, "klaviyo", "p", transport=recording, now=NOW)
    requests = _profile_requests(recording, SOURCES[data_source][2])
    pages = [u for u in requests if "sort" not in u.params]  # not the 1-record probe for the oldest `updated`
    assert pages and all("predictive_analytics" in u.params.get("additional-fields[profile]", "") for u in pages)

    columns = effective_stream(cfg).columns()
    predictive = [c.name for c in columns if c.name.startswith("predictive_analytics_")]
    table = warehouse.table_arrow("klaviyo", "p")
    assert predictive and set(predictive) <= set(table.column_names)
    operation_id, id_setting, _ = SOURCES[data_source]
    documents = await api_documents(
        transport,
        operation_id,
        q.Query(page_size=100, additional_fields={"profile": list(effective_stream(cfg).additional_fields["profile"])}),
        {"id": settings[id_setting]} if id_setting else None,
    )
    marks = {"_parent_id": settings[id_setting]} if id_setting else {}
    expected = {r["id"]: expected_row(columns, r, inc, marks) for r, inc in documents}
    stored = {r["id"]: actual_row(columns, r) for r in table.to_pylist()}
    assert stored == expected
    assert any(row[name] is not None for row in stored.values() for name in predictive)
