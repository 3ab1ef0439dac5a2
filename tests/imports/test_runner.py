"""Imports from the emulator into DuckDB: exact counts and values, incremental, write modes."""

import asyncio
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from klaviyo_bridge.api import query as q
from klaviyo_bridge.api.client import KlaviyoClient
from klaviyo_bridge.api.ratelimit import RateLimiter
from klaviyo_bridge.imports.fetch import Fetcher, plan_tasks
from klaviyo_bridge.imports.partition import Window
from klaviyo_bridge.imports.runner import SAFETY_MARGIN, run_import
from klaviyo_bridge.imports.streams import stream
from klaviyo_emulator.app import create_app
from klaviyo_emulator.settings import EmulatorSettings

from .conftest import EMU, make_config

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


async def all_records(transport, operation_id, **kw):
    cfg = make_config("profiles")
    async with KlaviyoClient(cfg.source.client_settings(), transport=transport, limiter=RateLimiter(enabled=False)) as c:
        return [r async for r in c.records(operation_id, **kw)]


async def events_between(transport, start: datetime, end: datetime | None = None) -> list[dict]:
    """The emulator's events with ``start <= datetime < end`` (no end: all after start)."""
    bounds = (q.greater_or_equal("datetime", start), *((q.less_than("datetime", end),) if end else ()))
    return await all_records(transport, "get_events", query=q.Query(page_size=1000, filters=bounds))


@pytest.mark.parametrize(
    "data_source, operation_id, page_size",
    [
        ("profiles", "get_profiles", 100),
        ("events", "get_events", 1000),
        ("lists", "get_lists", 10),
        ("metrics", "get_metrics", None),
        ("templates", "get_templates", 10),
        ("flows", "get_flows", 50),
        ("segments", "get_segments", 10),
    ],
)
async def test_full_import_has_exactly_the_emulator_records(transport, warehouse, data_source, operation_id, page_size):
    result = await run_import(make_config(data_source), warehouse, "klaviyo", data_source, transport=transport, now=NOW)
    table = warehouse.table_arrow("klaviyo", data_source)
    expected = await all_records(transport, operation_id, query=q.Query(page_size=page_size))
    if data_source == "flows":  # archived flows are listed only when filtered for; the import has both
        archived = await all_records(
            transport, operation_id, query=q.Query(page_size=page_size, filters=(q.equals("archived", True),))
        )
        assert archived and not {r["id"] for r in archived} & {r["id"] for r in expected}
        expected += archived
    assert result.rows == table.num_rows == len(expected)
    assert sorted(table.column("id").to_pylist()) == sorted(r["id"] for r in expected)


async def test_profile_values_match_the_api(transport, warehouse):
    await run_import(make_config("profiles"), warehouse, "klaviyo", "profiles", transport=transport, now=NOW)
    rows = {r["id"]: r for r in warehouse.table_arrow("klaviyo", "profiles").to_pylist()}
    for record in (await all_records(transport, "get_profiles", query=q.Query(page_size=100)))[:50]:
        row, attrs = rows[record["id"]], record["attributes"]
        assert row["email"] == attrs["email"] and row["phone_number"] == attrs["phone_number"]
        assert row["updated"] == datetime.fromisoformat(attrs["updated"])
        assert row["location_city"] == (attrs.get("location") or {}).get("city")


async def test_events_carry_metric_name_and_profile_identifiers(transport, warehouse):
    await run_import(make_config("events"), warehouse, "klaviyo", "events", transport=transport, now=NOW)
    rows = warehouse.table_arrow("klaviyo", "events").to_pylist()
    assert all(r["metric_id"] and r["metric_name"] and r["profile_id"] for r in rows)
    assert any(r["profile_email"] for r in rows)


async def test_skip_related_object_leaves_out_the_lookups(transport, warehouse):
    await run_import(
        make_config("events", skip_related_object=True), warehouse, "klaviyo", "events", transport=transport, now=NOW
    )
    names = warehouse.table_arrow("klaviyo", "events").column_names
    assert "metric_name" not in names and "profile_email" not in names


