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


@pytest.mark.parametrize(
    "source, url",
    [
        (
            "events",
            "/api/events?page[size]=300&include=metric,profile&fields[metric]=name"
            "&fields[profile]=email,phone_number,external_id",
        ),
        ("profiles", "/api/profiles?page[size]=100&additional-fields[profile]=subscriptions"),
        ("global_exclusions", "/api/profiles?page[size]=100&additional-fields[profile]=subscriptions"),
        ("campaigns", "/api/campaigns?filter=equals(messages.channel,'email')"),
        ("lists", "/api/lists"),
        ("metrics", "/api/metrics"),
        ("templates", "/api/templates"),
        ("flows", "/api/flows"),
    ],
)
async def test_typed_decoding_matches_the_generic_path(emulator_app, source, url):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=emulator_app), base_url="http://e", headers=HEADERS) as c:
        body = (await c.get(url)).content
    columns = page_columns(source)
    marks = {"_channel": "email"} if source == "campaigns" else {}
    batch, next_url = PageDecoder(columns).with_marks(marks)(body)
    assert batch.num_rows > 0
    assert batch.equals(generic(body, columns, marks))
    assert next_url == (orjson.loads(body)["links"].get("next"))


def page_columns(source: str):
    """The columns a page is decoded into (derived ones, like suppressed, are computed after)."""
    from klaviyo_bridge.imports.suppression import is_derived

    return [c for c in stream(source).columns() if not is_derived(c)]


def test_type_drift_falls_back_without_losing_the_row():
    columns = page_columns("profiles")
    body = orjson.dumps(
        {"data": [{"type": "profile", "id": "P1", "attributes": {"email": 12345, "first_name": "A"}}], "links": {"next": None}}
    )
    batch, _ = PageDecoder(columns)(body)
    row = batch.to_pylist()[0]
    assert row["id"] == "P1" and row["email"] == "12345" and row["first_name"] == "A"


def test_cut_off_body_is_an_error_for_the_client_to_retry():
    import msgspec

    with pytest.raises((msgspec.DecodeError, ValueError)):
        PageDecoder(stream("lists").columns())(b'{"data": [{"type": "list", "id": "A')


def event(eid, props=..., metric="M1", profile="P1"):
    attributes = {"datetime": "2024-01-02T00:09:08+00:00", "timestamp": 1704154148, "uuid": eid}
    if props is not ...:
        attributes["event_properties"] = props
    rels = {}
    if metric is not None:
        rels["metric"] = {"data": {"type": "metric", "id": metric}}
    if profile == "list":
        rels["profile"] = {"data": [{"type": "profile", "id": "P1"}]}  # to-many: no single related row
    elif profile == "null":
        rels["profile"] = {"data": None}
    elif profile is not None:
        rels["profile"] = {"data": {"type": "profile", "id": profile}}
    return {"type": "event", "id": eid, "attributes": attributes, "relationships": rels}


def test_edge_cases_match_the_generic_path():
    """JSON nulls, missing keys, unicode, whitespace, and relations that are absent, null,
    to-many or point at nothing included: the column-wise paths give what the dict path gives."""
    columns = stream("events").columns(related=True)
    data = [
        event("E1", {"a": "é ☃ \u2028", "n": [1, {"b": None}]}),
        event("E2", None),
        event("E3"),
        event("E4", {}, metric=None, profile=None),
        event("E5", [1, 2], profile="null"),
        event("E6", "text", profile="list"),
        event("E7", 1.5, profile="P404"),
        event("E8", True, profile="P2"),
    ]
    included = [
        {"type": "metric", "id": "M1", "attributes": {"name": "Placed Order"}},
        {"type": "profile", "id": "P1", "attributes": {"email": "a@x.test", "phone_number": None}},
        {"type": "profile", "id": "P2", "attributes": {"external_id": "X2"}},
        {"type": "metric", "id": "P2", "attributes": {"name": "same id, other type"}},
    ]
    body = orjson.dumps({"data": data, "included": included, "links": {"next": None}})
    assert PageDecoder(columns)(body)[0].equals(generic(body, columns))
    spaced = body.replace(b'{"a":', b'{ "a" :\n ')
    first = PageDecoder(columns)(spaced)[0].to_pylist()[0]["event_properties"]
    assert first.startswith('{ "a" :\n "é ☃ \u2028"')  # raw JSON text is kept as sent
    rows = PageDecoder(columns)(body)[0].to_pylist()
    assert [r["event_properties"] for r in rows[1:3]] == [None, None]
    assert [r["profile_email"] for r in rows] == ["a@x.test", "a@x.test", "a@x.test", None, None, None, None, None]
    assert rows[7]["profile_external_id"] == "X2" and rows[0]["metric_name"] == "Placed Order"


def test_related_rows_match_the_generic_path_without_includes_or_with_mixed_types():
    """The rows' related ids are looked up among one type's included ids at once; a page that
    includes nothing, and a relationship whose rows point at resources of two types, still
    give what the dict path gives."""
    columns = stream("events").columns(related=True)
    data = [event("E1"), event("E2", profile="P2"), event("E3", profile=None)]
    nothing_included = orjson.dumps({"data": data, "links": {"next": None}})
    assert PageDecoder(columns)(nothing_included)[0].equals(generic(nothing_included, columns))
    mixed = [*data, event("E4")]
    mixed[3]["relationships"]["profile"] = {"data": {"type": "metric", "id": "P2"}}  # a profile slot naming a metric
    included = [
        {"type": "profile", "id": "P1", "attributes": {"email": "a@x.test"}},
        {"type": "profile", "id": "P2", "attributes": {"email": "b@x.test"}},
        {"type": "metric", "id": "P2", "attributes": {"name": "same id, other type"}},
        {"type": "metric", "id": "M1", "attributes": {"name": "Placed Order"}},
    ]
    body = orjson.dumps({"data": mixed, "included": included, "links": {"next": None}})
    batch = PageDecoder(columns)(body)[0]
    assert batch.equals(generic(body, columns))
    assert batch.column("profile_email").to_pylist() == ["a@x.test", "b@x.test", None, None]
    assert batch.column("profile_id").to_pylist() == ["P1", "P2", None, "P2"]
    # The same resource included twice (JSON:API forbids it): the last one counts, as in the dict path.
    twice = orjson.dumps(
        {"data": data, "included": [*included, {"type": "profile", "id": "P2", "attributes": {"email": "c@x.test"}}]}
    )
    batch = PageDecoder(columns)(twice)[0]
    assert batch.equals(generic(twice, columns)) and batch.column("profile_email").to_pylist()[1] == "c@x.test"


def test_a_related_value_of_the_wrong_type_names_the_row():
    import pyarrow as pa

    from klaviyo_bridge.imports.columns import Column
    from klaviyo_bridge.imports.flatten import FlattenError

    columns = [Column("id", ("id",), pa.string()), Column("metric_count", ("_metric", "attributes", "name"), pa.int64())]
    body = orjson.dumps(
        {"data": [event("E1"), event("E2")], "included": [{"type": "metric", "id": "M1", "attributes": {"name": "not a number"}}]}
    )
    with pytest.raises(FlattenError, match="'E1'"):
        PageDecoder(columns)(body)


def test_an_empty_page_gives_an_empty_batch_with_every_column():
    columns = stream("events").columns(related=True)
    batch, next_url = PageDecoder(columns)(b'{"data": [], "included": [], "links": {"next": null}}')
    assert batch.num_rows == 0 and batch.schema.names == [c.name for c in columns] and next_url is None
