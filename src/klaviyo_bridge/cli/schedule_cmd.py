"""Schedules and jobs in the seed's words: ``connector:create/list/show/history/update/delete/run``,
``cron:next``, ``job:list/show/kill`` and the ``scheduler`` daemon. Only parses and prints."""

from __future__ import annotations

import logging
import re
import signal
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click
import yaml
from rich.console import Console
from rich.table import Table

from ..config import load_yaml, parse_import_config, parse_time
from ..errors import BridgeError, ConfigError, ScheduleError, StoreError
from ..home import Home
from ..jobs import cancel_local, execute_job, live_jobs, request_kill
from ..schedule.cron import CronSchedule, validate
from ..schedule.scheduler import Scheduler, job_label, spec_for
from ..secrets import CredentialStore, has_saved_connection, resolve_connection
from ..store.state import JobRecord, ScheduleRecord
from ..store.warehouse import Warehouse, open_warehouse
from .auth_cmd import credential_store

log = logging.getLogger("klaviyo_bridge.scheduler")
WAREHOUSE_HELP = "Warehouse: a DuckDB path, duckdb:///path or postgresql://... (default: HOME/warehouse.duckdb)."
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
REDACTED = "**********"


def _open(home: Home, url: str | None) -> Warehouse:
    return open_warehouse(url or home.ensure().warehouse, lock_timeout=30)


def _control_dir(home: Home) -> Path:
    return home.ensure().root / "jobs"


def _console() -> Console:
    return Console(width=None if sys.stdout.isatty() else 200)


def _fmt_time(value: datetime | None) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S +0000") if value else ""


def _fmt_seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}s"


def warehouse_option(f):
    return click.option("--warehouse", "warehouse_url", help=WAREHOUSE_HELP)(f)


def _check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise ConfigError(f"schedule name {name!r} is invalid: use letters, digits, '_', '.', '-' (up to 100)",
                          key="name")
    return name


def _check_schedule(cron: str, tz: str, delay: int) -> CronSchedule:
    errors = validate(cron, tz, delay)
    if errors:
        raise ConfigError("; ".join(str(e) for e in errors), key="cron")
    return CronSchedule.parse(cron, tz, delay)


