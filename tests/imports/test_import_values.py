"""Every column of every row equals what the API returns for that record, for every data source.

The expected row is built from the API's JSON:API documents through the stream's column
definitions (a column is a name and a path into the resource), so a column that is
mis-typed, mis-flattened, shifted or joined to the wrong related resource shows here.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import httpx
import pyarrow as pa
import pytest

from klaviyo_bridge.api import query as q
from klaviyo_bridge.api.client import KlaviyoClient
from klaviyo_bridge.api.ratelimit import RateLimiter
from klaviyo_bridge.imports.runner import effective_stream, run_import

from .conftest import make_config
from .test_runner import NOW, all_records

METRIC = "Opened Email"
CHANNEL_FILTER = {"email": q.equals("messages.channel", "email"), "sms": q.equals("messages.channel", "sms")}


async def api_documents(transport, operation_id, query=None, path_params=None) -> list[tuple[dict, list[dict]]]:
    """(record, that page's included resources) for every record of a collection."""
    cfg = make_config("profiles")
    out = []
    async with KlaviyoClient(cfg.source.client_settings(), transport=transport, limiter=RateLimiter(enabled=False)) as c:
        async for page in c.pages(operation_id, query=query, path_params=path_params):
            out.extend((record, page.included) for record in page.data)
    return out


def dig(node: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def related(record: dict, included: list[dict], name: str) -> dict | None:
    """The included resource that ``record``'s relationship ``name`` points at."""
    ref = dig(record, ("relationships", name, "data"))
    if not isinstance(ref, dict):
        return None
    found = [r for r in included if r["type"] == ref["type"] and r["id"] == ref["id"]]
    assert len(found) == 1, f"{record['id']}: included {name} {ref} found {len(found)} times"
    return found[0]


def expected_row(columns, record: dict, included: list[dict], marks: dict[str, Any]) -> dict[str, Any]:
    row = {}
    for col in columns:
        head = col.path[0]
        if head in marks:
            value = marks[head]
        elif head == "_derived":  # suppressed / suppressed_at, from the email suppressions
            marketing = dig(record, ("attributes", "subscriptions", "email", "marketing"))
            entries = (marketing or {}).get("suppression") or []
            value = (
                (None if marketing is None else bool(entries))
                if col.path[1] == "suppressed"
                else (
                    min((e["timestamp"] for e in entries), key=lambda t: datetime.fromisoformat(t.replace("Z", "+00:00")))
                    if entries
                    else None
                )
            )
        elif head.startswith("_"):
            value = dig(related(record, included, head[1:]), col.path[1:])
        else:
            value = dig(record, col.path)
        if value is not None and pa.types.is_timestamp(col.type):
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        elif value is not None and pa.types.is_floating(col.type):
            value = float(value)
        row[col.name] = value
    return row


def actual_row(columns, row: dict[str, Any]) -> dict[str, Any]:
    """The stored row with JSON text columns parsed (the API's values are parsed JSON)."""
    return {c.name: json.loads(row[c.name]) if c.is_json and row[c.name] is not None else row[c.name] for c in columns}


async def _first_id(transport, operation_id):
    return (await all_records(transport, operation_id))[0]["id"]


async def expected_documents(transport, data_source: str, settings: dict) -> list[tuple[dict, list[dict], dict]]:
    """(record, included, marks) for every record the source should import, fetched independently."""
    if data_source in ("events", "metric_events"):
        docs = await api_documents(transport, "get_events", q.Query(page_size=1000, include=("metric", "profile")))
        if data_source == "metric_events":
            docs = [(r, inc) for r, inc in docs if related(r, inc, "metric")["attributes"]["name"] == METRIC]
        return [(r, inc, {}) for r, inc in docs]
    if data_source in ("event_metrics", "event_profiles"):
        operation_id = "get_metric_for_event" if data_source == "event_metrics" else "get_profile_for_event"
        cfg = make_config("profiles")
        async with KlaviyoClient(cfg.source.client_settings(), transport=transport, limiter=RateLimiter(enabled=False)) as c:
            return [
                ((await c.request(operation_id, path_params={"id": event_id}))["data"], [], {"_event_id": event_id})
                for event_id in settings["event_ids"]
            ]
    if data_source == "campaigns":
        out = []
        for channel in ("email", "sms"):
            for archived in (False, True):
                docs = await api_documents(
                    transport, "get_campaigns", q.Query(filters=(CHANNEL_FILTER[channel], q.equals("archived", archived)))
                )
                out += [(r, inc, {"_channel": channel}) for r, inc in docs]
        return out
    if data_source in ("profiles_in_list", "profiles_in_segment"):
        key, op = (
            ("list_id", "get_profiles_for_list")
            if data_source == "profiles_in_list"
            else ("segment_id", "get_profiles_for_segment")
        )
        docs = await api_documents(transport, op, q.Query(page_size=100), {"id": settings[key]})
        return [(r, inc, {"_parent_id": settings[key]}) for r, inc in docs]
    if data_source == "global_exclusions":
        docs = await api_documents(
            transport, "get_profiles", q.Query(page_size=100, additional_fields={"profile": ["subscriptions"]})
        )
        suppressed = ("subscriptions", "email", "marketing", "suppression")
        return [(r, inc, {}) for r, inc in docs if dig(r["attributes"], suppressed)]
    if data_source == "flows":  # archived flows are listed only when filtered for
        return [
            (r, inc, {})
            for archived in (False, True)
            for r, inc in await api_documents(
                transport, "get_flows", q.Query(page_size=50, filters=(q.equals("archived", archived),))
            )
        ]
    operation_id, page_size = {
        "lists": ("get_lists", 10),
        "metrics": ("get_metrics", None),
        "templates": ("get_templates", 10),
        "flows": ("get_flows", 50),
        "segments": ("get_segments", 10),
        "profiles": ("get_profiles", 100),
    }[data_source]
    extra = {"additional_fields": {"profile": ["subscriptions"]}} if data_source == "profiles" else {}
    return [(r, inc, {}) for r, inc in await api_documents(transport, operation_id, q.Query(page_size=page_size, **extra))]


SOURCES = [
    "events",
    "lists",
    "metrics",
    "templates",
    "flows",
    "segments",
    "campaigns",
    "profiles",
    "profiles_in_list",
    "profiles_in_segment",
    "global_exclusions",
    "metric_events",
    "event_metrics",
    "event_profiles",
]


@pytest.mark.parametrize("data_source", SOURCES)
async def test_every_column_equals_the_api_value(transport, warehouse, data_source):
    """Ids alone would not catch a value in the wrong column, a lost timezone or a wrong join."""
    settings: dict[str, Any] = {}
    if data_source == "profiles_in_list":
        settings["list_id"] = await _first_id(transport, "get_lists")
    elif data_source == "profiles_in_segment":
        settings["segment_id"] = await _first_id(transport, "get_segments")
    elif data_source == "metric_events":
        settings["metric"] = METRIC
    elif data_source in ("event_metrics", "event_profiles"):
        settings["event_ids"] = [e["id"] for e in (await all_records(transport, "get_events"))[:40]]
    cfg = make_config(data_source, **settings)
    result = await run_import(cfg, warehouse, "klaviyo", "t", transport=transport, now=NOW)
    columns = effective_stream(cfg).columns()
    table = warehouse.table_arrow("klaviyo", "t")
    assert table.column_names == [c.name for c in columns]
    rows = table.to_pylist()
    key = [c for c in effective_stream(cfg).primary_key]
    stored = {tuple(r[k] for k in key): actual_row(columns, r) for r in rows}

    documents = await expected_documents(transport, data_source, settings)
    assert documents, "the emulator must have records of this source for the test to mean anything"
    expected = {}
    for record, included, marks in documents:
        row = expected_row(columns, record, included, marks)
        expected[tuple(row[k] for k in key)] = row
    assert result.rows == len(rows) == len(stored) == len(expected)
    assert stored.keys() == expected.keys()
    wrong = [
        (k, name, stored[k][name], value)
        for k, row in expected.items()
        for name, value in row.items()
        if stored[k][name] != value
    ]
    assert not wrong, f"{len(wrong)} values differ, e.g. (key, column, stored, api): {wrong[:5]}"
    # a wrong path finds nothing in the API record either: so every attribute the API sent has a column
    covered = {c.path[1] for c in columns if c.path[0] == "attributes"}
    sent = {name for record, _, _ in documents for name in record["attributes"]}
    assert sent <= covered


class Drifting(httpx.AsyncBaseTransport):
    """Answers as the emulator does, except that in every page of ``path`` the first record's
    ``attribute`` is a number where the spec says string (the type drift a real API shows)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, path: str, attribute: str) -> None:
        self.inner, self.path, self.attribute = inner, path, attribute
        self.drifted: dict[str, int] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.url.path != self.path or response.status_code != 200:
            return response
        doc = json.loads(await response.aread())
        if doc["data"]:
            first = doc["data"][0]
            first["attributes"][self.attribute] = self.drifted[first["id"]] = 12345 + len(self.drifted)
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
        return httpx.Response(response.status_code, headers=headers, content=json.dumps(doc).encode())


@pytest.mark.parametrize(
    "data_source, path, attribute",
    [
        ("events", "/api/events", "uuid"),
        ("campaigns", "/api/campaigns", "name"),
        ("profiles_in_list", None, "first_name"),
    ],
)
async def test_a_page_with_drifted_types_keeps_every_value(transport, warehouse, data_source, path, attribute):
    """Such a page leaves the fast typed decoder for the generic one: related resources (events),
    per-task marks (campaigns' channel, the list id) and every other value must come through alike;
    the drifted value is kept as text."""
    settings: dict[str, Any] = {}
    if data_source == "profiles_in_list":
        settings["list_id"] = await _first_id(transport, "get_lists")
        path = f"/api/lists/{settings['list_id']}/profiles"
    lo = hi = None
    if data_source == "events":  # a quarter is enough, and keeps the test fast
        lo, hi = datetime(2025, 6, 1, tzinfo=timezone.utc), datetime(2025, 9, 1, tzinfo=timezone.utc)
        settings.update(start_time=lo.isoformat(), end_time=hi.isoformat())
    drifting = Drifting(transport, path, attribute)
    cfg = make_config(data_source, **settings)
    await run_import(cfg, warehouse, "klaviyo", "t", transport=drifting, now=NOW)
    columns = effective_stream(cfg).columns()
    key = effective_stream(cfg).primary_key
    stored = {tuple(r[k] for k in key): actual_row(columns, r) for r in warehouse.table_arrow("klaviyo", "t").to_pylist()}
    assert drifting.drifted
    expected = {}
    for record, included, marks in await expected_documents(transport, data_source, settings):
        if lo and not lo <= datetime.fromisoformat(record["attributes"]["datetime"]) < hi:
            continue
        if record["id"] in drifting.drifted:
            record["attributes"][attribute] = str(drifting.drifted[record["id"]])
        row = expected_row(columns, record, included, marks)
        expected[tuple(row[k] for k in key)] = row
    assert stored.keys() == expected.keys()
    wrong = [
        (k, name, stored[k][name], value)
        for k, row in expected.items()
        for name, value in row.items()
        if stored[k][name] != value
    ]
    assert not wrong, f"{len(wrong)} values differ, e.g. (key, column, stored, api): {wrong[:5]}"
