"""``klaviyo-bridge workflow run FILE.dig``: run the seed's workflow examples as written."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from ..errors import ConfigError
from ..exports.settings import KEY_POINTER
from ..home import Home
from ..schedule.cron import CronSchedule
from ..schedule.naming import check_schedule_name as _check_name
from ..schedule.workflow_push import snapshot
from ..store.factory import open_warehouse
from ..store.state import ScheduleRecord
from ..workflows.dig import run_workflow
from .auth_cmd import credential_store
from .schedule_common import _console, run_pushed

WAREHOUSE_HELP = "Warehouse: a DuckDB path, duckdb:///path or postgresql://... (default: HOME/warehouse.duckdb)."


@click.group("workflow")
def workflow_command() -> None:
    """Run workflow (.dig) files: td> query tasks that export their results to Klaviyo."""


@workflow_command.command("run")
@click.argument("dig_file", metavar="DIG_FILE|NAME")
@click.option("--warehouse", "warehouse_url", help=WAREHOUSE_HELP)
@click.option(
    "-p",
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="Set a variable before _export (dotted keys: td.database=klaviyo_db).",
)
@click.option("--dry-run", is_flag=True, help="Validate every task and show counts and sample payloads; send nothing.")
@click.pass_obj
def run_command(home: Home, dig_file: str, warehouse_url: str | None, params: tuple[str, ...], dry_run: bool) -> None:
    """Run DIG_FILE's +tasks in order, once (td>: query.sql, database, result_connection, result_settings).

    A schedule: block is ignored here; `workflow push` registers the file to run on it. NAME (a
    workflow saved with `workflow push`) runs its stored copy now, recorded in its history.
    """
    for item in params:  # before anything else: a key given here is refused, not echoed
        key, sep, value = item.partition("=")
        leaf_name = key.rsplit(".", 1)[-1].strip().lower()
        if leaf_name in ("api_token", "api_key") or value.strip().startswith("pk_") or item.strip().startswith("pk_"):
            raise ConfigError(
                f"--param {key if sep else '(value)'}: an API key may not be given on the command line "
                f"(any user on this machine can read it); {KEY_POINTER}",
                key="param",
            )
    if not Path(dig_file).is_file():
        if Path(dig_file).suffix == ".dig" or "/" in dig_file:
            raise ConfigError(f"no such file: {dig_file}", key="dig_file")
        if params or dry_run:
            raise ConfigError("--param and --dry-run work with a .dig file, not a pushed workflow", key="dig_file")
        run_pushed(home, warehouse_url, dig_file)
        return
    variables: dict[str, Any] = {}
    for item in params:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--param")
        node = variables
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    warn = lambda text: click.echo(f"warning: {text}", err=True)  # noqa: E731
    with open_warehouse(warehouse_url or home.ensure().warehouse, lock_timeout=30) as wh:
        run_workflow(
            dig_file, wh, params=variables, credentials_path=home.credentials, dry_run=dry_run, warn=warn, echo=click.echo
        )


@workflow_command.command("push")
@click.argument("dig_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--name", help="Schedule name (default: the file name without .dig).")
@click.option("--warehouse", "warehouse_url", help=WAREHOUSE_HELP)
@click.pass_obj
def push_command(home: Home, dig_file: str, name: str | None, warehouse_url: str | None) -> None:
    """Register DIG_FILE (and the SQL files its td> tasks name) to run on its schedule: block.

    \b
    timezone: Asia/Tokyo
    schedule:
      daily>: 07:00:00        # or cron>: "0 1 * * *", hourly>: 30:00, weekly>: Sun,09:00:00, monthly>: 1,09:00:00

    The files are stored by content: edit them, then push again to change what runs. Pushing
    again replaces the stored copy (and re-enables a disabled workflow). An inline api_token in
    result_settings is moved into the saved authentications as workflow:NAME. A file without a
    schedule: block is stored too and runs only by hand. `klaviyo-bridge scheduler` runs it.
    """
    name = _check_name(name or Path(dig_file).stem)
    credentials = credential_store(home)
    warn = lambda text: click.echo(f"warning: {text}", err=True)  # noqa: E731
    pushed = snapshot(dig_file, name, credentials, warn=warn)
    cron, tz, delay = (
        (pushed.schedule.cron, pushed.schedule.timezone, pushed.schedule.delay_seconds) if pushed.schedule else ("", "UTC", 0)
    )
    now = datetime.now(timezone.utc)
    with open_warehouse(warehouse_url or home.ensure().warehouse, lock_timeout=30) as wh:
        existing = wh.state.schedule(name)
        if existing is not None and existing.kind != "workflow":
            raise ConfigError(
                f"schedule {name!r} exists and is an {existing.kind} schedule; give the workflow another --name", key="name"
            )
        for auth, key in pushed.keys.items():
            credentials.save(auth, key, replace=True)
        if existing is None:
            wh.state.create_schedule(
                ScheduleRecord(name, "workflow", cron, tz, delay, None, None, pushed.config, last_scheduled_for=now)
            )
            verb = "pushed"
        else:
            changes: dict[str, Any] = {"config": pushed.config}
            if (cron, tz, delay) != (existing.cron, existing.timezone, existing.delay_seconds) or not existing.enabled:
                changes.update(
                    cron=cron,
                    timezone=tz,
                    delay_seconds=delay,
                    last_scheduled_for=now,
                    enabled=True,
                    disabled_reason=None,
                    disabled_at=None,
                    consecutive_failures=0,
                )
            wh.state.update_schedule(name, **changes)
            verb = "pushed again (stored copy replaced)"
        new_record = ScheduleRecord(name, "workflow", cron, tz, delay, None, None, pushed.config)
        for stale in set(_workflow_auths(existing)) - set(_workflow_auths(new_record)):
            credentials.delete(stale, missing_ok=True)
    schedule = CronSchedule.parse(cron, tz, delay)
    run = schedule.next_run(now)
    files = pushed.config["workflow"]["files"]
    click.echo(
        f"Workflow {name!r} {verb} with {len(files)} SQL file(s): "
        + (
            f"{schedule.describe()} ({pushed.schedule.source}); next run: {run.isoformat() if run else 'none'}"
            if pushed.schedule
            else "no schedule: block, so it runs only by hand"
        )
    )
    for auth in pushed.keys:
        click.echo(f"An inline api_token was saved as authentication {auth!r}.")
    for task in pushed.dropped:
        click.echo(f"{task}: its saved result_connection supplies the key; the inline api_token was not stored.")


def _workflow_auths(record: ScheduleRecord | None) -> list[str]:
    """Authentications a pushed workflow's tasks name that push created (workflow:NAME...)."""
    if record is None:
        return []
    out: list[str] = []
    name = record.name

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            value = node.get("result_connection")
            if isinstance(value, str) and value.startswith(f"workflow:{name}"):
                out.append(value)
            for v in node.values():
                walk(v)

    walk((record.config.get("workflow") or {}).get("document"))
    return out