def _load_config(name: str, path: str, credentials: CredentialStore) -> tuple[dict[str, Any], str | None]:
    """Read and validate CONFIG; return it with any inline key replaced by ``connection:``
    and the key to save under ``connector:NAME`` (None when the config names a saved one)."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    data = load_yaml(text, path)
    parse_import_config(resolve_connection(data, credentials), path)  # every problem, before saving anything
    source = data.get("in")
    if not isinstance(source, dict) or has_saved_connection(data):
        return data, None
    key = source.pop("api_token", None) or source.pop("api_key", None)
    if key:
        source["connection"] = f"connector:{name}"
    return data, key


def _redacted(config: Any) -> Any:
    if isinstance(config, dict):
        return {k: (REDACTED if k in ("api_token", "api_key") else _redacted(v)) for k, v in config.items()}
    if isinstance(config, list):
        return [_redacted(v) for v in config]
    return config


def _get_schedule(wh: Warehouse, name: str) -> ScheduleRecord:
    record = wh.state.schedule(name)
    if record is None or record.kind != "import":
        raise ConfigError(f"no import schedule named {name!r} (see connector:list)", key="name")
    return record


def _next_run(record: ScheduleRecord, now: datetime) -> str:
    if not record.enabled:
        return "none (disabled)"
    schedule = CronSchedule.parse(record.cron, record.timezone, record.delay_seconds)
    run = schedule.next_run(max(now, record.last_scheduled_for or now))
    return run.isoformat() if run else "none (runs only by hand: connector:run)"


# --- connector:* -------------------------------------------------------------------------
@click.command("connector:create")
@click.argument("name")
@click.argument("cron")
@click.argument("database")
@click.argument("table")
@click.argument("config_file", type=click.Path(exists=True, dir_okay=False))
@click.option("-t", "--timezone", "tz", default="UTC", show_default=True,
              help="IANA time zone of the cron fields, e.g. Asia/Tokyo (abbreviations like PST are rejected).")
@click.option("--delay", default=0, show_default=True, type=click.IntRange(0), help="Seconds to wait after each scheduled time.")
@warehouse_option
@click.pass_obj
def connector_create(home: Home, name: str, cron: str, database: str, table: str, config_file: str, tz: str,
                     delay: int, warehouse_url: str | None) -> None:
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
    with _open(home, warehouse_url) as wh:
        if wh.state.schedule(name) is not None:
            raise ConfigError(f"schedule {name!r} already exists (connector:update or connector:delete it)", key="name")
        if key:
            credentials.save(f"connector:{name}", key, replace=True)
        try:
            wh.state.create_schedule(ScheduleRecord(name, "import", cron, tz, delay, database, table, config,
                                                    last_scheduled_for=now))
        except BaseException:
            if key:
                credentials.delete(f"connector:{name}", missing_ok=True)
            raise
    run = schedule.next_run(now)
    click.echo(f"Schedule {name!r} created: {schedule.describe()}; next run: "
               f"{run.isoformat() if run else 'none (runs only by hand)'}")
    if key:
        click.echo(f"The config's api_token was saved as authentication 'connector:{name}'.")


@click.command("connector:list")
@warehouse_option
@click.pass_obj
def connector_list(home: Home, warehouse_url: str | None) -> None:
    """List import schedules: Name, Cron, Timezone, Delay, Database, Table, Status."""
    with _open(home, warehouse_url) as wh:
        records = wh.state.schedules("import")
    out = Table()
    for column in ("Name", "Cron", "Timezone", "Delay", "Database", "Table", "Status"):
        out.add_column(column, overflow="fold")
    for r in records:
        out.add_row(r.name, r.cron, r.timezone, str(r.delay_seconds), r.database or "", r.table or "", r.status)
    _console().print(out)


@click.command("connector:show")
@click.argument("name")
@warehouse_option
@click.pass_obj
def connector_show(home: Home, name: str, warehouse_url: str | None) -> None:
    """Show the settings of schedule NAME (keys redacted) and its next run time."""
    with _open(home, warehouse_url) as wh:
        r = _get_schedule(wh, name)
    rows = [("Name", r.name), ("Cron", r.cron), ("Timezone", r.timezone), ("Delay", r.delay_seconds),
            ("Database", r.database), ("Table", r.table), ("Status", r.status),
            ("Failures", r.consecutive_failures), ("Next run", _next_run(r, datetime.now(timezone.utc))),
            ("Last slot", _fmt_time(r.last_scheduled_for)), ("Last job", r.last_run_id or "")]
    for label, value in rows:
        click.echo(f"{label:<9}: {value}")
    click.echo("Config   :")
    text = yaml.safe_dump(_redacted(r.config), sort_keys=False, default_flow_style=False)
    click.echo("".join(f"  {line}\n" for line in text.splitlines()), nl=False)


def _job_table(jobs: list[JobRecord], *, with_schedule: bool = False) -> Table:
    out = Table()
    columns = ["JobID", "Status", "Records", "Database", "Table", "Duration", "Started at", "Scheduled for"]
    if with_schedule:
        columns[1:1] = ["Kind", "Job"]
    for column in columns:
        out.add_column(column, overflow="fold")
    for j in jobs:
        records = j.rows_written if j.rows_written is not None else j.rows_read
        row = [j.run_id, j.status, "" if records is None else str(records), j.database or "", j.table or "",
               _fmt_seconds(j.duration), _fmt_time(j.started_at), _fmt_time(j.scheduled_for)]
        if with_schedule:
            row[1:1] = [j.kind, j.job]
        out.add_row(*row)
    return out


@click.command("connector:history")
@click.argument("name")
@click.option("-n", "--limit", default=20, show_default=True, type=click.IntRange(1), help="Jobs to show.")
@warehouse_option
@click.pass_obj
def connector_history(home: Home, name: str, limit: int, warehouse_url: str | None) -> None:
    """Jobs of schedule NAME, newest first (details: job:show JOB_ID)."""
    with _open(home, warehouse_url) as wh:
        record = _get_schedule(wh, name)
        jobs = wh.state.jobs(schedule=name, limit=limit)
    if not record.enabled:
        click.echo(f"Schedule {name!r} is {record.status}")
    _console().print(_job_table(jobs))
    for j in jobs:
        if j.note:
            click.echo(f"{j.run_id}: {j.note}")
        if j.error:
            click.echo(f"{j.run_id}: {j.error}")


@click.command("connector:update")
@click.argument("name")
@click.option("--cron", help='New cron expression ("" for run-by-hand only).')
@click.option("-t", "--timezone", "tz", help="New IANA time zone.")
@click.option("--delay", type=click.IntRange(0), help="New delay in seconds.")
@click.option("--database", help="New target database.")
@click.option("--table", help="New target table.")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), help="New config file.")
@click.option("--enable", is_flag=True, help="Re-enable a disabled schedule (resets its failure count).")
@click.option("--disable", is_flag=True, help="Disable the schedule (connector:run still works).")
@warehouse_option
@click.pass_obj
def connector_update(home: Home, name: str, cron: str | None, tz: str | None, delay: int | None,
                     database: str | None, table: str | None, config_file: str | None, enable: bool,
                     disable: bool, warehouse_url: str | None) -> None:
    """Change schedule NAME. A new cron/time zone/delay, or --enable, counts slots from now on."""
    if enable and disable:
        raise ConfigError("give --enable or --disable, not both")
    now = datetime.now(timezone.utc)
    credentials = credential_store(home)
    with _open(home, warehouse_url) as wh:
        r = _get_schedule(wh, name)
        changes: dict[str, Any] = {}
        if cron is not None or tz is not None or delay is not None:
            new = (r.cron if cron is None else cron, r.timezone if tz is None else tz,
                   r.delay_seconds if delay is None else delay)
            _check_schedule(*new)
            changes.update(cron=new[0], timezone=new[1], delay_seconds=new[2], last_scheduled_for=now)
        if database:
            changes["target_database"] = database
        if table:
            changes["target_table"] = table
        key = None
        if config_file:
            changes["config"], key = _load_config(name, config_file, credentials)
        if enable:
            changes.update(enabled=True, disabled_reason=None, disabled_at=None, consecutive_failures=0,
                           last_scheduled_for=now)
        if disable:
            changes.update(enabled=False, disabled_reason="disabled by hand", disabled_at=now)
        if not changes:
            raise ConfigError("nothing to update (see connector:update --help)")
        if key:
            credentials.save(f"connector:{name}", key, replace=True)
        r = wh.state.update_schedule(name, **changes)
    click.echo(f"Schedule {name!r} updated ({r.status}); next run: {_next_run(r, now)}")


@click.command("connector:delete")
@click.argument("name")
@warehouse_option
@click.pass_obj
def connector_delete(home: Home, name: str, warehouse_url: str | None) -> None:
    """Delete schedule NAME (its job history stays; its connector:NAME authentication goes)."""
    with _open(home, warehouse_url) as wh:
        _get_schedule(wh, name)
        wh.state.delete_schedule(name)
    credential_store(home).delete(f"connector:{name}", missing_ok=True)
    click.echo(f"Deleted schedule {name!r}")


@click.command("connector:run")
@click.argument("name")
@click.argument("time", required=False)
@warehouse_option
@click.pass_obj
def connector_run(home: Home, name: str, time: str | None, warehouse_url: str | None) -> None:
    """Run schedule NAME now, as if it were TIME (ISO 8601; default: now).

    TIME is the import's "now": an incremental import reads up to it.
    """
    as_of = None
    if time:
        try:
            as_of = parse_time(time)
        except (ValueError, ConfigError):
            raise ConfigError(f"TIME must be an ISO 8601 time such as 2024-06-01T00:10:00+09:00, got {time!r}",
                              key="time") from None
    credentials = credential_store(home)
    run_id = uuid.uuid4().hex
    previous = signal.signal(signal.SIGTERM, lambda *_: cancel_local(run_id))
    try:
        with _open(home, warehouse_url) as wh:
            record = _get_schedule(wh, name)
            click.echo(f"job {run_id} started ({job_label(record)} -> {record.database}.{record.table})", err=True)
            result = execute_job(spec_for(record), wh, credentials, now=as_of, triggered_by="manual",
                                 control_dir=_control_dir(home), run_id=run_id)
    finally:
        signal.signal(signal.SIGTERM, previous)
    line = (f"job {result.run_id} {result.status}: {result.rows or 0} records into {result.database}.{result.table}"
            f" in {(result.ended_at - result.started_at).total_seconds():.1f}s")
    if result.status != "succeeded":
        raise BridgeError(f"{line}: {result.error}")
    click.echo(line)


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
        after = parse_time(start) if start else datetime.now(timezone.utc)
    except (ValueError, ConfigError):
        raise ConfigError(f"--from must be an ISO 8601 time, got {start!r}", key="from") from None
    runs = schedule.next_runs(after, count)
    if not runs:
        click.echo("no scheduled run time: this schedule only runs by hand", err=True)
    for run in runs:
        click.echo(run.isoformat())


# --- job:* ---------------------------------------------------------------------------------
@click.command("job:list")
@click.option("--schedule", help="Only jobs of this schedule.")
@click.option("--status", type=click.Choice(["running", "succeeded", "failed", "cancelled"]), help="Only this status.")
@click.option("-n", "--limit", default=20, show_default=True, type=click.IntRange(1), help="Jobs to show.")
@warehouse_option
@click.pass_obj
def job_list(home: Home, schedule: str | None, status: str | None, limit: int, warehouse_url: str | None) -> None:
    """Recent jobs of every kind, newest first."""
    with _open(home, warehouse_url) as wh:
        jobs = wh.state.jobs(schedule=schedule, status=status, limit=limit)
    _console().print(_job_table(jobs, with_schedule=True))


@click.command("job:show")
@click.argument("job_id")
@warehouse_option
@click.pass_obj
def job_show(home: Home, job_id: str, warehouse_url: str | None) -> None:
    """Status, timings, counts and error of job JOB_ID (a unique prefix of at least 6 characters works)."""
    with _open(home, warehouse_url) as wh:
        j = wh.state.job(job_id)
    if j is None:
        raise ConfigError(f"no job {job_id!r} (see job:list)", key="job_id")
    rows = [("Job ID", j.run_id), ("Kind", j.kind), ("Job", j.job), ("Schedule", j.schedule or ""),
            ("Triggered by", j.triggered_by or ""), ("Status", j.status),
            ("Scheduled for", _fmt_time(j.scheduled_for)), ("Started at", _fmt_time(j.started_at)),
            ("Ended at", _fmt_time(j.ended_at)), ("Duration", _fmt_seconds(j.duration)),
            ("Database", j.database or ""), ("Table", j.table or ""),
            ("Records read", "" if j.rows_read is None else j.rows_read),
            ("Records written", "" if j.rows_written is None else j.rows_written),
            ("Counts", ", ".join(f"{k}={v}" for k, v in j.counts.items())), ("PID", j.pid or ""),
            ("Host", j.host or ""), ("Kill requested", "yes" if j.cancel_requested else ""),
            ("Error", j.error or ""), ("Note", j.note or "")]
    for label, value in rows:
        if value != "" or label in ("Status", "Error"):
            click.echo(f"{label:<15}: {value}")


@click.command("job:kill")
@click.argument("job_id")
@warehouse_option
@click.pass_obj
def job_kill(home: Home, job_id: str, warehouse_url: str | None) -> None:
    """Stop running job JOB_ID (cooperatively: it stops at its next await and is recorded as cancelled)."""
    control = _control_dir(home)
    live = [j["run_id"] for j in live_jobs(control) if str(j.get("run_id", "")).startswith(job_id)]
    if len(live) > 1:
        raise ConfigError(f"job id prefix {job_id!r} is ambiguous; give more characters", key="job_id")
    wh = None
    try:
        wh = _open_quick(home, warehouse_url)
        record = wh.state.job(live[0] if live else job_id) if wh else None
        if record is None and not live:
            raise ConfigError(f"no running job {job_id!r} (see job:list --status running)", key="job_id")
        if record is not None and record.status != "running":
            raise ConfigError(f"job {record.run_id} is not running (status: {record.status})", key="job_id")
        run_id = live[0] if live else record.run_id  # type: ignore[union-attr]
        done = request_kill(run_id, control_dir=control, state=wh.state if wh else None)
    finally:
        if wh is not None:
            wh.close()
    click.echo(f"job {run_id}: {', '.join(done)}")


def _open_quick(home: Home, url: str | None) -> Warehouse | None:
    """The warehouse if it opens within 2 s (a running scheduler may hold a DuckDB file)."""
    try:
        return open_warehouse(url or home.ensure().warehouse, lock_timeout=2)
    except StoreError:
        return None


# --- scheduler -----------------------------------------------------------------------------
@click.command("scheduler")
@click.option("--max-failures", default=3, show_default=True, type=click.IntRange(1),
              help="Disable a schedule after this many configuration failures in a row.")
@click.option("--notify-command", metavar="CMD",
              help="Shell command run with the job summary as JSON on stdin when a job fails or a schedule is disabled.")
@click.option("--poll", "poll_seconds", default=30.0, show_default=True, type=click.FloatRange(0.1),
              help="Longest sleep between checks, in seconds.")
@click.option("--once", is_flag=True, help="Check once, run what is due, wait for it, and exit.")
@warehouse_option
@click.pass_obj
def scheduler_command(home: Home, max_failures: int, notify_command: str | None, poll_seconds: float, once: bool,
                      warehouse_url: str | None) -> None:
    """Run due schedules, in the foreground, until stopped (Ctrl-C / SIGTERM).

    A slot missed while the scheduler was down runs once on start (not once per
    missed slot); the same schedule never runs twice at once. With the embedded
    DuckDB warehouse the file is closed while no job runs, so other commands work.
    """
    scheduler = Scheduler(lambda: _open(home, warehouse_url), credential_store(home), max_failures=max_failures,
                          notify_command=notify_command, control_dir=_control_dir(home), poll_seconds=poll_seconds)
    if once:
        started = scheduler.tick()
        scheduler.wait()
        scheduler.release_if_idle()
        for result in scheduler.results:
            click.echo(f"{result.schedule}: job {result.run_id} {result.status}"
                       + (f": {result.error}" if result.error else ""))
        if not started:
            click.echo("nothing due")
        return
    previous = signal.signal(signal.SIGTERM, lambda *_: scheduler.stop())
    click.echo(f"scheduler started (pid {__import__('os').getpid()}); Ctrl-C to stop", err=True)
    try:
        scheduler.run_forever()
    except KeyboardInterrupt:
        scheduler.shutdown()
    finally:
        signal.signal(signal.SIGTERM, previous)


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


def _load_result_settings(name: str, spec: str, connection: str | None,
                          credentials: CredentialStore) -> tuple[dict[str, Any], str | None]:
    """Read and validate --result-settings (file or inline JSON); return the mapping to store, with
    an inline key replaced by ``result_connection: sched:NAME``, and the key to save under that name."""
    from ..exports.job import load_result_settings
    from ..exports.settings import parse_settings_text

    if spec.lstrip().startswith("{"):
        data, warnings = parse_settings_text(spec, "--result-settings")
    else:
        try:
            text = Path(spec).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read result settings {spec}: {exc.strerror} "
                              "(give a YAML file or inline JSON like '{\"operation\": \"add\", ...}')") from None
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
    from ..exports.job import read_sql

    sql = read_sql(query, query_file).strip()
    if not sql:
        raise ConfigError("the query is empty", key="query")
    return sql


@click.command("sched:create")
@click.argument("name")
@click.argument("cron")
@click.argument("query", required=False)
@click.option("-f", "--file", "query_file", type=click.Path(exists=True, dir_okay=False),
              help="Read the SQL from a file (stored at create time).")
@click.option("-d", "--database", required=True, help="Database (schema) the query's unqualified table names refer to.")
@click.option("--result-settings", "result_settings", required=True,
              help="Export settings: a YAML/JSON file with the seed's keys, or inline JSON.")
@click.option("--result-connection", "connection", help="Saved authentication to use (auth:create NAME).")
@click.option("-t", "--timezone", "tz", default="UTC", show_default=True,
              help="IANA time zone of the cron fields, e.g. Asia/Tokyo (abbreviations like PST are rejected).")
@click.option("--delay", default=0, show_default=True, type=click.IntRange(0), help="Seconds to wait after each scheduled time.")
@warehouse_option
@click.pass_obj
def sched_create(home: Home, name: str, cron: str, query: str | None, query_file: str | None, database: str,
                 result_settings: str, connection: str | None, tz: str, delay: int, warehouse_url: str | None) -> None:
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
    with _open(home, warehouse_url) as wh:
        if wh.state.schedule(name) is not None:
            raise ConfigError(f"schedule {name!r} already exists (sched:update or sched:delete it)", key="name")
        if key:
            credentials.save(f"sched:{name}", key, replace=True)
        try:
            wh.state.create_schedule(ScheduleRecord(name, "export", cron, tz, delay, database, None,
                                                    {"query": sql, "result_settings": settings},
                                                    last_scheduled_for=now))
        except BaseException:
            if key:
                credentials.delete(f"sched:{name}", missing_ok=True)
            raise
    run = schedule.next_run(now)
    click.echo(f"Export schedule {name!r} created: {schedule.describe()}; next run: "
               f"{run.isoformat() if run else 'none (runs only by hand: sched:run)'}")
    if key:
        click.echo(f"The result settings' api_token was saved as authentication 'sched:{name}'.")


@click.command("sched:list")
@warehouse_option
@click.pass_obj
def sched_list(home: Home, warehouse_url: str | None) -> None:
    """List export schedules: Name, Cron, Timezone, Delay, Database, Query (shortened), Status."""
    with _open(home, warehouse_url) as wh:
        records = wh.state.schedules("export")
    out = Table()
    for column in ("Name", "Cron", "Timezone", "Delay", "Database", "Query", "Status"):
        out.add_column(column, overflow="fold")
    for r in records:
        out.add_row(r.name, r.cron, r.timezone, str(r.delay_seconds), r.database or "",
                    _short(str(r.config.get("query", ""))), r.status)
    _console().print(out)


@click.command("sched:show")
@click.argument("name")
@warehouse_option
@click.pass_obj
def sched_show(home: Home, name: str, warehouse_url: str | None) -> None:
    """Show export schedule NAME: timing, query, result settings (keys redacted), next run."""
    with _open(home, warehouse_url) as wh:
        r = _get_export(wh, name)
    rows = [("Name", r.name), ("Cron", r.cron), ("Timezone", r.timezone), ("Delay", r.delay_seconds),
            ("Database", r.database), ("Status", r.status), ("Failures", r.consecutive_failures),
            ("Next run", _next_run(r, datetime.now(timezone.utc)).replace("connector:run", "sched:run")),
            ("Last slot", _fmt_time(r.last_scheduled_for)), ("Last job", r.last_run_id or "")]
    for label, value in rows:
        click.echo(f"{label:<9}: {value}")
    click.echo("Query    :")
    click.echo("".join(f"  {line}\n" for line in str(r.config.get("query", "")).splitlines()), nl=False)
    click.echo("Result settings:")
    text = yaml.safe_dump(_redacted(r.config.get("result_settings") or {}), sort_keys=False, default_flow_style=False)
    click.echo("".join(f"  {line}\n" for line in text.splitlines()), nl=False)


@click.command("sched:history")
@click.argument("name")
@click.option("-n", "--limit", default=20, show_default=True, type=click.IntRange(1), help="Jobs to show.")
@warehouse_option
@click.pass_obj
def sched_history(home: Home, name: str, limit: int, warehouse_url: str | None) -> None:
    """Jobs of export schedule NAME, newest first (Records = rows accepted or submitted; job:show JOB_ID)."""
    with _open(home, warehouse_url) as wh:
        record = _get_export(wh, name)
        jobs = wh.state.jobs(schedule=name, limit=limit)
    if not record.enabled:
        click.echo(f"Schedule {name!r} is {record.status}")
    _console().print(_job_table(jobs))
    for j in jobs:
        if j.note:
            click.echo(f"{j.run_id}: {j.note}")
        if j.error:
            click.echo(f"{j.run_id}: {j.error}")


@click.command("sched:update")
@click.argument("name")
@click.option("--cron", help='New cron expression ("" for run-by-hand only).')
@click.option("-t", "--timezone", "tz", help="New IANA time zone.")
@click.option("--delay", type=click.IntRange(0), help="New delay in seconds.")
@click.option("-d", "--database", help="New database.")
@click.option("--query", help="New SQL.")
@click.option("-f", "--file", "query_file", type=click.Path(exists=True, dir_okay=False), help="New SQL from a file.")
@click.option("--result-settings", "result_settings", help="New export settings (file or inline JSON).")
@click.option("--result-connection", "connection", help="With --result-settings: saved authentication to use.")
@click.option("--enable", is_flag=True, help="Re-enable a disabled schedule (resets its failure count).")
@click.option("--disable", is_flag=True, help="Disable the schedule (sched:run still works).")
@warehouse_option
@click.pass_obj
def sched_update(home: Home, name: str, cron: str | None, tz: str | None, delay: int | None, database: str | None,
                 query: str | None, query_file: str | None, result_settings: str | None, connection: str | None,
                 enable: bool, disable: bool, warehouse_url: str | None) -> None:
    """Change export schedule NAME. A new cron/time zone/delay, or --enable, counts slots from now on."""
    if enable and disable:
        raise ConfigError("give --enable or --disable, not both")
    if connection and not result_settings:
        raise ConfigError("--result-connection goes with --result-settings", key="result_connection")
    now = datetime.now(timezone.utc)
    credentials = credential_store(home)
    with _open(home, warehouse_url) as wh:
        r = _get_export(wh, name)
        changes: dict[str, Any] = {}
        if cron is not None or tz is not None or delay is not None:
            new = (r.cron if cron is None else cron, r.timezone if tz is None else tz,
                   r.delay_seconds if delay is None else delay)
            _check_schedule(*new)
            changes.update(cron=new[0], timezone=new[1], delay_seconds=new[2], last_scheduled_for=now)
        if database:
            changes["target_database"] = database
        config = dict(r.config)
        key = None
        if query is not None or query_file:
            config["query"] = _read_query(query, query_file)
        if result_settings:
            config["result_settings"], key = _load_result_settings(name, result_settings, connection, credentials)
        if config != r.config:
            changes["config"] = config
        if enable:
            changes.update(enabled=True, disabled_reason=None, disabled_at=None, consecutive_failures=0,
                           last_scheduled_for=now)
        if disable:
            changes.update(enabled=False, disabled_reason="disabled by hand", disabled_at=now)
        if not changes:
            raise ConfigError("nothing to update (see sched:update --help)")
        if key:
            credentials.save(f"sched:{name}", key, replace=True)
        r = wh.state.update_schedule(name, **changes)
    click.echo(f"Export schedule {name!r} updated ({r.status}); next run: "
               f"{_next_run(r, now).replace('connector:run', 'sched:run')}")


@click.command("sched:delete")
@click.argument("name")
@warehouse_option
@click.pass_obj
def sched_delete(home: Home, name: str, warehouse_url: str | None) -> None:
    """Delete export schedule NAME (its job history stays; its sched:NAME authentication goes)."""
    with _open(home, warehouse_url) as wh:
        _get_export(wh, name)
        wh.state.delete_schedule(name)
    credential_store(home).delete(f"sched:{name}", missing_ok=True)
    click.echo(f"Deleted export schedule {name!r}")


@click.command("sched:run")
@click.argument("name")
@click.argument("time", required=False)
@warehouse_option
@click.pass_obj
def sched_run(home: Home, name: str, time: str | None, warehouse_url: str | None) -> None:
    """Run export schedule NAME now, as if it were TIME (ISO 8601; default: now; recorded with the job)."""
    as_of = None
    if time:
        try:
            as_of = parse_time(time)
        except (ValueError, ConfigError):
            raise ConfigError(f"TIME must be an ISO 8601 time such as 2024-06-01T07:00:00+09:00, got {time!r}",
                              key="time") from None
    credentials = credential_store(home)
    run_id = uuid.uuid4().hex
    previous = signal.signal(signal.SIGTERM, lambda *_: cancel_local(run_id))
    try:
        with _open(home, warehouse_url) as wh:
            record = _get_export(wh, name)
            click.echo(f"job {run_id} started ({job_label(record)}: {record.database} -> Klaviyo)", err=True)
            result = execute_job(spec_for(record), wh, credentials, now=as_of, triggered_by="manual",
                                 control_dir=_control_dir(home), run_id=run_id)
            job = wh.state.job(result.run_id)
    finally:
        signal.signal(signal.SIGTERM, previous)
    counts = ", ".join(f"{v} {k}" for k, v in (job.counts if job else {}).items() if isinstance(v, int))
    line = (f"job {result.run_id} {result.status}: {result.rows or 0} records exported"
            f"{f' ({counts})' if counts else ''} in {(result.ended_at - result.started_at).total_seconds():.1f}s")
    if result.status != "succeeded":
        raise BridgeError(f"{line}: {result.error}")
    click.echo(line)


EXPORT_COMMANDS = (sched_create, sched_list, sched_show, sched_history, sched_update, sched_delete, sched_run)

COMMANDS = (connector_create, connector_list, connector_show, connector_history, connector_update, connector_delete,
            connector_run, cron_next, job_list, job_show, job_kill, scheduler_command, *EXPORT_COMMANDS)
