"""Late events and metric choice, against the emulator over HTTP.

The emulator's ``late_events`` makes a share of the events visible only some time after their
``datetime`` (up to ``arrival_delay``); its clock is a fake one the test moves, so "later" is
exact. An incremental event import re-reads ``lookback`` before its cursor: late events arrive,
nothing is stored twice (append and merge), and the cursor stays a safety margin behind "now".
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from klaviyo_bridge.config import parse_import_config
from klaviyo_bridge.errors import ConfigError
from klaviyo_bridge.imports.runner import SAFETY_MARGIN, run_import
from klaviyo_bridge.store.factory import open_warehouse

from ..emulator.writes_helpers import FakeClock

DAY = 86400
LATE = dict(
    seed=41, profiles=150, events=4000, lists=2, rate_limits=False, late_events=0.3, arrival_delay=5 * DAY, app_clock=FakeClock()
)


def config(base_url: str, mode: str = "append", **source):
    return parse_import_config(
        {
            "in": {
                "type": "klaviyo",
                "data_source": source.pop("data_source", "events"),
                "api_token": "pk_emulator_demo_key",
                "base_url": base_url,
                "incremental": True,
                **source,
            },
            "out": {"mode": mode},
        }
    )


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


def visible_events(emulator, lo: int, hi: int) -> set[str]:
    """Ids of events visible now with lo <= datetime < hi (the emulator's own view)."""
    e = emulator.emulator.account.events
    now = emulator.emulator.now()
    rows = [r for r in range(e.count) if lo <= e.datetime[r] < hi and e.visible(r, now)]
    return set(e.event_ids(__import__("numpy").array(rows, dtype="int64")))


@pytest.fixture
def warehouse(tmp_path):
    wh = open_warehouse(tmp_path / "wh.duckdb")
    yield wh
    wh.close()


def stored_ids(wh, table="events", schema="klaviyo") -> list[str]:
    return wh.table_arrow(schema, table).column("id").to_pylist()


@pytest.fixture(params=["duckdb", "postgres"])
def any_warehouse(request, tmp_path):
    if request.param == "duckdb":
        wh = open_warehouse(tmp_path / "wh.duckdb")
        yield wh, "klaviyo"
        wh.close()
        return
    import uuid

    wh = open_warehouse("postgresql://postgres@127.0.0.1:5432/test")
    schema = f"imp19_{uuid.uuid4().hex[:10]}"
    yield wh, schema
    with wh.transaction() as s:
        s.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    wh.close()


@pytest.mark.klaviyo_emulator(**LATE)
@pytest.mark.parametrize("mode", ["append", "merge"])
async def test_late_events_arrive_on_the_next_run_and_nothing_is_doubled(klaviyo_emulator, any_warehouse, mode):
    warehouse, schema = any_warehouse
    emu = klaviyo_emulator.emulator
    start = emu.now() - 20 * DAY
    cfg = config(klaviyo_emulator.base_url, mode, start_time=at(start).isoformat())
    first = await run_import(cfg, warehouse, schema, "events", now=at(emu.now()))
    after_first = set(stored_ids(warehouse, schema=schema))
    assert first.end == at(emu.now()) - SAFETY_MARGIN
    assert after_first == visible_events(klaviyo_emulator, start, emu.now() - 60)

    emu.clock.advance(2 * DAY)  # late events stamped before the first run's end arrive meanwhile
    second = await run_import(cfg, warehouse, schema, "events", now=at(emu.now()))
    assert second.start == first.end - timedelta(days=3)  # the default lookback
    ids = stored_ids(warehouse, schema=schema)
    assert len(ids) == len(set(ids))  # re-read events are not stored twice
    arrived = visible_events(klaviyo_emulator, start, int(first.end.timestamp())) - after_first
    assert arrived, "the account should have late events for this test"
    assert arrived <= set(ids)  # the late ones inside the lookback are in
    assert set(ids) == visible_events(klaviyo_emulator, start, emu.now() - 60) - _older_than_lookback(
        klaviyo_emulator, arrived, second.start
    )


def _older_than_lookback(emulator, arrived: set[str], lookback_start: datetime) -> set[str]:
    e = emulator.emulator.account.events
    return {i for i in arrived if e.datetime[e.row_for_id(i)] < lookback_start.timestamp()}


@pytest.mark.klaviyo_emulator(**LATE)
async def test_without_lookback_late_events_are_lost(klaviyo_emulator, warehouse):
    """lookback: 0h is the seeds' behaviour: the second run starts at the cursor, so events that
    arrived late with an earlier datetime are never read. The default lookback gets them."""
    emu = klaviyo_emulator.emulator
    start = at(emu.now() - 20 * DAY).isoformat()
    first = await run_import(
        config(klaviyo_emulator.base_url, start_time=start, lookback="0h"), warehouse, "klaviyo", "no_lookback", now=at(emu.now())
    )
    await run_import(config(klaviyo_emulator.base_url, start_time=start), warehouse, "klaviyo", "lookback", now=at(emu.now()))
    emu.clock.advance(2 * DAY)
    for table, lookback in (("no_lookback", "0h"), ("lookback", None)):
        extra = {"lookback": lookback} if lookback else {}
        await run_import(
            config(klaviyo_emulator.base_url, start_time=start, **extra), warehouse, "klaviyo", table, now=at(emu.now())
        )
    late = visible_events(klaviyo_emulator, emu.now() - 22 * DAY, int(first.end.timestamp())) - set(
        stored_ids(warehouse, "no_lookback")
    )
    assert late and not late & set(stored_ids(warehouse, "no_lookback"))
    assert late <= set(stored_ids(warehouse, "lookback"))


@pytest.mark.klaviyo_emulator(seed=42, profiles=100, events=2000, lists=1, rate_limits=False)
async def test_cursor_never_passes_now_minus_the_margin_on_future_dated_records(klaviyo_emulator, warehouse):
    """Seen from a run whose clock is 30 days behind the account's, every later event is
    future-dated: the run stops at its own now minus the margin, even with an end_time ahead."""
    now = at(klaviyo_emulator.emulator.now() - 30 * DAY)
    ahead = (now + timedelta(days=60)).isoformat()
    cfg = config(klaviyo_emulator.base_url, start_time=(now - timedelta(days=60)).isoformat(), end_time=ahead)
    result = await run_import(cfg, warehouse, "klaviyo", "events", now=now)
    assert result.end == now - SAFETY_MARGIN
    stamps = warehouse.table_arrow("klaviyo", "events").column("datetime").to_pylist()
    assert stamps and max(stamps) < now - SAFETY_MARGIN
    cfg = config(klaviyo_emulator.base_url, start_time=(now - timedelta(days=60)).isoformat())
    await run_import(cfg, warehouse, "klaviyo", "ev2", now=now)
    assert warehouse.state.cursor("klaviyo.ev2") == (now - SAFETY_MARGIN).isoformat()


@pytest.mark.klaviyo_emulator(**{**LATE, "faults": "500=0.15,429=0.1,reset=0.05,seed=5", "app_clock": FakeClock()})
async def test_late_events_through_faults(klaviyo_emulator, warehouse, monkeypatch):
    """Server errors, throttling and dropped connections on every run: the same rows as the
    emulator's own view, none twice. (The client's retry waits are compressed, not skipped.)"""
    from klaviyo_bridge.imports import runner

    from ..reliability.helpers import fast_client_class

    monkeypatch.setattr(runner, "KlaviyoClient", fast_client_class())
    emu = klaviyo_emulator.emulator
    start = emu.now() - 10 * DAY
    cfg = parse_import_config(
        {
            "in": {
                "type": "klaviyo",
                "data_source": "events",
                "api_token": "pk_emulator_demo_key",
                "base_url": klaviyo_emulator.base_url,
                "incremental": True,
                "start_time": at(start).isoformat(),
                "retry_limit": 7,
            },
            "out": {"mode": "append"},
        }
    )
    await run_import(cfg, warehouse, "klaviyo", "events", now=at(emu.now()))
    emu.clock.advance(DAY)
    second = await run_import(cfg, warehouse, "klaviyo", "events", now=at(emu.now()))
    ids = stored_ids(warehouse)
    assert len(ids) == len(set(ids))
    assert set(ids) >= visible_events(klaviyo_emulator, int(second.start.timestamp()), int(second.end.timestamp()))


# ----- validation ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value, message",
    [
        ("3 weeks", "write hours or days, e.g. 3d, 12h or 0h"),
        ("-2d", "write hours or days"),
        ("400d", "longer than the longest lookback, 90d"),
    ],
)
def test_lookback_is_validated(value, message):
    with pytest.raises(ConfigError) as err:
        config("http://127.0.0.1:1", lookback=value)
    assert "in.lookback" in str(err.value) and message in str(err.value)