async def test_campaigns_cover_email_and_sms_archived_and_not(transport, warehouse):
    await run_import(make_config("campaigns"), warehouse, "klaviyo", "campaigns", transport=transport, now=NOW)
    rows = warehouse.table_arrow("klaviyo", "campaigns").to_pylist()
    expected = 0
    for channel in ("email", "sms"):
        for archived in (False, True):
            expected += len(
                await all_records(
                    transport,
                    "get_campaigns",
                    query=q.Query(filters=(q.equals("messages.channel", channel), q.equals("archived", archived))),
                )
            )
    assert len(rows) == expected and {r["channel"] for r in rows} == {"email", "sms"}


async def test_profiles_in_list_match_the_list_count(transport, warehouse):
    lists = await all_records(transport, "get_lists")
    list_id = lists[0]["id"]
    await run_import(
        make_config("profiles_in_list", list_id=list_id), warehouse, "klaviyo", "members", transport=transport, now=NOW
    )
    rows = warehouse.table_arrow("klaviyo", "members").to_pylist()
    members = await all_records(transport, "get_profiles_for_list", path_params={"id": list_id})
    assert sorted(r["id"] for r in rows) == sorted(m["id"] for m in members)
    assert {r["list_id"] for r in rows} == {list_id}


async def test_metric_events_only_that_metric(transport, warehouse):
    await run_import(
        make_config("metric_events", metric="Opened Email"), warehouse, "klaviyo", "open", transport=transport, now=NOW
    )
    rows = warehouse.table_arrow("klaviyo", "open").to_pylist()
    assert rows and {r["metric_name"] for r in rows} == {"Opened Email"}


async def test_incremental_second_run_fetches_only_newer_records(transport, warehouse):
    """Without a lookback (lookback: 0h) a second run starts exactly at the cursor, which is the
    first run's "now" minus the safety margin."""
    cfg = make_config("events", mode="append", incremental=True, start_time="2025-06-01T00:00:00Z", lookback="0h")
    first = await run_import(
        cfg, warehouse, "klaviyo", "events", transport=transport, now=datetime(2025, 9, 1, tzinfo=timezone.utc) + SAFETY_MARGIN
    )
    assert warehouse.state.cursor("klaviyo.events") == "2025-09-01T00:00:00+00:00"
    cfg2 = make_config("events", mode="append", incremental=True, lookback="0h")
    later = NOW + SAFETY_MARGIN
    second = await run_import(cfg2, warehouse, "klaviyo", "events", transport=transport, now=later)
    ids = warehouse.table_arrow("klaviyo", "events").column("id").to_pylist()
    assert len(ids) == len(set(ids)) == first.rows + second.rows
    stamps = warehouse.table_arrow("klaviyo", "events").column("datetime").to_pylist()
    assert min(stamps) >= datetime(2025, 6, 1, tzinfo=timezone.utc)
    everything = await events_between(transport, datetime(2025, 6, 1, tzinfo=timezone.utc), NOW)
    assert len(ids) == len(everything)
    third = await run_import(cfg2, warehouse, "klaviyo", "events", transport=transport, now=later)
    assert third.rows == 0 and third.requests == 0
    # a run a minute later: one window, one request (not one per default window)
    fourth = await run_import(cfg2, warehouse, "klaviyo", "events", transport=transport, now=later + timedelta(minutes=1))
    assert fourth.rows == 0 and fourth.requests == 1


