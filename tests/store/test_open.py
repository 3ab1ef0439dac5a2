"""Choosing the engine from a path or URL."""

from __future__ import annotations

import pytest

from klaviyo_bridge.errors import ConfigError, StoreError
from klaviyo_bridge.store import open_warehouse
from klaviyo_bridge.store.duckdb import DuckDBWarehouse
from klaviyo_bridge.store.postgres import redact_url


def test_paths_and_duckdb_urls_open_duckdb(tmp_path, monkeypatch):
    with open_warehouse(tmp_path / "a" / "w.duckdb") as wh:
        assert isinstance(wh, DuckDBWarehouse) and wh.path == tmp_path / "a" / "w.duckdb"
    with open_warehouse(f"duckdb:///{tmp_path}/b.duckdb") as wh:  # duckdb:////abs/path
        assert wh.path == tmp_path / "b.duckdb"
    monkeypatch.chdir(tmp_path)
    with open_warehouse("duckdb:///rel.duckdb") as wh:
        assert wh.path == tmp_path / "rel.duckdb"


def test_unknown_scheme_is_a_config_error():
    with pytest.raises(ConfigError, match="mysql"):
        open_warehouse("mysql://localhost/x")


def test_unreachable_postgres_is_a_store_error_without_password():
    with pytest.raises(StoreError, match="cannot connect to PostgreSQL") as info:
        open_warehouse("postgresql://u:hunter2@127.0.0.1:1/x")
    assert "hunter2" not in str(info.value)
    assert redact_url("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"


def test_database_named_like_the_duckdb_file(tmp_path):
    """A schema called like the file's stem (klaviyo in klaviyo.duckdb) must not be ambiguous."""
    import pyarrow as pa

    from klaviyo_bridge.store.warehouse import open_warehouse

    with open_warehouse(tmp_path / "klaviyo.duckdb") as wh:
        wh.write("klaviyo", "lists", pa.table({"id": ["a", "b"]}))
        assert wh.table_arrow("klaviyo", "lists").num_rows == 2