def test_lookback_and_metrics_only_on_event_sources():
    with pytest.raises(ConfigError, match="lookback applies to event sources"):
        config("http://127.0.0.1:1", data_source="profiles", lookback="1d")
    with pytest.raises(ConfigError, match="metrics limits event sources"):
        config("http://127.0.0.1:1", data_source="lists", metrics=["Placed Order"])
    with pytest.raises(ConfigError, match=r"in.metrics.*entry 2"):
        config("http://127.0.0.1:1", metrics=["Placed Order", {"nam": "x"}])


def test_lookback_units():
    assert config("http://127.0.0.1:1", lookback="12h").source.lookback_span() == timedelta(hours=12)
    assert config("http://127.0.0.1:1").source.lookback_span() == timedelta(days=3)
    assert config("http://127.0.0.1:1", lookback="0h").source.lookback_span() == timedelta(0)


# ----- metric choice -------------------------------------------------------------------------
TWO_STORES = dict(seed=43, profiles=150, events=4000, lists=2, rate_limits=False, second_store=True)


def metric_ids(emulator) -> dict[tuple[str, str], str]:
    return {
        (r.attributes["name"], r.attributes["integration"]["name"]): r.id for r in emulator.emulator.account.records["metric"]
    }


def expected_count(emulator, metric_id: str) -> int:
    acc = emulator.emulator.account
    index = [r.id for r in acc.records["metric"]].index(metric_id)
    return int((acc.events.metric == index).sum())


