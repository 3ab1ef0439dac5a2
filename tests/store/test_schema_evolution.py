"""Columns evolve between batches and runs without losing data; names are checked and quoted."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pyarrow as pa
import pytest

from klaviyo_bridge.errors import ConfigError, StoreError
from klaviyo_bridge.store import Kind, SchemaConflict

from .conftest import rows


def test_new_column_is_added_and_missing_column_is_null(wh, db):
    wh.write(db, "e", pa.table({"id": ["a"], "n": [1]}))
    wh.write(db, "e", pa.table({"id": ["b"], "email": ["b@x.io"]}))
    assert rows(wh, db, "e") == [{"id": "a", "n": 1, "email": None}, {"id": "b", "n": None, "email": "b@x.io"}]


def test_new_column_inside_one_run_reaches_staged_modes(wh, db):
    with wh.writer(db, "e", "merge") as w:
        w.write(pa.table({"id": ["a"], "n": [1]}))
        w.write(pa.table({"id": ["b"], "flag": [True]}))
        w.commit()
    assert wh.table_columns(db, "e") == {"id": Kind.TEXT, "n": Kind.INTEGER, "flag": Kind.BOOLEAN}


@pytest.mark.parametrize("mode", ["append", "merge", "replace"])
def test_int_column_widens_to_double(wh, db, mode):
    wh.write(db, "e", pa.table({"id": ["a"], "amount": [3]}), mode)
    with wh.writer(db, "e", mode) as w:
        w.write(pa.table({"id": ["b"], "amount": [2.5]}))
        w.write(pa.table({"id": ["c"], "amount": [7]}))
        w.commit()
    assert wh.table_columns(db, "e")["amount"] is Kind.FLOAT
    got = {r["id"]: r["amount"] for r in rows(wh, db, "e")}
    assert got == ({"a": 3.0, "b": 2.5, "c": 7.0} if mode != "replace" else {"b": 2.5, "c": 7.0})


def test_any_kind_widens_to_text(wh, db):
    wh.write(db, "e", pa.table({"id": ["a"], "code": [42]}))
    wh.write(db, "e", pa.table({"id": ["b"], "code": ["X-1"]}))
    assert wh.table_columns(db, "e")["code"] is Kind.TEXT
    assert [r["code"] for r in rows(wh, db, "e")] == ["42", "X-1"]


def test_incompatible_change_names_table_and_column(wh, db):
    wh.write(db, "e", pa.table({"id": ["a"], "blob": pa.array([b"\x00\x01"], pa.binary())}))
    with pytest.raises(SchemaConflict, match=rf"{db}\.e\.blob") as info:
        wh.write(db, "e", pa.table({"id": ["b"], "blob": ["text"]}))
    assert (info.value.table, info.value.column) == (f"{db}.e", "blob")
    assert isinstance(info.value, StoreError)
    assert [r["blob"] for r in rows(wh, db, "e")] == [b"\x00\x01"]


def test_unsupported_arrow_type_is_refused_not_dropped(wh, db):
    nested = pa.table({"id": ["a"], "tags": pa.array([["x", "y"]])})
    with pytest.raises(SchemaConflict, match="tags"):
        wh.write(db, "e", nested)


def test_columns_differing_only_by_case_are_refused(wh, db):
    with pytest.raises(SchemaConflict, match="differ only by case"):
        wh.write(db, "e", pa.table({"id": ["a"], "Email": ["x"], "email": ["y"]}))


def test_timestamps_round_trip_with_time_zone(wh, db):
    berlin = dt.datetime(2024, 3, 31, 3, 30, tzinfo=ZoneInfo("Europe/Berlin"))
    utc = dt.datetime(2024, 1, 1, 12, 0, 0, 123456, tzinfo=dt.timezone.utc)
    table = pa.table(
        {
            "id": ["a", "b"],
            "at": pa.array([berlin, utc], pa.timestamp("us", tz="Europe/Berlin")),
            "naive": pa.array([dt.datetime(2024, 1, 1, 12), None], pa.timestamp("ms")),
            "day": pa.array([dt.date(2024, 2, 29), None]),
        }
    )
    wh.write(db, "e", table)
    assert wh.table_columns(db, "e")["at"] is Kind.TIMESTAMP
    got = rows(wh, db, "e")
    assert got[0]["at"] == berlin and got[1]["at"] == utc
    assert got[0]["at"].utcoffset() == dt.timedelta(0)
    assert got[0]["naive"] == dt.datetime(2024, 1, 1, 12, tzinfo=dt.timezone.utc)
    assert got[0]["day"] == dt.date(2024, 2, 29)


def test_nanosecond_timestamps_that_would_lose_digits_are_refused(wh, db):
    table = pa.table({"id": ["a"], "at": pa.array([1], pa.timestamp("ns", tz="UTC"))})
    with pytest.raises(SchemaConflict, match="without losing data"):
        wh.write(db, "e", table)


def test_json_column_is_queryable(wh, db):
    props = pa.array(['{"value": 12.5, "items": [{"sku": "A"}], "source": "web"}', None], pa.json_())
    wh.write(db, "events", pa.table({"id": ["a", "b"], "event_properties": props}))
    assert wh.table_columns(db, "events")["event_properties"] is Kind.JSON
    got = pa.Table.from_batches(
        list(
            wh.query_arrow(
                f"SELECT id, event_properties->>'source' AS src, CAST(event_properties->>'value' AS DOUBLE PRECISION) "
                f'AS v FROM "{db}".events ORDER BY id'
            )
        )
    ).to_pylist()
    assert got == [{"id": "a", "src": "web", "v": 12.5}, {"id": "b", "src": None, "v": None}]


@pytest.mark.parametrize("table", ["Campaign-Events", "UPPER_case", "_x-1"])
def test_table_names_with_dashes_and_case_are_quoted(wh, db, table):
    wh.write(db, table, pa.table({"id": ["a"], "Campaign Name": ["Spring"], "$email": ["a@x.io"]}))
    assert rows(wh, db, table) == [{"id": "a", "Campaign Name": "Spring", "$email": "a@x.io"}]


@pytest.mark.parametrize("name", ['x"; DROP TABLE t; --', "a b", "t;", "1abc", "", "x.y", "a'b", "é"])
def test_injection_like_names_are_rejected(wh, db, name):
    with pytest.raises(ConfigError, match="invalid table name"):
        wh.writer(db, name)
    with pytest.raises(ConfigError, match="invalid database name"):
        wh.writer(name, "t")


def test_state_schema_is_reserved(wh):
    with pytest.raises(ConfigError, match="reserved"):
        wh.writer("_bridge", "cursors")


def test_column_names_with_quotes_are_stored_safely(wh, db):
    wh.write(db, "e", pa.table({"id": ["a"], 'we"ird': [1]}))
    assert rows(wh, db, "e") == [{"id": "a", 'we"ird': 1}]
