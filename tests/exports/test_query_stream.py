"""A query stream releases its warehouse session even when the run stops before reading it."""

import pytest

from klaviyo_bridge.errors import ExportError
from klaviyo_bridge.exports.job import export_query
from klaviyo_bridge.exports.settings import parse_export_settings
from klaviyo_bridge.exports.source import query_source
from klaviyo_bridge.store.factory import open_warehouse


def test_unread_stream_closes_on_close(tmp_path):
    with open_warehouse(tmp_path / "w.duckdb") as wh:
        schema, stream = query_source(wh, "SELECT 1 AS a")()
        stream.close()
        assert list(stream) == []


def test_missing_column_leaves_the_warehouse_reopenable(tmp_path):
    path = tmp_path / "w.duckdb"
    settings = parse_export_settings(
        {
            "type": "klaviyo",
            "api_token": "pk_test",
            "base_url": "http://127.0.0.1:9",
            "operation": "batch_consent",
            "subscription_type": "email_marketing_only",
        }
    )
    wh = open_warehouse(path)
    with pytest.raises(ExportError, match="email"):
        export_query(wh, "SELECT 'x' AS mail", settings)
    wh.close()
    with open_warehouse(path) as again:  # would fail if the refused run's session were still attached
        assert next(again.query_arrow("SELECT 42 AS n")).to_pylist() == [{"n": 42}]