def plain(base_url, mode="append", **source):
    return parse_import_config(
        {"in": {"type": "klaviyo", "api_token": "pk_emulator_demo_key", "base_url": base_url, **source}, "out": {"mode": mode}}
    )


@pytest.mark.klaviyo_emulator(**TWO_STORES)
async def test_metrics_limit_the_events_and_tell_integrations_apart(klaviyo_emulator, warehouse):
    ids = metric_ids(klaviyo_emulator)
    shopify, woo = ids[("Placed Order", "Shopify")], ids[("Placed Order", "WooCommerce")]
    opened = ids[("Opened Email", "Klaviyo")]
    cfg = plain(klaviyo_emulator.base_url, data_source="events", metrics=["Placed Order (Shopify)", "Opened Email"])
    result = await run_import(cfg, warehouse, "klaviyo", "events", now=at(klaviyo_emulator.emulator.now()))
    got = warehouse.table_arrow("klaviyo", "events").column("metric_id").to_pylist()
    assert set(got) == {shopify, opened}
    assert result.rows == len(got) == expected_count(klaviyo_emulator, shopify) + expected_count(klaviyo_emulator, opened)
    # the other integration's metric of the same name, chosen as a mapping, and an id
    for table, choice in (("woo", [{"name": "Placed Order", "integration": "WooCommerce"}]), ("by_id", [woo])):
        cfg = plain(klaviyo_emulator.base_url, data_source="metric_events", metrics=choice)
        await run_import(cfg, warehouse, "klaviyo", table, now=at(klaviyo_emulator.emulator.now()))
        got = warehouse.table_arrow("klaviyo", table).column("metric_id").to_pylist()
        assert set(got) == {woo} and len(got) == expected_count(klaviyo_emulator, woo) > 0


@pytest.mark.klaviyo_emulator(**TWO_STORES)
@pytest.mark.parametrize(
    "choice, message",
    [
        (
            ["Placed Order"],
            "2 metrics are named 'Placed Order', from different integrations; say which: "
            '"Placed Order (Shopify)", "Placed Order (WooCommerce)"',
        ),
        (["Placed Ordr"], "metric 'Placed Ordr' not found in the account (did you mean 'Placed Order'"),
        (["Placed Order (Magento)"], "not from integration 'Magento'; it comes from: Shopify, WooCommerce"),
    ],
)
async def test_metric_choice_errors(klaviyo_emulator, warehouse, choice, message):
    cfg = plain(klaviyo_emulator.base_url, data_source="events", metrics=choice)
    with pytest.raises(ConfigError) as err:
        await run_import(cfg, warehouse, "klaviyo", "events", now=at(klaviyo_emulator.emulator.now()))
    assert message in str(err.value)
    assert warehouse.table_columns("klaviyo", "events") is None  # nothing written


def test_replicate_metrics_choose_the_per_metric_tables():
    from datetime import datetime as dt

    from klaviyo_bridge.imports.replicate import replicate_configs

    conn = {
        "api_token": "pk_emulator_demo_key",
        "base_url": "http://127.0.0.1:1",
        "metrics": ["Opened Email", "Clicked Email (Klaviyo)"],
        "lookback": "12h",
    }
    configs = replicate_configs(conn, dt(2025, 1, 1, tzinfo=timezone.utc), ["open", "click", "bounce", "lists"])
    assert list(configs) == ["click", "lists", "open"]
    assert configs["click"].source.metric == "Clicked Email (Klaviyo)"
    assert configs["open"].source.lookback_span() == timedelta(hours=12)
    with pytest.raises(ConfigError, match="'Opened Emial' has no replication table \\(did you mean 'Opened Email'"):
        replicate_configs({**conn, "metrics": ["Opened Emial"]}, dt(2025, 1, 1, tzinfo=timezone.utc), ["open"])
