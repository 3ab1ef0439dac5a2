"""An emulator app in-process, a DuckDB warehouse in tmp_path, and settings in the seed's keys."""

from __future__ import annotations

import asyncio

import httpx

from klaviyo_bridge.exports.runner import run_export
from klaviyo_bridge.exports.settings import parse_export_settings
from klaviyo_bridge.exports.source import read_query
from klaviyo_emulator.app import create_app
from klaviyo_emulator.settings import DEFAULT_API_KEY, EmulatorSettings

BASE = "http://emulator.test"


def make_app(monotonic=None, **overrides):
    """The emulator in process (``monotonic``: its clock for jobs and delays; default the real one)."""
    settings = dict(
        seed=7,
        profiles=200,
        events=10,
        lists=2,
        segments=1,
        campaigns=1,
        templates=1,
        flows=1,
        rate_limits=False,
        job_profiles_per_second=1e9,
    )
    settings.update(overrides)
    return create_app(EmulatorSettings(**settings), clock=monotonic)


def settings(**keys):
    data = {"type": "klaviyo", "api_token": DEFAULT_API_KEY, "base_url": BASE}
    data.update(keys)
    return parse_export_settings(data)


async def no_sleep(_seconds: float) -> None:
    await asyncio.sleep(0)


async def export(wh, sql_or_table, s, app, **kw):
    table = read_query(wh, sql_or_table, kw.pop("database", None)) if isinstance(sql_or_table, str) else sql_or_table
    kw.setdefault("sleep", no_sleep)
    return await run_export(wh, table, s, transport=httpx.ASGITransport(app=app), **kw)


def outcomes(wh, run_id):
    rows = wh.state.export_rows(run_id=run_id).sort_by("row_index")
    return rows.column("row_index").to_pylist(), rows.column("outcome").to_pylist(), rows.column("reason").to_pylist()
