"""The same imports into PostgreSQL (127.0.0.1:5432, database test): a full peer of DuckDB.

Fails loudly, not skips, when the server is unreachable: CI must not pass without it.
"""

import json
import uuid
from datetime import datetime, timezone

import pytest

from klaviyo_bridge.imports.runner import SAFETY_MARGIN, effective_stream, run_import
from klaviyo_bridge.store.factory import open_warehouse

from .conftest import EMU, make_config
from .test_import_incremental import LATER, api_profiles, change_profiles
from .test_import_incremental import NOW as INC_NOW
from .test_runner import all_records

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.fixture
def pg():
    wh = open_warehouse(PG_URL)
    schema = "imp_" + uuid.uuid4().hex[:10]
    yield wh, schema
    try:
        with wh.transaction() as session:
            session.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
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
    second = await run_import(
        make_config("events", mode="merge", incremental=True), wh, schema, "events", transport=transport, job=job, now=NOW
    )
    assert wh.state.cursor(job) == (NOW - SAFETY_MARGIN).isoformat()
    ids = wh.table_arrow(schema, "events").column("id").to_pylist()
    assert len(ids) == len(set(ids)) and second.rows > 0


def _comparable(table, stream) -> dict:
    """Rows by primary key, JSON columns parsed (PostgreSQL's jsonb need not keep the text as sent)."""
    json_cols = {c.name for c in stream.columns() if c.is_json}
    return {
        tuple(row[k] for k in stream.primary_key): {
            name: json.loads(v) if name in json_cols and isinstance(v, str) else v for name, v in row.items()
        }
        for row in table.to_pylist()
    }


SOURCES = {
    "events": dict(start_time="2025-06-01T00:00:00Z", end_time="2025-09-01T00:00:00Z"),
    "lists": {},
    "campaigns": {},
    "profiles_in_list": {"list_id": None},
}


@pytest.mark.parametrize("mode", ["replace", "merge"])
@pytest.mark.parametrize("data_source", list(SOURCES))
async def test_postgres_rows_equal_the_duckdb_import(transport, pg, warehouse, data_source, mode):
    """Same source, same run twice: PostgreSQL holds exactly the rows DuckDB holds, value for value."""
    wh, schema = pg
    settings = dict(SOURCES[data_source])
    if "list_id" in settings:
        settings["list_id"] = (await all_records(transport, "get_lists"))[0]["id"]
    cfg = make_config(data_source, mode=mode, **settings)
    for _ in range(2):
        pg_result = await run_import(cfg, wh, schema, "t", transport=transport, now=NOW, job=f"{schema}.t")
    duck_result = await run_import(cfg, warehouse, "klaviyo", "t", transport=transport, now=NOW)
    stream = effective_stream(cfg)
    in_pg = wh.table_arrow(schema, "t")
    in_duck = warehouse.table_arrow("klaviyo", "t")
    assert in_pg.column_names == in_duck.column_names == [c.name for c in stream.columns()]
    assert pg_result.rows == duck_result.rows == in_pg.num_rows == in_duck.num_rows > 0
    assert _comparable(in_pg, stream) == _comparable(in_duck, stream)


async def test_merge_updates_changed_rows_in_postgres_as_in_duckdb(account, pg, warehouse):
    """A second incremental run brings changed profiles: PostgreSQL's merge must update them in place
    (not only skip identical rows), ending equal to DuckDB's table."""
    clock, transport = account
    wh, schema = pg
    cfg = make_config("profiles", mode="merge", incremental=True, incremental_field="updated")
    for target, database in ((wh, schema), (warehouse, "klaviyo")):
        await run_import(cfg, target, database, "p", transport=transport, now=INC_NOW, job=f"{database}.p")
    before = await api_profiles(transport)
    clock.t += 60
    await change_profiles(transport, [before[3]["id"], before[200]["id"]], ["pg.merge@example.com"])
    for target, database in ((wh, schema), (warehouse, "klaviyo")):
        second = await run_import(cfg, target, database, "p", transport=transport, now=LATER, job=f"{database}.p")
        assert second.rows == 3
    stream = effective_stream(cfg)
    in_pg, in_duck = _comparable(wh.table_arrow(schema, "p"), stream), _comparable(warehouse.table_arrow("klaviyo", "p"), stream)
    assert in_pg == in_duck and len(in_pg) == len(before) + 1
    assert in_pg[(before[3]["id"],)]["first_name"] == "Changed"
