"""``klaviyo-bridge demo``: the whole product in one command, against a local emulator."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from ..api.client import AccountLimits, KlaviyoClient
from ..api.query import Query
from ..api.settings import ClientSettings
from ..config import parse_import_config
from ..exports.job import export_query, report_lines
from ..exports.settings import parse_export_settings
from ..home import Home
from ..imports.runner import run_import
from ..store.factory import open_warehouse


@click.command("demo")
@click.option("--profiles", default=2000, show_default=True, type=click.IntRange(1), help="Profiles in the account.")
@click.option("--events", default=20000, show_default=True, type=click.IntRange(0), help="Events in the account.")
@click.option("--lists", default=5, show_default=True, type=click.IntRange(1), help="Lists in the account.")
@click.option("--seed", default=1, show_default=True, type=int, help="Emulator seed.")
@click.pass_obj
def demo_command(home: Home, profiles: int, events: int, lists: int, seed: int) -> None:
    """Start an emulator on 127.0.0.1, read its lists and profiles through the client,
    import profiles and events into the DuckDB warehouse, query them, and export a
    query result back to a Klaviyo list (emulator -> import -> DuckDB -> export back).

    Nothing leaves this machine. Rate limits are on, as in Klaviyo, so the
    figures printed are what the client achieves under the published limits.
    The warehouse is HOME/warehouse.duckdb (tables demo.profiles, demo.events).
    """
    # Deferred (tests/test_layers.py ALLOWED): the emulator (~0.5 s to import) loads for demo only.
    from klaviyo_emulator.server import running_emulator
    from klaviyo_emulator.settings import EmulatorSettings

    console = Console(width=None if sys.stdout.isatty() else 140)
    emu = EmulatorSettings(seed=seed, profiles=profiles, events=events, lists=lists)
    started = time.perf_counter()
    # One rate budget for the whole demo, as the emulator (and Klaviyo) count per account: each
    # step's client starts where the previous one left off, so the demo stays inside the limits.
    limits = AccountLimits()
    with running_emulator(emu) as base_url:
        console.print(
            f"[bold]1.[/] Emulator up at {base_url} in {time.perf_counter() - started:.1f}s "
            f"({profiles} profiles, {events} events, {lists} lists)"
        )
        settings = ClientSettings(api_key=emu.api_key, base_url=base_url)
        asyncio.run(_read_account(console, settings, limits))
        _import_into_duckdb(console, home, emu.api_key, base_url, limits)
        _export_back(console, home, emu.api_key, base_url, limits)


def _export_back(console: Console, home: Home, api_key: str, base_url: str, limits: AccountLimits) -> None:
    """Query the warehouse and add the result to a Klaviyo list (created by name), as a seed export does."""

    settings = parse_export_settings(
        {
            "type": "klaviyo",
            "api_token": api_key,
            "base_url": base_url,
            "operation": "add",
            "list_identify_type": "name",
            "list_value": "Demo: most engaged",
            "wait_for_completion": True,
            "skip_invalid_records": True,
        }
    )
    sql = (
        "SELECT p.email, p.first_name, p.last_name, count(*) AS opens FROM demo.events e "
        "JOIN demo.profiles p ON p.id = e.profile_id WHERE e.metric_name = 'Opened Email' "
        "GROUP BY ALL ORDER BY opens DESC, p.email LIMIT 250"
    )
    with open_warehouse(home.ensure().warehouse, lock_timeout=30) as wh:
        console.print("[bold]6.[/] Export back: the 250 profiles with most opens -> list 'Demo: most engaged'")
        console.print(f"   {sql}")
        result = export_query(wh, sql, settings, limits=limits)
        for line in report_lines(result, settings):
            console.print("   " + line)
    if result.list_id:
        members = asyncio.run(_count_members(ClientSettings(api_key=api_key, base_url=base_url), result.list_id, limits))
        console.print(f"[bold]7.[/] Read back through the API: list {result.list_id} now has {members} members.")


async def _count_members(settings: ClientSettings, list_id: str, limits: AccountLimits) -> int:
    async with KlaviyoClient(settings, limits=limits) as client:
        return sum(
            [
                len(page.data)
                async for page in client.pages("get_profiles_for_list", path_params={"id": list_id}, query=Query(page_size=100))
            ]
        )


def _import_into_duckdb(console: Console, home: Home, api_key: str, base_url: str, limits: AccountLimits) -> None:
    path = home.ensure().warehouse
    with open_warehouse(path, lock_timeout=30) as wh:
        console.print(f"[bold]5.[/] Import into DuckDB ({path}), merge on id:")
        for source in ("profiles", "events"):
            config = parse_import_config(
                {
                    "in": {"type": "klaviyo", "data_source": source, "api_token": api_key, "base_url": base_url},
                    "out": {"mode": "merge"},
                }
            )
            result = asyncio.run(run_import(config, wh, "demo", source, limits=limits))
            console.print("   " + result.summary())
        top = next(
            wh.query_arrow(
                "SELECT metric_name, count(*) AS events, count(DISTINCT profile_id) AS profiles "
                "FROM demo.events GROUP BY metric_name ORDER BY events DESC, metric_name LIMIT 8"
            )
        )
        table = Table(title="SQL on the warehouse: top metrics in demo.events")
        for name in top.schema.names:
            table.add_column(name)
        for row in top.to_pylist():
            table.add_row(*(str(v) for v in row.values()))
        console.print(table)


async def _read_account(console: Console, settings: ClientSettings, limits: AccountLimits) -> None:
    async with KlaviyoClient(settings, limits=limits) as client:
        t0 = time.perf_counter()
        lists = [item async for item in client.records("get_lists", query=Query(sort="name"))]

        async def members(list_id: str) -> int:
            n = 0
            async for page in client.pages("get_profiles_for_list", path_params={"id": list_id}, query=Query(page_size=100)):
                n += len(page.data)
            return n

        counts = await asyncio.gather(*(members(item["id"]) for item in lists))
        table = Table(title=f"Lists ({len(lists)}), members read concurrently in {time.perf_counter() - t0:.2f}s")
        for col in ("id", "name", "created", "members"):
            table.add_column(col)
        for item, count in zip(lists, counts):
            attrs = item["attributes"]
            table.add_row(item["id"], attrs.get("name") or "", (attrs.get("created") or "")[:19], str(count))
        console.print("[bold]2.[/] Lists and their members:")
        console.print(table)

        t1 = time.perf_counter()
        sample: list[dict[str, Any]] = []
        total = 0
        async for page in client.pages("get_profiles", query=Query(page_size=100, sort="created")):
            total += len(page.data)
            if len(sample) < 5:
                sample.extend(page.data[: 5 - len(sample)])
        elapsed = time.perf_counter() - t1
        table = Table(title=f"Profiles: {total} read in {elapsed:.2f}s ({total / max(elapsed, 1e-9):,.0f}/s)")
        for col in ("id", "email", "phone_number", "first_name", "created"):
            table.add_column(col)
        for p in sample:
            a = p["attributes"]
            table.add_row(
                p["id"],
                a.get("email") or "",
                a.get("phone_number") or "",
                a.get("first_name") or "",
                (a.get("created") or "")[:19],
            )
        console.print("[bold]3.[/] Profiles (first 5 by created):")
        console.print(table)
        s = client.stats
        console.print(
            f"[bold]4.[/] {s.requests} requests, {s.retries} retries, {s.throttled} throttled (429), "
            f"{s.rate_wait_seconds:.1f}s waited for rate-limit slots."
        )


COMMANDS = (demo_command,)