async def test_profiles_windows_lose_nothing_at_shared_timestamps(transport, warehouse):
    """profiles.updated only has greater-than/less-than and many profiles share a timestamp."""
    cfg = make_config("profiles", incremental=True, incremental_field="updated", start_time="2024-01-01T00:00:00Z")
    result = await run_import(cfg, warehouse, "klaviyo", "profiles", transport=transport, now=NOW, concurrency=8)
    ids = warehouse.table_arrow("klaviyo", "profiles").column("id").to_pylist()
    expected = await all_records(
        transport,
        "get_profiles",
        query=q.Query(
            page_size=100,
            filters=(
                q.greater_than("updated", datetime(2024, 1, 1, tzinfo=timezone.utc) - timedelta(microseconds=1)),
                q.less_than("updated", NOW),
            ),
        ),
    )
    assert len(ids) == len(set(ids)) == len(expected) == result.rows


@pytest.mark.parametrize("mode", ["append", "replace", "replace_on_new_data", "merge"])
async def test_write_modes_on_a_second_run(transport, warehouse, mode):
    cfg = make_config("lists", mode=mode)
    await run_import(cfg, warehouse, "klaviyo", "lists", transport=transport, now=NOW)
    await run_import(cfg, warehouse, "klaviyo", "lists", transport=transport, now=NOW)
    rows = warehouse.table_arrow("klaviyo", "lists").num_rows
    assert rows == (2 * EMU.lists if mode == "append" else EMU.lists)


async def test_run_history_records_success_and_failure(transport, warehouse):
    await run_import(make_config("lists"), warehouse, "klaviyo", "lists", transport=transport, now=NOW)
    bad = make_config("profiles_in_list", list_id="NOPE00")
    with pytest.raises(Exception, match="not found"):
        await run_import(bad, warehouse, "klaviyo", "members", transport=transport, now=NOW)
    runs = warehouse.state.runs()
    assert [r.status for r in runs][:2] == ["error", "success"]
    assert EMU.api_key not in (runs[0].error or "")


async def test_partition_key_adds_the_time_column(transport, warehouse):
    cfg = make_config("lists", out={"partition_key": "created"})
    await run_import(cfg, warehouse, "klaviyo", "lists", transport=transport, now=NOW)
    for row in warehouse.table_arrow("klaviyo", "lists").to_pylist():
        assert row["time"] == int(row["created"].timestamp())


async def test_partition_key_must_be_a_timestamp_column(transport, warehouse):
    from klaviyo_bridge.errors import ConfigError

    cfg = make_config("lists", out={"partition_key": "name"})
    with pytest.raises(ConfigError, match="partition_key 'name' is not a timestamp column.*created"):
        await run_import(cfg, warehouse, "klaviyo", "lists", transport=transport, now=NOW)


async def test_event_metrics_and_event_profiles_for_given_ids(transport, warehouse):
    events = (await all_records(transport, "get_events", query=q.Query(page_size=5)))[:5]
    ids = [e["id"] for e in events]
    await run_import(make_config("event_metrics", event_ids=ids), warehouse, "klaviyo", "em", transport=transport, now=NOW)
    await run_import(
        make_config("event_profiles", event_ids=",".join(ids)), warehouse, "klaviyo", "ep", transport=transport, now=NOW
    )
    metrics = {r["event_id"]: r for r in warehouse.table_arrow("klaviyo", "em").to_pylist()}
    profiles = {r["event_id"]: r for r in warehouse.table_arrow("klaviyo", "ep").to_pylist()}
    for event in events:
        assert metrics[event["id"]]["id"] == event["relationships"]["metric"]["data"]["id"]
        assert profiles[event["id"]]["id"] == event["relationships"]["profile"]["data"]["id"]


async def test_profiles_in_segment(transport, warehouse):
    segment = (await all_records(transport, "get_segments"))[0]
    await run_import(
        make_config("profiles_in_segment", segment_id=segment["id"]), warehouse, "klaviyo", "seg", transport=transport, now=NOW
    )
    rows = warehouse.table_arrow("klaviyo", "seg").to_pylist()
    members = await all_records(transport, "get_profiles_for_segment", path_params={"id": segment["id"]})
    assert sorted(r["id"] for r in rows) == sorted(m["id"] for m in members)
    assert {r["segment_id"] for r in rows} <= {segment["id"]}


