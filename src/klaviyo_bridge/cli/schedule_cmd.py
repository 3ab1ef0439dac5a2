"""Import schedules in the seed's words: ``connector:create/list/show/history/update/delete/run``,
``cron:next``. Only parses and prints; job and export-schedule verbs live in jobs_cmd/sched_cmd."""

from __future__ import annotations

import logging
from datetime import datetime, timezone

import click

from ..config import parse_time
from ..errors import ConfigError, JobFailed, ScheduleError
from ..home import Home
from ..schedule.cron import CronSchedule, validate
from ..store.state import ScheduleRecord
from .auth_cmd import credential_store
from .hints import next_step

log = logging.getLogger("klaviyo_bridge.scheduler")
from ..schedule.naming import check_schedule_name as _check_name
from ..schedule.naming import checked_schedule as _check_schedule
from .schedule_common import (
    _fmt_time,
    _get_schedule,
    _load_config,
    _next_run,
    _open,
    check_enable,
    common_changes,
    delete_saved,
    echo_rows,
    echo_yaml,
    enable_options,
    history,
    limit_option,
    list_table,
    parse_as_of,
    run_now,
    save_new,
    say_created,
    schedule_verb,
    timing_options,
    update_timing_options,
)


# --- connector:* -------------------------------------------------------------------------
@schedule_verb(
    "connector:create",
    click.argument("cron"),
    click.argument("database"),
    click.argument("table"),
    click.argument("config_file", type=click.Path(exists=True, dir_okay=False)),
    timing_options,
)
def connector_create(
    home: Home, name: str, cron: str, database: str, table: str, config_file: str, tz: str, delay: int, warehouse_url: str | None
) -> None:
    """Save an import schedule: run CONFIG_FILE into DATABASE.TABLE at CRON times.

    CRON is five fields ("10 0 * * *"), @hourly, @daily, @monthly, or "" for a
    schedule that only runs by hand (connector:run). An inline api_token in the
    config is moved into the saved authentications as connector:NAME; the stored
    config references it, so no key is stored in the warehouse.
    """
    _check_name(name)
    schedule = _check_schedule(cron, tz, delay)
    credentials = credential_store(home)
    config, key = _load_config(name, config_file, credentials)
    now = datetime.now(timezone.utc)
    save_new(
        home,
        warehouse_url,
        credentials,
        ScheduleRecord(name, "import", cron, tz, delay, database, table, config, last_scheduled_for=now),
        f"connector:{name}",
        key,
        "connector:update or connector:delete it",
    )
    say_created(
        f"Schedule {name!r}",
        schedule,
        now,
        "none (runs only by hand)",
        key and f"The config's api_token was saved as authentication 'connector:{name}'.",
        "connector",
        name,
    )


@schedule_verb("connector:list", named=False)
def connector_list(home: Home, warehouse_url: str | None) -> None:
    """List import schedules: Name, Cron, Timezone, Delay, Database, Table, Status."""
    list_table(
        home,
        warehouse_url,
        "import",
        ("Name", "Cron", "Timezone", "Delay", "Database", "Table", "Status"),
        lambda r: (r.name, r.cron, r.timezone, str(r.delay_seconds), r.database or "", r.table or "", r.status),
    )


@schedule_verb("connector:show")
def connector_show(home: Home, name: str, warehouse_url: str | None) -> None:
    """Show the settings of schedule NAME (keys redacted) and its next run time."""
    with _open(home, warehouse_url) as wh:
        r = _get_schedule(wh, name)
    rows = [
        ("Name", r.name),
        ("Cron", r.cron),
        ("Timezone", r.timezone),
        ("Delay", r.delay_seconds),
        ("Database", r.database),
        ("Table", r.table),
        ("Status", r.status),
        ("Failures", r.consecutive_failures),
        ("Next run", _next_run(r, datetime.now(timezone.utc))),
        ("Last slot", _fmt_time(r.last_scheduled_for)),
        ("Last job", r.last_run_id or ""),
    ]
    echo_rows(rows)
    click.echo("Config   :")
    echo_yaml(r.config)


@schedule_verb("connector:history", limit_option)
def connector_history(home: Home, name: str, limit: int, warehouse_url: str | None) -> None:
    """Jobs of schedule NAME, newest first (details: job:show JOB_ID)."""
    history(home, warehouse_url, name, limit, _get_schedule)


