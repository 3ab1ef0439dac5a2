"""Resources become typed columns derived from the spec, identical whatever the page holds."""

import json

import pyarrow as pa
import pytest

from klaviyo_bridge.imports.columns import TIMESTAMP, resource_columns
from klaviyo_bridge.imports.flatten import FlattenError, to_batch

PROFILE_COLUMNS = resource_columns("ProfileResponseObjectResource")


def profile(pid, **attributes):
    return {"type": "profile", "id": pid, "attributes": attributes, "links": {"self": "x"}}


def test_profile_columns_come_from_the_spec():
    names = [c.name for c in PROFILE_COLUMNS]
    assert names[0] == "id"
    for expected in ("email", "phone_number", "external_id", "created", "updated", "location_city", "properties"):
        assert expected in names
    types = {c.name: c.type for c in PROFILE_COLUMNS}
    assert types["created"] == TIMESTAMP and types["email"] == pa.string()
    assert [c.name for c in PROFILE_COLUMNS if c.is_json] == ["location_latitude", "location_longitude", "properties"]


def test_batch_has_every_column_even_when_the_page_lacks_them():
    batch = to_batch([profile("A", email="a@x.com")], PROFILE_COLUMNS)
    assert batch.schema.names == [c.name for c in PROFILE_COLUMNS]
    row = batch.to_pylist()[0]
    assert row["email"] == "a@x.com" and row["location_city"] is None and row["created"] is None


def test_values_are_typed_and_nested_objects_flattened():
    batch = to_batch(
        [
            profile(
                "A",
                created="2023-06-01T17:06:39.698883+00:00",
                updated="2024-01-01T09:00:00+09:00",
                location={"city": "Tokyo", "latitude": 35.6},
                properties={"vip": True, "tags": ["a", "b"]},
            ),
            profile("B", created="2023-06-01T00:00:00Z", updated="2023-06-01T00:00:00"),
        ],
        PROFILE_COLUMNS,
    )
    rows = batch.to_pylist()
    assert rows[0]["created"].isoformat() == "2023-06-01T17:06:39.698883+00:00"
    assert rows[0]["updated"].isoformat() == "2024-01-01T00:00:00+00:00"
    assert rows[1]["updated"].isoformat() == "2023-06-01T00:00:00+00:00"  # naive means UTC
    assert rows[0]["location_city"] == "Tokyo"
    assert json.loads(rows[0]["properties"]) == {"vip": True, "tags": ["a", "b"]}
    assert str(batch.schema.field("properties").type) == "extension<arrow.json>"  # stored as JSON / JSONB


def test_bad_timestamp_names_column_and_record():
    with pytest.raises(FlattenError, match=r"column 'created' of record 'B'"):
        to_batch([profile("A", created="2023-01-01T00:00:00Z"), profile("B", created="yesterday")], PROFILE_COLUMNS)


def test_event_columns_include_relationship_ids_when_declared():
    from klaviyo_bridge.imports.columns import Column

    cols = resource_columns("EventResponseObjectResource") + [
        Column("metric_id", ("relationships", "metric", "data", "id"), pa.string())
    ]
    event = {
        "type": "event",
        "id": "E1",
        "attributes": {"timestamp": 1700000000, "datetime": "2023-11-14T22:13:20+00:00", "event_properties": {"$value": 9.5}},
        "relationships": {"metric": {"data": {"type": "metric", "id": "M1"}}},
    }
    row = to_batch([event], cols).to_pylist()[0]
    assert row["metric_id"] == "M1" and row["timestamp"] == 1700000000