async def test_global_exclusions_are_the_suppressed_profiles(transport, warehouse):
    await run_import(make_config("global_exclusions"), warehouse, "klaviyo", "excl", transport=transport, now=NOW)
    rows = warehouse.table_arrow("klaviyo", "excl").to_pylist()
    everyone = await all_records(
        transport, "get_profiles", query=q.Query(page_size=100, additional_fields={"profile": ["subscriptions"]})
    )
    suppressed = {
        p["id"]
        for p in everyone
        if (((p["attributes"].get("subscriptions") or {}).get("email") or {}).get("marketing") or {}).get("suppression")
    }
    assert rows and {r["id"] for r in rows} == suppressed


async def test_seed_example_with_start_time_resumes_from_the_cursor(transport, warehouse):
    """The seed's config gives start_time and no end_time: only the first run starts there."""
    cfg = make_config("events", mode="append", incremental=True, start_time="2025-06-01T00:00:00Z", lookback="0h")
    first = await run_import(
        cfg, warehouse, "klaviyo", "ev", transport=transport, now=datetime(2025, 9, 1, tzinfo=timezone.utc) + SAFETY_MARGIN
    )
    second = await run_import(cfg, warehouse, "klaviyo", "ev", transport=transport, now=NOW)
    assert second.start == datetime(2025, 9, 1, tzinfo=timezone.utc)
    ids = warehouse.table_arrow("klaviyo", "ev").column("id").to_pylist()
    assert len(ids) == len(set(ids)) == first.rows + second.rows


async def test_fixed_window_when_both_times_are_given(transport, warehouse):
    cfg = make_config(
        "events", mode="append", incremental=True, start_time="2025-06-01T00:00:00Z", end_time="2025-07-01T00:00:00Z"
    )
    first = await run_import(cfg, warehouse, "klaviyo", "ev", transport=transport, now=NOW)
    second = await run_import(cfg, warehouse, "klaviyo", "ev", transport=transport, now=NOW)
    assert first.start == second.start == datetime(2025, 6, 1, tzinfo=timezone.utc)
    assert first.rows == second.rows > 0


async def test_inserts_are_whole_row_groups_until_the_last(transport, warehouse, monkeypatch):
    """Every insert but the last is a multiple of WRITE_ROWS (DuckDB's row group size in real
    runs), so no part-filled row group is left for a checkpoint to rewrite; nothing is lost."""
    from klaviyo_bridge.imports import runner
    from klaviyo_bridge.store.warehouse import TableWriter

    monkeypatch.setattr(runner, "WRITE_ROWS", 1500)  # pages are 1000 rows
    inserts: list[int] = []
    real_write = TableWriter.write

    def counting_write(self, data):
        inserts.append(data.num_rows)
        return real_write(self, data)

    monkeypatch.setattr(TableWriter, "write", counting_write)
    result = await run_import(make_config("events"), warehouse, "klaviyo", "events", transport=transport, now=NOW)
    assert result.rows == sum(inserts) == EMU.events
    assert len(inserts) > 2
    assert all(n % 1500 == 0 for n in inserts[:-1]) and 0 < inserts[-1]
    ids = warehouse.table_arrow("klaviyo", "events").column("id").to_pylist()
    assert len(ids) == len(set(ids)) == EMU.events


