"""Export schedules: ``sched:create/list/show/history/update/delete/run``. Only parses and prints."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

import click

from ..errors import ConfigError, JobFailed
from ..home import Home
from ..secrets import CredentialStore
from ..store.state import ScheduleRecord
from ..store.warehouse import Warehouse
from .auth_cmd import credential_store
from .hints import next_step

log = logging.getLogger("klaviyo_bridge.scheduler")
from ..documents import read_text_bounded
from ..exports.settings import load_result_settings, parse_settings_text, read_sql
from ..schedule.naming import check_schedule_name as _check_name
from ..schedule.naming import checked_schedule as _check_schedule
from . import schedule_common as common
from .schedule_common import run_pushed, schedule_verb

# --- sched:* (export schedules) -----------------------------------------------------------------
QUERY_WIDTH = 60


def _get_export(wh: Warehouse, name: str) -> ScheduleRecord:
    record = wh.state.schedule(name)
    if record is None or record.kind != "export":
        raise ConfigError(f"no export schedule named {name!r} (see sched:list)", key="name")
    return record


def _short(sql: str, width: int = QUERY_WIDTH) -> str:
    one = " ".join(sql.split())
    return one if len(one) <= width else one[: width - 1] + "…"


def _load_result_settings(
    name: str, spec: str, connection: str | None, credentials: CredentialStore
) -> tuple[dict[str, Any], str | None]:
    """Read and validate --result-settings (file or inline JSON); return the mapping to store, with
    an inline key replaced by ``result_connection: sched:NAME``, and the key to save under that name."""
    if spec.lstrip().startswith("{"):
        data, warnings = parse_settings_text(spec, "--result-settings", command_line=True)
    else:
        try:
            text = read_text_bounded(spec, "result settings")
        except OSError as exc:
            raise ConfigError(
                f"cannot read result settings {spec}: {exc.strerror} "
                '(give a YAML file or inline JSON like \'{"operation": "add", ...}\')'
            ) from None
        data, warnings = parse_settings_text(text, spec)
    for w in warnings:
        click.echo(f"warning: {w}", err=True)
    if connection:
        data.pop("connection", None)
        data["result_connection"] = connection
    load_result_settings(dict(data), credentials_path=credentials.path)  # every problem, before saving anything
    saved = data.get("result_connection") or data.get("connection")
    tokens = [k for k in ("api_token", "api_key") if data.get(k) not in (None, "")]
    key = None
    if isinstance(saved, str) and saved in credentials:
        for k in ("api_token", "api_key"):
            data.pop(k, None)  # the saved authentication supplies the key at run time anyway
    elif tokens:
        key = str(data[tokens[0]]).strip()
        for k in ("api_token", "api_key", "connection"):
            data.pop(k, None)
        data["result_connection"] = f"sched:{name}"
    return data, key


def _read_query(query: str | None, query_file: str | None) -> str:
    sql = read_sql(query, query_file).strip()
    if not sql:
        raise ConfigError("the query is empty", key="query")
    return sql


@schedule_verb(
    "sched:create",
    click.argument("cron"),
    click.argument("query", required=False),
    click.option(
        "-f",
        "--file",
        "query_file",
        type=click.Path(exists=True, dir_okay=False),
        help="Read the SQL from a file (stored at create time).",
    ),
    click.option("-d", "--database", required=True, help="Database (schema) the query's unqualified table names refer to."),
    click.option(
        "--result-settings",
        "result_settings",
        required=True,
        help="Export settings: a YAML/JSON file with the seed's keys, or inline JSON (which may not carry the key).",
    ),
    click.option("--result-connection", "connection", help="Saved authentication to use (auth:create NAME)."),
    common.timing_options,
)
def sched_create(
    home: Home,
    name: str,
    cron: str,
    query: str | None,
    query_file: str | None,
    database: str,
    result_settings: str,
    connection: str | None,
    tz: str,
    delay: int,
    warehouse_url: str | None,
) -> None:
    """Save an export schedule: run QUERY (or -f FILE) on DATABASE at CRON times and export the result.

    \b
    klaviyo-bridge sched:create daily_export "0 7 * * *" -d klaviyo_db --result-settings export.yml \\
        "SELECT email, first_name FROM customers" --timezone Asia/Tokyo --delay 60

    CRON as for connector:create ("" = runs only by hand: sched:run). An inline api_token in the
    result settings is moved into the saved authentications as sched:NAME; no key is stored in
    the warehouse.
    """
    _check_name(name)
    schedule = _check_schedule(cron, tz, delay)
    sql = _read_query(query, query_file)
    credentials = credential_store(home)
    settings, key = _load_result_settings(name, result_settings, connection, credentials)
    now = datetime.now(timezone.utc)
    record = ScheduleRecord(
        name, "export", cron, tz, delay, database, None, {"query": sql, "result_settings": settings}, last_scheduled_for=now
    )
    common.save_new(home, warehouse_url, credentials, record, f"sched:{name}", key, "sched:update or sched:delete it")
    common.say_created(
        f"Export schedule {name!r}",
        schedule,
        now,
        "none (runs only by hand: sched:run)",
        key and f"The result settings' api_token was saved as authentication 'sched:{name}'.",
        "sched",
        name,
    )


@schedule_verb("sched:list", named=False)
def sched_list(home: Home, warehouse_url: str | None) -> None:
    """List export schedules: Name, Cron, Timezone, Delay, Database, Query (shortened), Status."""
    common.list_table(
        home,
        warehouse_url,
        "export",
        ("Name", "Cron", "Timezone", "Delay", "Database", "Query", "Status"),
        lambda r: (
            r.name,
            r.cron,
            r.timezone,
            str(r.delay_seconds),
            r.database or "",
            _short(str(r.config.get("query", ""))),
            r.status,
        ),
    )


@schedule_verb("sched:show")
def sched_show(home: Home, name: str, warehouse_url: str | None) -> None:
    """Show export schedule NAME: timing, query, result settings (keys redacted), next run."""
    with common._open(home, warehouse_url) as wh:
        r = _get_export(wh, name)
    rows = [
        ("Name", r.name),
        ("Cron", r.cron),
        ("Timezone", r.timezone),
        ("Delay", r.delay_seconds),
        ("Database", r.database),
        ("Status", r.status),
        ("Failures", r.consecutive_failures),
        ("Next run", common._next_run(r, datetime.now(timezone.utc)).replace("connector:run", "sched:run")),
        ("Last slot", common._fmt_time(r.last_scheduled_for)),
        ("Last job", r.last_run_id or ""),
    ]
    common.echo_rows(rows)
    click.echo("Query    :")
    click.echo("".join(f"  {line}\n" for line in str(r.config.get("query", "")).splitlines()), nl=False)
    click.echo("Result settings:")
    common.echo_yaml(r.config.get("result_settings") or {})


@schedule_verb("sched:history", common.limit_option)
def sched_history(home: Home, name: str, limit: int, warehouse_url: str | None) -> None:
    """Jobs of export schedule NAME, newest first (Records = rows accepted or submitted; job:show JOB_ID)."""
    common.history(home, warehouse_url, name, limit, _get_export)


@schedule_verb(
    "sched:update",
    common.update_timing_options,
    click.option("-d", "--database", help="New database."),
    click.option("--query", help="New SQL."),
    click.option("-f", "--file", "query_file", type=click.Path(exists=True, dir_okay=False), help="New SQL from a file."),
    click.option("--result-settings", "result_settings", help="New export settings (file or inline JSON)."),
    click.option("--result-connection", "connection", help="With --result-settings: saved authentication to use."),
    common.enable_options("sched:run"),
)
def sched_update(
    home: Home,
    name: str,
    cron: str | None,
    tz: str | None,
    delay: int | None,
    database: str | None,
    query: str | None,
    query_file: str | None,
    result_settings: str | None,
    connection: str | None,
    enable: bool,
    disable: bool,
    warehouse_url: str | None,
) -> None:
    """Change export schedule NAME. A new cron/time zone/delay, or --enable, counts slots from now on."""
    common.check_enable(enable, disable)
    if connection and not result_settings:
        raise ConfigError("--result-connection goes with --result-settings", key="result_connection")
    now = datetime.now(timezone.utc)
    credentials = credential_store(home)
    with common._open(home, warehouse_url) as wh:
        r = _get_export(wh, name)
        changes = common.common_changes(r, cron, tz, delay, database, enable, disable, now)
        config = dict(r.config)
        key = None
        if query is not None or query_file:
            config["query"] = _read_query(query, query_file)
        if result_settings:
            config["result_settings"], key = _load_result_settings(name, result_settings, connection, credentials)
        if config != r.config:
            changes["config"] = config
        if not changes and not key:
            raise ConfigError("nothing to update (see sched:update --help)")
        if key:
            # A new key alone (the settings otherwise unchanged) is an update too.
            credentials.save(f"sched:{name}", key, replace=True)
        if changes:
            r = wh.state.update_schedule(name, **changes)
    if key:
        click.echo(f"The result settings' api_token was saved as authentication 'sched:{name}'.")
    click.echo(
        f"Export schedule {name!r} updated ({r.status}); next run: "
        f"{common._next_run(r, now).replace('connector:run', 'sched:run')}"
    )


@schedule_verb("sched:delete")
def sched_delete(home: Home, name: str, warehouse_url: str | None) -> None:
    """Delete export schedule NAME (its job history stays; its sched:NAME authentication goes)."""
    common.delete_saved(home, warehouse_url, name, _get_export, f"sched:{name}")
    click.echo(f"Deleted export schedule {name!r}")


@schedule_verb("sched:run", click.argument("time", required=False))
def sched_run(home: Home, name: str, time: str | None, warehouse_url: str | None) -> None:
    """Run export schedule NAME now, as if it were TIME (ISO 8601; default: now; recorded with the job).

    NAME may also be a workflow saved with `workflow push` (as `workflow run NAME`).
    """
    with common._open(home, warehouse_url) as wh:
        record = wh.state.schedule(name)
    if record is not None and record.kind == "workflow":
        run_pushed(home, warehouse_url, name)
        return
    as_of = common.parse_as_of(time, "2024-06-01T07:00:00+09:00")
    result, job = common.run_now(home, warehouse_url, name, _get_export, lambda r: f": {r.database} -> Klaviyo", as_of)
    counts = ", ".join(f"{v} {k}" for k, v in (job.counts if job else {}).items() if isinstance(v, int))
    line = (
        f"job {result.run_id} {result.status}: {result.rows or 0} records exported"
        f"{f' ({counts})' if counts else ''} in {(result.ended_at - result.started_at).total_seconds():.1f}s"
    )
    if result.status != "success":
        raise JobFailed(f"{line}: {result.error}", run_id=result.run_id, error=result.error_detail)
    click.echo(line)
    next_step(f"its history: klaviyo-bridge sched:history {name}", f"this job: klaviyo-bridge job:show {result.run_id}")


COMMANDS = (sched_create, sched_list, sched_show, sched_history, sched_update, sched_delete, sched_run)