@schedule_verb(
    "connector:update",
    update_timing_options,
    click.option("--database", help="New target database."),
    click.option("--table", help="New target table."),
    click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), help="New config file."),
    enable_options("connector:run"),
)
def connector_update(
    home: Home,
    name: str,
    cron: str | None,
    tz: str | None,
    delay: int | None,
    database: str | None,
    table: str | None,
    config_file: str | None,
    enable: bool,
    disable: bool,
    warehouse_url: str | None,
) -> None:
    """Change schedule NAME. A new cron/time zone/delay, or --enable, counts slots from now on."""
    check_enable(enable, disable)
    now = datetime.now(timezone.utc)
    credentials = credential_store(home)
    with _open(home, warehouse_url) as wh:
        r = _get_schedule(wh, name)
        changes = common_changes(r, cron, tz, delay, database, enable, disable, now)
        if table:
            changes["target_table"] = table
        key = None
        if config_file:
            changes["config"], key = _load_config(name, config_file, credentials)
        if not changes:
            raise ConfigError("nothing to update (see connector:update --help)")
        if key:
            credentials.save(f"connector:{name}", key, replace=True)
        r = wh.state.update_schedule(name, **changes)
    click.echo(f"Schedule {name!r} updated ({r.status}); next run: {_next_run(r, now)}")


@schedule_verb("connector:delete")
def connector_delete(home: Home, name: str, warehouse_url: str | None) -> None:
    """Delete schedule NAME (its job history stays; its connector:NAME authentication goes)."""
    delete_saved(home, warehouse_url, name, _get_schedule, f"connector:{name}")
    click.echo(f"Deleted schedule {name!r}")


@schedule_verb("connector:run", click.argument("time", required=False))
def connector_run(home: Home, name: str, time: str | None, warehouse_url: str | None) -> None:
    """Run schedule NAME now, as if it were TIME (ISO 8601; default: now).

    TIME is the import's "now": an incremental import reads up to it.
    """
    as_of = parse_as_of(time, "2024-06-01T00:10:00+09:00")
    result, _ = run_now(home, warehouse_url, name, _get_schedule, lambda r: f" -> {r.database}.{r.table}", as_of)
    line = (
        f"job {result.run_id} {result.status}: {result.rows or 0} records into {result.database}.{result.table}"
        f" in {(result.ended_at - result.started_at).total_seconds():.1f}s"
    )
    if result.status != "success":
        raise JobFailed(f"{line}: {result.error}", run_id=result.run_id, error=result.error_detail)
    click.echo(line)
    next_step(
        f"its history: klaviyo-bridge connector:history {name}",
        f'the rows: klaviyo-bridge sql "SELECT * FROM {result.database}.{result.table} LIMIT 10"',
    )


# --- cron:next -----------------------------------------------------------------------------
@click.command("cron:next")
@click.argument("expression")
@click.option("-t", "--timezone", "tz", default="UTC", show_default=True, help="IANA time zone.")
@click.option("--from", "start", help="Start after this ISO 8601 time (default: now).")
@click.option("--delay", default=0, type=click.IntRange(0), help="Delay in seconds added to each time.")
@click.option("-n", "count", default=5, show_default=True, type=click.IntRange(1, 1000), help="How many times.")
def cron_next(expression: str, tz: str, start: str | None, delay: int, count: int) -> None:
    """Print the next run times of EXPRESSION, one ISO 8601 time with offset per line."""
    errors = validate(expression, tz, delay)
    if errors:
        raise ScheduleError("; ".join(str(e) for e in errors))
    schedule = CronSchedule.parse(expression, tz, delay)
    try:
        after = (parse_time(start) if start else None) or datetime.now(timezone.utc)
    except (ValueError, ConfigError):
        raise ConfigError(f"--from must be an ISO 8601 time, got {start!r}", key="from") from None
    runs = schedule.next_runs(after, count)
    if not runs:
        click.echo("no scheduled run time: this schedule only runs by hand", err=True)
    for run in runs:
        click.echo(run.isoformat())


COMMANDS = (
    connector_create,
    connector_list,
    connector_show,
    connector_history,
    connector_update,
    connector_delete,
    connector_run,
    cron_next,
)