def _adding_attributes(app, path_prefix: str):
    """The emulator as if Klaviyo had added attributes the spec does not declare yet: a new
    top-level attribute and a new key inside the declared ``location`` object."""
    import orjson

    async def wrapped(scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith(path_prefix):
            return await app(scope, receive, send)
        messages = []

        async def capture(message):
            messages.append(message)

        await app(scope, receive, capture)
        doc = orjson.loads(b"".join(m.get("body", b"") for m in messages[1:]))
        for record in doc.get("data") or []:
            attributes = record["attributes"]
            attributes["loyalty_tier"] = {"name": "gold", "since": record["id"][:4]}
            attributes["location"] = {**(attributes.get("location") or {}), "plus_code": record["id"][-4:]}
        body = orjson.dumps(doc)
        start = messages[0]
        headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
        await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return wrapped


async def test_attributes_the_spec_does_not_declare_land_in_extra_attributes(emulator_app, warehouse):
    """A new attribute never fails a run nor vanishes: it lands in the JSON column
    ``extra_attributes``, and a later run without it still writes to the same table."""
    import json

    import httpx

    drifted = httpx.ASGITransport(app=_adding_attributes(emulator_app, "/api/profiles"))
    result = await run_import(make_config("profiles"), warehouse, "klaviyo", "profiles", transport=drifted, now=NOW)
    rows = warehouse.table_arrow("klaviyo", "profiles").to_pylist()
    assert result.rows == len(rows) == EMU.profiles
    for row in rows:
        extra = json.loads(row["extra_attributes"])
        assert extra == {"loyalty_tier": {"name": "gold", "since": row["id"][:4]}, "location": {"plus_code": row["id"][-4:]}}
    plain = httpx.ASGITransport(app=emulator_app)
    await run_import(make_config("profiles"), warehouse, "klaviyo", "profiles", transport=plain, now=NOW)
    table = warehouse.table_arrow("klaviyo", "profiles")
    assert table.num_rows == 2 * EMU.profiles
    assert table.column("extra_attributes").null_count == EMU.profiles


async def test_open_ended_objects_are_stored_as_json(transport, warehouse):
    """event_properties lands in a JSON column (queryable with JSON functions), and a table
    made when such columns were plain text keeps taking rows into its text column."""
    from klaviyo_bridge.store.columns import Kind

    await run_import(make_config("events"), warehouse, "klaviyo", "events", transport=transport, now=NOW)
    assert warehouse.table_columns("klaviyo", "events")["event_properties"] is Kind.JSON
    value = next(
        warehouse.query_arrow("SELECT count(*) AS n FROM klaviyo.events WHERE json_type(event_properties) = 'OBJECT'")
    ).to_pylist()
    assert value == [{"n": EMU.events}]

    with warehouse.transaction() as session:
        session.execute(
            "CREATE TABLE klaviyo.old_events AS SELECT id, event_properties::VARCHAR AS event_properties "
            "FROM klaviyo.events LIMIT 0"
        )
    result = await run_import(make_config("events"), warehouse, "klaviyo", "old_events", transport=transport, now=NOW)
    assert warehouse.table_columns("klaviyo", "old_events")["event_properties"] is Kind.TEXT
    rows = warehouse.table_arrow("klaviyo", "old_events")
    assert rows.num_rows == result.rows == EMU.events and rows.column("event_properties").null_count == 0


async def test_a_quiet_accounts_first_run_fetches_in_one_window(warehouse):
    """The first run learns the oldest record from one page sorted ascending; when that page holds
    every record, one window fetches them: 2 requests, not one per default window (there were 64)."""
    quiet = httpx.ASGITransport(app=create_app(EmulatorSettings(seed=5, profiles=26, events=40, lists=1, rate_limits=False)))
    result = await run_import(make_config("profiles"), warehouse, "klaviyo", "profiles", transport=quiet, now=NOW)
    assert result.rows == warehouse.table_arrow("klaviyo", "profiles").num_rows == 26
    assert result.requests == 2


async def test_a_busy_accounts_first_run_still_fetches_windows_side_by_side(transport, warehouse):
    """1,234 profiles do not fit the first page (100): the range is split, every record lands once."""
    result = await run_import(make_config("profiles"), warehouse, "klaviyo", "profiles", transport=transport, now=NOW)
    ids = warehouse.table_arrow("klaviyo", "profiles").column("id").to_pylist()
    assert result.rows == len(ids) == len(set(ids)) == EMU.profiles
    assert result.requests > 1 + -(-EMU.profiles // 100)  # more than one sequence of full pages: windows


async def test_a_quiet_accounts_run_over_a_long_range_is_one_request(warehouse):
    """A run with a start (here ``start_time`` four months back: 64 default windows) first reads
    one page over the whole range; it holds every event, so that page is the run: 1 request."""
    quiet = httpx.ASGITransport(app=create_app(EmulatorSettings(seed=5, profiles=26, events=40, lists=1, rate_limits=False)))
    cfg = make_config("events", incremental=True, start_time="2025-09-01T00:00:00Z")
    result = await run_import(cfg, warehouse, "klaviyo", "events", transport=quiet, now=NOW)
    everything = await events_between(quiet, datetime(2025, 9, 1, tzinfo=timezone.utc))
    assert result.rows == warehouse.table_arrow("klaviyo", "events").num_rows == len(everything) > 0
    assert result.requests == 1
    # an hour later (12 windows of 5 minutes): one request again, and the cursor moves on
    later = await run_import(cfg, warehouse, "klaviyo", "events", transport=quiet, now=NOW + timedelta(hours=1))
    assert later.requests == 1
    end = NOW + timedelta(hours=1) - SAFETY_MARGIN
    assert warehouse.state.cursor("klaviyo.events") == end.isoformat()
    upto = await events_between(quiet, datetime(2025, 9, 1, tzinfo=timezone.utc), end)
    ids = warehouse.table_arrow("klaviyo", "events").column("id").to_pylist()
    assert sorted(ids) == sorted(r["id"] for r in upto)


async def test_a_busy_accounts_run_over_a_long_range_still_fetches_windows(transport, warehouse):
    cfg = make_config("events", incremental=True, start_time="2025-06-01T00:00:00Z")
    result = await run_import(cfg, warehouse, "klaviyo", "events", transport=transport, now=NOW)
    ids = warehouse.table_arrow("klaviyo", "events").column("id").to_pylist()
    assert result.rows == len(ids) == len(set(ids)) > 1000  # more than the first page holds
    assert result.requests > 1 + 16  # the first page over the whole range, then the windows


async def test_a_small_group_is_read_without_looking_for_its_oldest_member(account, warehouse):
    """A group small enough for one window is read in one sequence: the group list, each group's
    member count and its member pages, no request for where its members start (one a group before)."""
    _, small = account
    result = await run_import(make_config("list_memberships"), warehouse, "klaviyo", "members", transport=small, now=NOW)
    groups = warehouse.table_arrow("klaviyo", "members").column("list_id").unique().to_pylist()
    assert result.rows > 0 and len(groups) == 3
    assert result.requests == 1 + len(groups) + result.pages


async def test_a_reader_that_stops_early_closes_the_fetch(transport):
    """A reader that stops (a failed insert, a kill) with pages still queued closes the fetch at
    once: its workers are cancelled and nothing is left waiting for room in the full queue."""
    cfg = make_config("events")
    s = stream("events")
    windows = [Window(NOW - timedelta(days=d + 1), NOW - timedelta(days=d)) for d in range(365 * 2, 0, -73)]
    async with KlaviyoClient(cfg.source.client_settings(), transport=transport, limiter=RateLimiter(enabled=False)) as client:
        fetcher = Fetcher(client, s, s.columns(related=False), time_column="datetime", concurrency=2)
        batches = fetcher.batches(plan_tasks(s, time_field="datetime", windows=windows))
        await anext(batches)
        for _ in range(500):  # the in-process emulator answers: the workers fill the queue and wait for room
            await asyncio.sleep(0)
        assert fetcher.stats.pages >= 4  # one read, two queued, more held by the waiting workers
        closing = asyncio.ensure_future(batches.aclose())
        for _ in range(100):
            await asyncio.sleep(0)
        done = closing.done()
        closing.cancel()
        assert done, "closing the fetch waited for room in the queue"
        assert all(t.done() for t in asyncio.all_tasks() if t is not asyncio.current_task())
