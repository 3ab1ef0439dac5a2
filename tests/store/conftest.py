"""Every store test runs against a DuckDB file in tmp_path AND the PostgreSQL server on 127.0.0.1.

PostgreSQL being unreachable fails the PostgreSQL half loudly (the import issue forbids skipping).
Each test gets its own schema ("database"), dropped afterwards; state rows use unique job names.
"""

from __future__ import annotations

import os
import uuid

import pyarrow as pa
import pytest

from klaviyo_bridge.errors import StoreError
from klaviyo_bridge.store import Warehouse, open_warehouse
from klaviyo_bridge.store.identifiers import quote

PG_URL = os.environ.get("KLAVIYO_BRIDGE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(params=["duckdb", "postgres"])
def engine(request) -> str:
    return request.param


@pytest.fixture
def warehouse_url(engine, tmp_path) -> str:
    return str(tmp_path / "warehouse.duckdb") if engine == "duckdb" else PG_URL


@pytest.fixture
def wh(engine, warehouse_url):
    try:
        warehouse = open_warehouse(warehouse_url)
    except StoreError as exc:
        if engine == "postgres":
            pytest.fail(
                f"PostgreSQL at {PG_URL} is required for the store tests and is unreachable "
                f"(set KLAVIYO_BRIDGE_TEST_POSTGRES to point elsewhere): {exc}",
                pytrace=False,
            )
        raise
    yield warehouse
    warehouse.close()


@pytest.fixture
def db(wh) -> str:
    name = f"t_{uuid.uuid4().hex[:10]}"
    yield name
    with wh.transaction() as session:
        session.execute(f"DROP SCHEMA IF EXISTS {quote(name)} CASCADE")


@pytest.fixture
def job() -> str:
    return f"job-{uuid.uuid4().hex[:10]}"


def rows(wh: Warehouse, db: str, table: str, order_by: str = "id") -> list[dict]:
    """Table contents as dicts, sorted, JSON columns as text."""
    return (
        pa.Table.from_batches(list(wh.query_arrow(f"SELECT * FROM {quote(db)}.{quote(table)} ORDER BY {order_by}"))).to_pylist()
        if wh.table_columns(db, table) is not None
        else []
    )
