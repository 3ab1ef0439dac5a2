"""Import commands in the seed's words: ``connector:preview``, ``connector:issue``, ``replicate``."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import datetime, timezone
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from .. import aio
from ..api.budget import budget_url
from ..api.client import AccountLimits
from ..api.settings import API_KEY_ENV, BASE_URL_ENV
from ..config import ImportConfig, load_yaml, parse_import_config, read_text_bounded
from ..errors import BridgeError, ConfigError
from ..home import Home
from ..imports.metrics import UnknownMetric
from ..imports.replicate import QLIK_TABLES, replicate_configs
from ..imports.runner import ImportResult, preview_rows, run_import
from ..secrets import CredentialStore, resolve_connection
from ..store.factory import open_warehouse
from ..store.warehouse import Warehouse
from .hints import next_step
from .progress import ImportProgress

#: Narrowest readable column of the preview table; with more columns than fit, rows print one column a line.
PREVIEW_MIN_COLUMN = 14
WAREHOUSE_HELP = "Warehouse: a DuckDB path, duckdb:///path or postgresql://... (default: HOME/warehouse.duckdb)."


def read_import_config(home: Home, path: str) -> ImportConfig:
    """A config file, with ``in: connection: NAME`` (a saved authentication) filled in, as
    ``connector:create`` reads it: every verb that reads a config takes a saved connection."""
    try:
        text = read_text_bounded(path, "config")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    data = load_yaml(text, path)
    return parse_import_config(resolve_connection(data, CredentialStore(home.credentials)), path)


def open_target(home: Home, url: str | None) -> Warehouse:
    return open_warehouse(url or home.ensure().warehouse, lock_timeout=30)


def run_one(
    config: ImportConfig,
    warehouse: Warehouse,
    database: str,
    table: str,
    job: str | None = None,
    limits: AccountLimits | None = None,
) -> ImportResult:
    with ImportProgress(f"{config.source.data_source} -> {database}.{table}") as progress:
        return aio.run(run_import(config, warehouse, database, table, job=job, on_batch=progress, limits=limits))


@click.command("connector:preview")
@click.argument("config_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--rows", default=10, show_default=True, type=click.IntRange(1, 1000), help="Rows to show.")
@click.pass_obj
def preview_command(home: Home, config_file: str, rows: int) -> None:
    """Show the first rows CONFIG_FILE would import, with name:type headers. Writes nothing.

    in.start_time / in.end_time bound the rows shown, as they bound the import.
    """
    config = read_import_config(home, config_file)
    table = aio.run(preview_rows(config, rows))
    console = Console(width=None if sys.stdout.isatty() else 200)
    headers = [f"{field.name}:{_type_name(field.type)}" for field in table.schema]
    if len(headers) * PREVIEW_MIN_COLUMN > console.width:
        # Too many columns to fold into a readable table: one "name:type  value" line per column.
        width = max(map(len, headers), default=0)
        for number, row in enumerate(table.to_pylist(), start=1):
            click.echo(f"--- row {number}")
            for header, value in zip(headers, row.values()):
                click.echo(f"{header:<{width}}  {'' if value is None else value}")
        if not table.num_rows:
            click.echo("  ".join(headers))
    else:
        out = Table(show_lines=False)
        for header in headers:
            out.add_column(header, overflow="fold")
        for row in table.to_pylist():
            out.add_row(*("" if v is None else str(v) for v in row.values()))
        console.print(out)
    click.echo(f"({table.num_rows} row{'s' if table.num_rows != 1 else ''}, {len(headers)} columns)", err=True)
    next_step(f"import it: klaviyo-bridge connector:issue {config_file} -d DATABASE -t TABLE")


def _type_name(arrow_type: object) -> str:
    text = str(arrow_type)
    if text.startswith("timestamp"):
        return "timestamp"
    if text == "extension<arrow.json>":
        return "json"
    return {"int64": "long", "double": "double", "bool": "boolean"}.get(text, "string")


@click.command("connector:issue")
@click.argument("config_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--database", "-d", required=True, help="Target database (a schema in the warehouse).")
@click.option("--table", "-t", required=True, help="Target table.")
@click.option("--warehouse", "warehouse_url", help=WAREHOUSE_HELP)
@click.pass_obj
def issue_command(home: Home, config_file: str, database: str, table: str, warehouse_url: str | None) -> None:
    """Run the import in CONFIG_FILE once, now, into DATABASE.TABLE, and print a summary.

    Incremental configs resume where the last successful run of the same
    database.table ended; the cursor is saved with the rows.
    """
    config = read_import_config(home, config_file)
    # one rate budget per account in this process; shared with other processes through Redis or
    # the PostgreSQL state (api/budget.py)
    with open_target(home, warehouse_url) as wh:
        limits = AccountLimits.at(budget_url(warehouse_url))  # fails here when the budget is unreachable
        job = f"{database}.{table}"
        before = _last_run_id(wh, job)
        try:
            result = run_one(config, wh, database, table, limits=limits)
        except KeyboardInterrupt:
            _say_what_was_committed(wh, job, before)
            raise
    click.echo(result.summary())
    where = f" --warehouse {warehouse_url}" if warehouse_url else ""
    next_step(
        f"look at it: klaviyo-bridge tables{where} -d {database}",
        f'klaviyo-bridge sql{where} "SELECT * FROM {database}.{table} LIMIT 10"',
    )


def _last_run_id(wh: Warehouse, job: str) -> str | None:
    runs = wh.state.runs(job, limit=1)
    return runs[0].run_id if runs else None


def _say_what_was_committed(wh: Warehouse, job: str, before: str | None) -> None:
    """After Ctrl-C: the run's record says what was and was not written; show it."""
    try:
        runs = wh.state.runs(job, limit=1)
    except BridgeError:
        return
    if not runs or runs[0].run_id == before:
        click.echo(f"{job}: stopped before the import began: nothing was committed", err=True)
        return
    run = runs[0]
    click.echo(
        f"{job}: job {run.run_id} {run.status}: {run.rows_read or 0} records fetched, "
        f"{run.rows_written or 0} written. {run.error or ''}",
        err=True,
    )


