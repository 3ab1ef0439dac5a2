"""Typed page decoding gives exactly the batch the generic dict path gives, and survives type drift."""

import httpx
import orjson
import pytest

from klaviyo_bridge.api.client import Page
from klaviyo_bridge.imports.decode import PageDecoder
from klaviyo_bridge.imports.fetch import attach_included
from klaviyo_bridge.imports.flatten import to_batch
from klaviyo_bridge.imports.streams import stream

from .conftest import EMU

HEADERS = {"Authorization": f"Klaviyo-API-Key {EMU.api_key}", "revision": "2026-07-15"}


def generic(body: bytes, columns, marks=None):
    doc = orjson.loads(body)
    page = Page(doc["data"], doc.get("included") or [], None, 0)
    attach_included(page)
    for record in page.data:
        record.update(marks or {})
    return to_batch(page.data, columns)


@pytest.mark.parametrize("source, url", [
    ("events", "/api/events?page[size]=300&include=metric,profile&fields[metric]=name"
               "&fields[profile]=email,phone_number,external_id"),
    ("profiles", "/api/profiles?page[size]=100"),
    ("global_exclusions", "/api/profiles?page[size]=100&additional-fields[profile]=subscriptions"),
    ("campaigns", "/api/campaigns?filter=equals(messages.channel,'email')"),
    ("lists", "/api/lists"), ("metrics", "/api/metrics"), ("templates", "/api/templates"), ("flows", "/api/flows"),
])
async def test_typed_decoding_matches_the_generic_path(emulator_app, source, url):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=emulator_app), base_url="http://e",
                                 headers=HEADERS) as c:
        body = (await c.get(url)).content
    columns = stream(source).columns()
    marks = {"_channel": "email"} if source == "campaigns" else {}
    batch, next_url = PageDecoder(columns).with_marks(marks)(body)
    assert batch.num_rows > 0
    assert batch.equals(generic(body, columns, marks))
    assert next_url == (orjson.loads(body)["links"].get("next"))


def test_type_drift_falls_back_without_losing_the_row():
    columns = stream("profiles").columns()
    body = orjson.dumps({"data": [{"type": "profile", "id": "P1", "attributes": {"email": 12345, "first_name": "A"}}],
                         "links": {"next": None}})
    batch, _ = PageDecoder(columns)(body)
    row = batch.to_pylist()[0]
    assert row["id"] == "P1" and row["email"] == "12345" and row["first_name"] == "A"


def test_cut_off_body_is_an_error_for_the_client_to_retry():
    import msgspec

    with pytest.raises((msgspec.DecodeError, ValueError)):
        PageDecoder(stream("lists").columns())(b'{"data": [{"type": "list", "id": "A')
