"""list_memberships / segment_memberships against the emulator over HTTP: joins, departures and
returns over time become rows with joined_at / left_at; the current table is the membership now.

The emulator's clock is a fake one the test moves; list members change through Klaviyo's own
endpoints (add / remove profiles), segments through the emulator's re-evaluation hook."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from klaviyo_bridge.api.client import KlaviyoClient
from klaviyo_bridge.api.ratelimit import RateLimiter
from klaviyo_bridge.config import parse_import_config
from klaviyo_bridge.errors import ConfigError
from klaviyo_bridge.imports.runner import run_import
from klaviyo_bridge.store.factory import open_warehouse

from ..emulator.writes_helpers import FakeClock

HOUR = 3600
ACCOUNT = dict(seed=51, profiles=400, events=0, lists=3, segments=2, rate_limits=False)


def config(base_url, source="list_memberships", mode="append", **extra):
    return parse_import_config(
        {
            "in": {"type": "klaviyo", "data_source": source, "api_token": "pk_emulator_demo_key", "base_url": base_url, **extra},
            "out": {"mode": mode},
        }
    )


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


@pytest.fixture(params=["duckdb", "postgres"])
def warehouse(request, tmp_path):
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


def client(emu) -> KlaviyoClient:
    cfg = config(emu.base_url)
    return KlaviyoClient(cfg.source.client_settings(), limiter=RateLimiter(enabled=False))


async def change_list(emu, list_id: str, add=(), remove=()):
    async with client(emu) as c:
        if add:
            await c.request(
                "add_profiles_to_list", path_params={"id": list_id}, json={"data": [{"type": "profile", "id": p} for p in add]}
            )
        if remove:
            await c.request(
                "remove_profiles_from_list",
                path_params={"id": list_id},
                json={"data": [{"type": "profile", "id": p} for p in remove]},
            )


def members(emu, list_id: str, segment: bool = False) -> dict[str, int]:
    acc = emu.emulator.account
    m = (acc.segment_members if segment else acc.list_members)[list_id]
    return dict(zip(acc.profiles.ids_for(m.profiles), m.joined.tolist()))


def history(wh, schema, table, group="list_id") -> list[tuple]:
    return sorted((r[group], r["profile_id"], r["joined_at"], r["left_at"]) for r in wh.table_arrow(schema, table).to_pylist())


@pytest.mark.klaviyo_emulator(**ACCOUNT, app_clock=FakeClock())
async def test_list_history_joins_leaves_and_returns(klaviyo_emulator, warehouse):
    wh, schema = warehouse
    emu = klaviyo_emulator
    clock = emu.emulator.clock
    lists = [r.id for r in emu.emulator.account.records["list"]]
    target = lists[0]
    cfg = config(emu.base_url, list_id=target)
    first = await run_import(cfg, wh, schema, "members", now=at(emu.emulator.now()))
    start = members(emu, target)
    assert first.rows == len(start) == first.joined and first.left == 0
    assert history(wh, schema, "members") == sorted((target, p, at(j), None) for p, j in start.items())

    everyone = emu.emulator.account.profiles.ids_for(range(ACCOUNT["profiles"]))
    leaving = sorted(start)[:5]
    outsiders = [p for p in everyone if p not in start][:3]
    clock.advance(HOUR)
    await change_list(emu, target, add=outsiders, remove=leaving)
    joined_at = emu.emulator.now()
    clock.advance(HOUR)
    second_at = emu.emulator.now()
    second = await run_import(cfg, wh, schema, "members", now=at(second_at))
    assert (second.joined, second.left) == (3, 5)

    clock.advance(HOUR)
    await change_list(emu, target, add=leaving[:2])  # two come back
    back_at = emu.emulator.now()
    clock.advance(HOUR)
    third = await run_import(cfg, wh, schema, "members", now=at(emu.emulator.now()))
    assert (third.joined, third.left) == (2, 0)

    rows = history(wh, schema, "members")
    expected = sorted(
        [(target, p, at(j), at(second_at) if p in leaving else None) for p, j in start.items()]
        + [(target, p, at(joined_at), None) for p in outsiders]
        + [(target, p, at(back_at), None) for p in leaving[:2]]
    )
    assert rows == expected
    current = {r["profile_id"]: r["joined_at"] for r in wh.table_arrow(schema, "members_current").to_pylist()}
    assert current == {p: at(j) for p, j in members(emu, target).items()}
    # a fourth run with nothing changed changes nothing
    fourth = await run_import(cfg, wh, schema, "members", now=at(emu.emulator.now()))
    assert (fourth.joined, fourth.left) == (0, 0) and history(wh, schema, "members") == expected


@pytest.mark.klaviyo_emulator(**ACCOUNT, app_clock=FakeClock())
async def test_every_list_in_one_table_and_a_return_between_runs(klaviyo_emulator, warehouse):
    """Without list_id every list is read; a profile that left and came back between two runs
    gets its old row closed at the new join and a new row."""
    wh, schema = warehouse
    emu = klaviyo_emulator
    lists = [r.id for r in emu.emulator.account.records["list"]]
    await run_import(config(emu.base_url), wh, schema, "all_members", now=at(emu.emulator.now()))
    counts = {}
    for r in wh.table_arrow(schema, "all_members").to_pylist():
        counts[r["list_id"]] = counts.get(r["list_id"], 0) + 1
    assert counts == {lid: len(members(emu, lid)) for lid in lists}

    someone = sorted(members(emu, lists[1]))[0]
    emu.emulator.clock.advance(HOUR)
    await change_list(emu, lists[1], remove=[someone])
    emu.emulator.clock.advance(HOUR)
    await change_list(emu, lists[1], add=[someone])
    rejoined = emu.emulator.now()
    second = await run_import(config(emu.base_url), wh, schema, "all_members", now=at(emu.emulator.now()))
    assert (second.joined, second.left) == (1, 1)
    mine = [r for r in history(wh, schema, "all_members") if r[0] == lists[1] and r[1] == someone]
    assert [(r[3], r[2]) for r in mine][-1] == (None, at(rejoined))
    assert mine[0][3] == at(rejoined)  # the old row ends when the new one begins


@pytest.mark.klaviyo_emulator(**ACCOUNT, app_clock=FakeClock())
async def test_segment_history(klaviyo_emulator, tmp_path):
    emu = klaviyo_emulator
    seg = emu.emulator.account.records["segment"][0].id
    with open_warehouse(tmp_path / "wh.duckdb") as wh:
        cfg = config(emu.base_url, "segment_memberships", segment_id=seg)
        await run_import(cfg, wh, "klaviyo", "seg", now=at(emu.emulator.now()))
        before = members(emu, seg, segment=True)
        everyone = emu.emulator.account.profiles.ids_for(range(ACCOUNT["profiles"]))
        newcomer = next(p for p in everyone if p not in before)
        gone = sorted(before)[-1]
        emu.emulator.clock.advance(HOUR)
        assert emu.emulator.reevaluate_segment(seg, add=[newcomer], remove=[gone]) == (1, 1)
        emu.emulator.clock.advance(HOUR)
        second = await run_import(cfg, wh, "klaviyo", "seg", now=at(emu.emulator.now()))
        assert (second.joined, second.left) == (1, 1)
        rows = {r["profile_id"]: r for r in wh.table_arrow("klaviyo", "seg").to_pylist()}
        assert rows[gone]["left_at"] == at(emu.emulator.now()) and rows[newcomer]["left_at"] is None
        assert set(r["profile_id"] for r in wh.table_arrow("klaviyo", "seg_current").to_pylist()) == set(
            members(emu, seg, segment=True)
        )


def test_membership_config_errors():
    with pytest.raises(ConfigError, match="out.mode: list_memberships keeps a history"):
        config("http://127.0.0.1:1", mode="replace")
    with pytest.raises(ConfigError, match="takes no incremental_field"):
        config("http://127.0.0.1:1", incremental_field="updated")
    with pytest.raises(ConfigError, match="did you mean 'list_memberships'"):
        config("http://127.0.0.1:1", source="list_membership")