@click.command("replicate")
@click.option("--database", "-d", required=True, help="Target database (a schema in the warehouse).")
@click.option("--start-date", required=True, help="First day to sync on the first run (YYYY-MM-DD, UTC).")
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False),
    help="YAML with the connection settings under in: (api_token, base_url, ...). "
    "Default: KLAVIYO_API_KEY and KLAVIYO_BASE_URL from the environment.",
)
@click.option("--tables", help=f"Comma-separated subset of: {', '.join(QLIK_TABLES)}.")
@click.option(
    "--metrics",
    "metrics",
    help="Only the per-metric tables of these metrics, comma-separated "
    '(e.g. "Opened Email,Clicked Email"; "Name (Integration)" picks one of two same-named metrics); '
    "also in.metrics of --config.",
)
@click.option("--warehouse", "warehouse_url", help=WAREHOUSE_HELP)
@click.pass_obj
def replicate_command(
    home: Home,
    database: str,
    start_date: str,
    config_file: str | None,
    tables: str | None,
    warehouse_url: str | None,
    metrics: str | None = None,
) -> None:
    """Sync every Qlik-style table (one per event metric, plus campaigns, lists and
    global exclusions) incrementally, merging on the primary key."""
    try:
        start = datetime.fromisoformat(start_date).replace(tzinfo=timezone.utc)
    except ValueError:
        raise ConfigError(f"--start-date must be YYYY-MM-DD, got {start_date!r}", key="start_date") from None
    connection = _connection_settings(home, config_file)
    chosen = [t.strip() for t in tables.split(",")] if tables else list(QLIK_TABLES)
    if metrics:
        connection["metrics"] = [m.strip() for m in metrics.split(",") if m.strip()]
    configs = replicate_configs(connection, start, chosen)
    # one rate budget per tier for all the tables: Klaviyo counts per account, not per import
    with open_target(home, warehouse_url) as wh, ImportProgress(f"replicate -> {database}") as progress:
        limits = AccountLimits.at(budget_url(warehouse_url))  # one budget for every stream of the account
        done, total, skipped, failed = aio.run(_replicate(configs, wh, database, progress, limits))
    tail = "".join(
        f"; {label} {len(names)}: {', '.join(names)}" for label, names in (("skipped", skipped), ("failed", failed)) if names
    )
    click.echo(f"replicated {done} tables, {total} rows{tail}")
    if failed:
        raise click.exceptions.Exit(1)


#: Tables replicated at once. Their requests share one budget per rate tier (one account), so
#: together they run at the account's limits instead of one table's round trips: 21 tables one
#: after the other took 10-16x the rate-limit bound (benchmarks/replicate_tables.py).
REPLICATE_AT_ONCE = 4


async def _replicate(
    configs: dict[str, ImportConfig], wh: Warehouse, database: str, progress: ImportProgress, limits: AccountLimits
) -> tuple[int, int, list[str], list[str]]:
    """Import every table, ``REPLICATE_AT_ONCE`` at a time; (tables done, rows, skipped, failed)."""
    slots = asyncio.Semaphore(REPLICATE_AT_ONCE)
    done, total = 0, 0
    skipped: list[str] = []
    failed: list[str] = []

    def counted(rows: int, pages: int = 0, windows: tuple[int, int] | None = None) -> None:
        progress(rows)  # the tables' rows together; pages and windows are each table's own

    async def one(name: str, config: ImportConfig) -> None:
        nonlocal done, total
        async with slots:
            try:
                result = await run_import(
                    config, wh, database, name, job=f"replicate:{database}.{name}", on_batch=counted, limits=limits
                )
            except UnknownMetric:
                # An account that never sent SMS has no "Received SMS" metric: nothing to copy.
                skipped.append(name)
                click.echo(f"{name}: skipped, the account has no {QLIK_TABLES[name]!r} metric")
                return
            except BridgeError as exc:
                # One table's failure (its cursor stays put) must not cost the others their sync.
                failed.append(name)
                click.echo(f"{name}: failed, {exc}", err=True)
                return
        done += 1
        total += result.rows
        click.echo(result.summary())

    await asyncio.gather(*(one(name, config) for name, config in configs.items()))
    order = list(configs)
    return done, total, sorted(skipped, key=order.index), sorted(failed, key=order.index)


def _connection_settings(home: Home, config_file: str | None) -> dict[str, Any]:

    if config_file:
        try:
            text = read_text_bounded(config_file, "config")
        except OSError as exc:
            raise ConfigError(f"cannot read {config_file}: {exc.strerror}") from None
        data = load_yaml(text, config_file)
        data = resolve_connection(data, CredentialStore(home.credentials))
        return dict(data.get("in") or {})
    key = os.environ.get(API_KEY_ENV)
    if not key:
        raise ConfigError(f"give --config with in: api_token, or set {API_KEY_ENV}")
    out = {"api_token": key}
    if os.environ.get(BASE_URL_ENV):
        out["base_url"] = os.environ[BASE_URL_ENV]
    return out


COMMANDS = (preview_command, issue_command, replicate_command)