@workflow_command.command("list")
@click.option("--warehouse", "warehouse_url", help=WAREHOUSE_HELP)
@click.pass_obj
def list_command(home: Home, warehouse_url: str | None) -> None:
    """Pushed workflows: Name, Cron, Timezone, Delay, File, Pushed at, Status."""
    with open_warehouse(warehouse_url or home.ensure().warehouse, lock_timeout=30) as wh:
        records = wh.state.schedules("workflow")
    out = Table()
    for column in ("Name", "Cron", "Timezone", "Delay", "File", "Pushed at", "Status"):
        out.add_column(column, overflow="fold")
    for r in records:
        stored = r.config.get("workflow") or {}
        out.add_row(
            r.name,
            r.cron,
            r.timezone,
            str(r.delay_seconds),
            str(stored.get("source", "")),
            str(stored.get("pushed_at", "")),
            r.status,
        )
    _console().print(out)


@workflow_command.command("delete")
@click.argument("name")
@click.option("--warehouse", "warehouse_url", help=WAREHOUSE_HELP)
@click.pass_obj
def delete_command(home: Home, name: str, warehouse_url: str | None) -> None:
    """Delete pushed workflow NAME (its job history stays; the workflow:NAME keys push saved go)."""
    with open_warehouse(warehouse_url or home.ensure().warehouse, lock_timeout=30) as wh:
        record = wh.state.schedule(name)
        if record is None or record.kind != "workflow":
            raise ConfigError(f"no pushed workflow named {name!r} (see workflow list)", key="name")
        wh.state.delete_schedule(name)
    credentials = credential_store(home)
    for auth in set(_workflow_auths(record)):
        credentials.delete(auth, missing_ok=True)
    click.echo(f"Deleted workflow {name!r}")


COMMANDS = (workflow_command,)
