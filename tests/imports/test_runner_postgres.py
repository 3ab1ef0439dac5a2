"""The same imports into PostgreSQL (127.0.0.1:5432, database test): a full peer of DuckDB.

Fails loudly, not skips, when the server is unreachable: CI must not pass without it.
"""

import uuid
from datetime import datetime, timezone

import pytest

from klaviyo_bridge.imports.runner import run_import
from klaviyo_bridge.store.warehouse import open_warehouse

from .conftest import EMU, make_config

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.fixture
def pg():
    wh = open_warehouse(PG_URL)
    schema = "imp_" + uuid.uuid4().hex[:10]
    yield wh, schema
    session = wh._open_session()
    try:
        session.begin()
        session.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        session.commit()
    finally:
        session.close()
        wh.close()


@pytest.mark.parametrize("mode", ["append", "replace", "replace_on_new_data", "merge"])
async def test_profiles_into_postgres_every_mode(transport, pg, mode):
    wh, schema = pg
    cfg = make_config("profiles", mode=mode)
    first = await run_import(cfg, wh, schema, "profiles", transport=transport, now=NOW, job=f"{schema}.p")
    second = await run_import(cfg, wh, schema, "profiles", transport=transport, now=NOW, job=f"{schema}.p")
    table = wh.table_arrow(schema, "profiles")
    assert first.rows == second.rows == EMU.profiles
    assert table.num_rows == (2 * EMU.profiles if mode == "append" else EMU.profiles)
    row = table.to_pylist()[0]
    assert row["updated"].tzinfo is not None and "@" in row["email"]


async def test_incremental_events_into_postgres(transport, pg):
    wh, schema = pg
    job = f"{schema}.events"
    cfg = make_config("events", mode="merge", incremental=True, start_time="2025-06-01T00:00:00Z")
    await run_import(cfg, wh, schema, "events", transport=transport, job=job, now=datetime(2025, 9, 1, tzinfo=timezone.utc))
    second = await run_import(make_config("events", mode="merge", incremental=True), wh, schema, "events",
                              transport=transport, job=job, now=NOW)
    assert wh.state.cursor(job) == NOW.isoformat()
    ids = wh.table_arrow(schema, "events").column("id").to_pylist()
    assert len(ids) == len(set(ids)) and second.rows > 0
