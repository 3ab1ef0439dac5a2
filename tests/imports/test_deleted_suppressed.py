"""Deleted and suppressed profiles after an incremental import, against the emulator over HTTP.

Suppressions (Klaviyo's bulk suppress endpoint) bump a profile's ``updated``, so the incremental
run by ``updated`` sees them: ``suppressed`` / ``suppressed_at``. Deletions (the data-privacy
deletion endpoint) leave no record at all; ``detect_deleted: true`` sweeps the account's ids and
flags the rows of profiles that are gone: ``deleted`` / ``deleted_at``."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pytest

from klaviyo_bridge.api import query as q
from klaviyo_bridge.api.client import KlaviyoClient
from klaviyo_bridge.api.ratelimit import RateLimiter
from klaviyo_bridge.config import parse_import_config
from klaviyo_bridge.errors import ConfigError
from klaviyo_bridge.imports.runner import run_import
from klaviyo_bridge.store.factory import open_warehouse

from ..emulator.writes_helpers import FakeClock

ACCOUNT = dict(seed=61, profiles=300, events=0, lists=2, rate_limits=False)


def config(base_url, mode="merge", **extra):
    return parse_import_config(
        {
            "in": {
                "type": "klaviyo",
                "data_source": "profiles",
                "api_token": "pk_emulator_demo_key",
                "base_url": base_url,
                "incremental": True,
                **extra,
            },
            "out": {"mode": mode},
        }
    )


def at(seconds) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


@pytest.fixture(params=["duckdb", "postgres"])
def warehouse(request, tmp_path):
    if request.param == "duckdb":
        wh = open_warehouse(tmp_path / "wh.duckdb")
        yield wh, "klaviyo"
        wh.close()
        return
    wh = open_warehouse("postgresql://postgres@127.0.0.1:5432/test")
    schema = f"imp19_{uuid.uuid4().hex[:10]}"
    yield wh, schema
    with wh.transaction() as s:
        s.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    wh.close()


def client(base_url) -> KlaviyoClient:
    return KlaviyoClient(config(base_url).source.client_settings(), limiter=RateLimiter(enabled=False))


async def api_profiles(base_url) -> dict[str, dict]:
    async with client(base_url) as c:
        return {
            r["id"]: r
            async for r in c.records(
                "get_profiles", query=q.Query(page_size=100, additional_fields={"profile": ["subscriptions"]})
            )
        }


def suppression_of(record) -> tuple[bool, datetime | None]:
    entries = record["attributes"]["subscriptions"]["email"]["marketing"]["suppression"]
    first = min((datetime.fromisoformat(e["timestamp"]) for e in entries), default=None)
    return bool(entries), first


async def suppress(base_url, emails):
    async with client(base_url) as c:
        await c.request(
            "bulk_suppress_profiles",
            json={
                "data": {
                    "type": "profile-suppression-bulk-create-job",
                    "attributes": {"profiles": {"data": [{"type": "profile", "attributes": {"email": e}} for e in emails]}},
                }
            },
        )


async def delete(base_url, profile_id):
    async with client(base_url) as c:
        await c.request(
            "request_profile_deletion",
            json={
                "data": {
                    "type": "data-privacy-deletion-job",
                    "attributes": {"profile": {"data": {"type": "profile", "id": profile_id, "attributes": {}}}},
                }
            },
        )


@pytest.mark.klaviyo_emulator(**ACCOUNT, app_clock=FakeClock())
async def test_suppressed_and_deleted_profiles_after_an_incremental_run(klaviyo_emulator, warehouse):
    wh, schema = warehouse
    emu, base = klaviyo_emulator.emulator, klaviyo_emulator.base_url
    cfg = config(base, detect_deleted=True)
    first = await run_import(cfg, wh, schema, "profiles", now=at(emu.now()))
    api = await api_profiles(base)
    rows = {r["id"]: r for r in wh.table_arrow(schema, "profiles").to_pylist()}
    assert first.rows == len(rows) == len(api) and first.deleted == 0
    assert {i: (r["suppressed"], r["suppressed_at"]) for i, r in rows.items()} == {i: suppression_of(p) for i, p in api.items()}
    assert any(r["suppressed"] for r in rows.values()) and not any(r["deleted"] for r in rows.values())

    fresh = [i for i, p in api.items() if not suppression_of(p)[0]]
    to_suppress, to_delete = fresh[:3], fresh[3:5]
    emu.clock.advance(60)
    await suppress(base, [api[i]["attributes"]["email"] for i in to_suppress])
    for pid in to_delete:
        await delete(base, pid)
    emu.clock.advance(60)
    await api_profiles(base)  # the suppression job completes (applied when a request comes)
    applied_at = emu.now()
    emu.clock.advance(60)
    second_at = emu.now()
    second = await run_import(cfg, wh, schema, "profiles", now=at(second_at))
    assert second.deleted == 2 and second.rows == 3  # only the changed profiles were fetched
    rows = {r["id"]: r for r in wh.table_arrow(schema, "profiles").to_pylist()}
    for pid in to_suppress:
        assert rows[pid]["suppressed"] is True and rows[pid]["suppressed_at"] == at(applied_at)
    for pid in to_delete:
        assert rows[pid]["deleted"] is True and rows[pid]["deleted_at"] == at(second_at)
    assert sum(bool(r["deleted"]) for r in rows.values()) == 2

    emu.clock.advance(60)
    third = await run_import(cfg, wh, schema, "profiles", now=at(emu.now()))
    assert third.deleted == 0
    again = {r["id"]: r for r in wh.table_arrow(schema, "profiles").to_pylist()}
    assert all(again[p]["deleted_at"] == at(second_at) for p in to_delete)  # flagged once, time kept


@pytest.mark.klaviyo_emulator(**ACCOUNT, faults="500=0.2,429=0.1,seed=9")
async def test_a_failed_sweep_commits_nothing(klaviyo_emulator, tmp_path, monkeypatch):
    """With faults the run either completes (retries) or fails and writes nothing: the rows and
    the deleted flags land together, or neither does. The engine takes its ``sleep``: the
    retries' waits are recorded, not slept."""
    waits: list[float] = []

    async def fast_sleep(seconds: float) -> None:
        waits.append(seconds)

    base = klaviyo_emulator.base_url
    with open_warehouse(tmp_path / "w.duckdb") as wh:
        cfg = parse_import_config(
            {
                "in": {
                    "type": "klaviyo",
                    "data_source": "profiles",
                    "api_token": "pk_emulator_demo_key",
                    "base_url": base,
                    "incremental": True,
                    "detect_deleted": True,
                    "retry_limit": 7,
                },
                "out": {"mode": "merge"},
            }
        )
        result = await run_import(cfg, wh, "klaviyo", "p", now=at(klaviyo_emulator.emulator.now()), sleep=fast_sleep)
        table = wh.table_arrow("klaviyo", "p")
        assert result.deleted == 0 and table.num_rows == ACCOUNT["profiles"]
        assert result.retries > 0 and waits  # the faults were retried, after waits asked of fast_sleep
        assert set(table.column("deleted").to_pylist()) == {False}


def test_detect_deleted_config():
    with pytest.raises(ConfigError, match="detect_deleted marks the rows of deleted profiles, which needs out.mode: merge"):
        config("http://127.0.0.1:1", mode="append", detect_deleted=True)
    with pytest.raises(ConfigError, match="detect_deleted applies to data_source profiles, not lists"):
        parse_import_config(
            {
                "in": {
                    "type": "klaviyo",
                    "data_source": "lists",
                    "api_token": "pk_emulator_demo_key",
                    "base_url": "http://127.0.0.1:1",
                    "detect_deleted": True,
                },
                "out": {"mode": "merge"},
            }
        )
