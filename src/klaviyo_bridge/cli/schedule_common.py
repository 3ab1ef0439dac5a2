"""Helpers shared by the schedule and job commands (formatting, options, config loading)."""

from __future__ import annotations

import logging
import signal
import sys
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import click
import yaml
from rich.console import Console
from rich.table import Table

from ..config import load_yaml, parse_import_config, parse_time, read_text_bounded
from ..errors import BridgeError, ConfigError, JobFailed, StoreError
from ..home import Home
from ..jobs import JobResult, cancel_local, execute_job
from ..schedule.cron import CronSchedule
from ..schedule.naming import checked_schedule
from ..schedule.saving import create_schedule, migrate_stored_keys
from ..schedule.scheduler import job_label, spec_for
from ..secrets import CredentialStore, has_saved_connection, redact_config, resolve_connection
from ..store.factory import open_warehouse
from ..store.state import JobRecord, ScheduleRecord
from ..store.warehouse import Warehouse
from .auth_cmd import credential_store
from .hints import next_step

log = logging.getLogger("klaviyo_bridge.scheduler")

WAREHOUSE_HELP = "Warehouse: a DuckDB path, duckdb:///path or postgresql://... (default: HOME/warehouse.duckdb)."


def _open(home: Home, url: str | None) -> Warehouse:
    """The warehouse, with any key an older version stored inside a schedule moved out first."""
    wh = open_warehouse(url or home.ensure().warehouse, lock_timeout=30)
    try:
        migrate_stored_keys(wh, CredentialStore(home.ensure().credentials))
    except BridgeError as exc:  # never in the way of the command itself (shown records are masked anyway)
        logging.getLogger("klaviyo_bridge.secrets").warning("stored keys not migrated: %s", exc)
    return wh


def _control_dir(home: Home) -> Path:
    return home.ensure().root / "jobs"


def _console() -> Console:
    return Console(width=None if sys.stdout.isatty() else 200)


def _fmt_time(value: datetime | None) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S +0000") if value else ""


def _fmt_seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}s"


_Command = TypeVar("_Command", bound=Callable[..., Any])


def warehouse_option(f: _Command) -> _Command:
    return click.option("--warehouse", "warehouse_url", help=WAREHOUSE_HELP)(f)


def _load_config(name: str, path: str, credentials: CredentialStore) -> tuple[dict[str, Any], str | None]:
    """Read and validate CONFIG; return it with any inline key replaced by ``connection:``
    and the key to save under ``connector:NAME`` (None when the config names a saved one)."""
    try:
        text = read_text_bounded(path, "config")
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


def _job_table(jobs: list[JobRecord], *, with_schedule: bool = False) -> Table:
    out = Table()
    columns = ["JobID", "Status", "Records", "Database", "Table", "Duration", "Started at", "Scheduled for"]
    if with_schedule:
        columns[1:1] = ["Kind", "Job"]
    for column in columns:
        out.add_column(column, overflow="fold")
    for j in jobs:
        records = j.rows_written if j.rows_written is not None else j.rows_read
        row = [
            j.run_id,
            j.status,
            "" if records is None else str(records),
            j.database or "",
            j.table or "",
            _fmt_seconds(j.duration),
            _fmt_time(j.started_at),
            _fmt_time(j.scheduled_for),
        ]
        if with_schedule:
            row[1:1] = [j.kind, j.job]
        out.add_row(*row)
    return out


def _open_quick(home: Home, url: str | None) -> Warehouse | None:
    """The warehouse if it opens within 2 s (a running scheduler may hold a DuckDB file)."""
    try:
        return open_warehouse(url or home.ensure().warehouse, lock_timeout=2)
    except StoreError:
        return None


def echo_yaml(mapping: Any) -> None:
    """A settings mapping as indented YAML, keys redacted (for *:show)."""
    text = yaml.safe_dump(redact_config(mapping), sort_keys=False, default_flow_style=False)
    click.echo("".join(f"  {line}\n" for line in text.splitlines()), nl=False)


def print_history(record: ScheduleRecord, jobs: list[JobRecord]) -> None:
    """The job table of a schedule, newest first, with notes and errors under it (for *:history)."""
    if not record.enabled:
        click.echo(f"Schedule {record.name!r} is {record.status}")
    _console().print(_job_table(jobs))
    for j in jobs:
        if j.note:
            click.echo(f"{j.run_id}: {j.note}")
        if j.error:
            click.echo(f"{j.run_id}: {j.error}")

    if jobs:
        next_step(f"one job's details: klaviyo-bridge job:show {jobs[0].run_id}")
    else:
        verb = {"export": "sched:run", "workflow": "workflow run"}.get(record.kind, "connector:run")
        next_step(f"no jobs yet; run it now: klaviyo-bridge {verb} {record.name}")


def parse_as_of(time: str | None, example: str) -> datetime | None:
    """The TIME argument of *:run (the run's "now")."""
    if not time:
        return None
    try:
        return parse_time(time)
    except (ValueError, ConfigError):
        raise ConfigError(f"TIME must be an ISO 8601 time such as {example}, got {time!r}", key="time") from None


def run_now(
    home: Home,
    warehouse_url: str | None,
    name: str,
    get: Callable[[Warehouse, str], ScheduleRecord],
    describe: Callable[[ScheduleRecord], str],
    as_of: datetime | None,
) -> tuple[JobResult, JobRecord | None]:
    """Run a saved schedule once in this process (SIGTERM cancels it); returns (result, job record)."""
    credentials = credential_store(home)
    run_id = uuid.uuid4().hex
    previous = signal.signal(signal.SIGTERM, lambda *_: cancel_local(run_id, "stopped by SIGTERM"))
    try:
        with _open(home, warehouse_url) as wh:
            record = get(wh, name)
            try:
                click.echo(f"job {run_id} started ({job_label(record)}{describe(record)})", err=True)
                result = execute_job(
                    spec_for(record),
                    wh,
                    credentials,
                    now=as_of,
                    triggered_by="manual",
                    control_dir=_control_dir(home),
                    run_id=run_id,
                )
            except (KeyboardInterrupt, RuntimeError) as exc:
                if not isinstance(exc, KeyboardInterrupt) and "interrupted" not in str(exc).lower():
                    raise
                # a Ctrl-C that landed inside DuckDB outside a store session surfaces as its
                # RuntimeError "Query interrupted": still the user's Ctrl-C
                _say_what_was_committed(wh, run_id)
                raise KeyboardInterrupt from None
            job = wh.state.job(result.run_id)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return result, job


def _say_what_was_committed(wh: Warehouse, run_id: str) -> None:
    """After Ctrl-C: what the stopped job wrote, from its record (an import commits its rows and
    cursor together at the end, so one stopped before that wrote nothing)."""
    try:
        job = wh.state.job(run_id)
    except StoreError:
        return
    if job is None:
        click.echo(f"job {run_id} stopped before it began: nothing was committed", err=True)
        return
    line = f"job {run_id} {job.status}: {job.rows_read or 0} records fetched, {job.rows_written or 0} written"
    if job.kind == "import" and not job.rows_written:
        line += "; nothing was committed, the cursor did not move (the next run starts where the last successful one ended)"
    click.echo(line, err=True)


def delete_saved(
    home: Home, warehouse_url: str | None, name: str, get: Callable[[Warehouse, str], ScheduleRecord], auth: str
) -> None:
    """Delete a schedule (its job history stays) and the authentication saved for it."""
    with _open(home, warehouse_url) as wh:
        get(wh, name)
        wh.state.delete_schedule(name)
    credential_store(home).delete(auth, missing_ok=True)


def timing_options(f: _Command) -> _Command:
    """``-t/--timezone`` and ``--delay`` of a *:create verb."""
    f = click.option(
        "--delay", default=0, show_default=True, type=click.IntRange(0), help="Seconds to wait after each scheduled time."
    )(f)
    return click.option(
        "-t",
        "--timezone",
        "tz",
        default="UTC",
        show_default=True,
        help="IANA time zone of the cron fields, e.g. Asia/Tokyo (abbreviations like PST are rejected).",
    )(f)


def limit_option(f: _Command) -> _Command:
    """``-n/--limit`` of a *:history verb."""
    return click.option("-n", "--limit", default=20, show_default=True, type=click.IntRange(1), help="Jobs to show.")(f)


def update_timing_options(f: _Command) -> _Command:
    """``--cron``, ``-t/--timezone`` and ``--delay`` of a *:update verb."""
    f = click.option("--delay", type=click.IntRange(0), help="New delay in seconds.")(f)
    f = click.option("-t", "--timezone", "tz", help="New IANA time zone.")(f)
    return click.option("--cron", help='New cron expression ("" for run-by-hand only).')(f)


def enable_options(run_verb: str) -> Callable[[_Command], _Command]:
    """``--enable`` and ``--disable`` of a *:update verb (RUN_VERB: the verb that still runs it)."""

    def decorate(f: _Command) -> _Command:
        f = click.option("--disable", is_flag=True, help=f"Disable the schedule ({run_verb} still works).")(f)
        return click.option("--enable", is_flag=True, help="Re-enable a disabled schedule (resets its failure count).")(f)

    return decorate


def save_new(
    home: Home,
    warehouse_url: str | None,
    credentials: CredentialStore,
    record: ScheduleRecord,
    auth: str,
    key: str | None,
    hint: str,
) -> None:
    """Save a new schedule, with KEY (if any) saved as authentication AUTH."""
    with _open(home, warehouse_url) as wh:
        create_schedule(wh, credentials, record, {auth: key} if key else {}, hint=hint)


def list_table(
    home: Home, warehouse_url: str | None, kind: str, columns: tuple[str, ...], row: Callable[[ScheduleRecord], tuple[str, ...]]
) -> None:
    """Print the schedules of KIND as a table (for *:list)."""
    with _open(home, warehouse_url) as wh:
        records = wh.state.schedules(kind)
    out = Table()
    for column in columns:
        out.add_column(column, overflow="fold")
    for r in records:
        out.add_row(*row(r))
    _console().print(out)


def echo_rows(rows: list[tuple[str, Any]]) -> None:
    """Labelled lines, labels padded (for *:show)."""
    for label, value in rows:
        click.echo(f"{label:<9}: {value}")


def history(
    home: Home, warehouse_url: str | None, name: str, limit: int, get: Callable[[Warehouse, str], ScheduleRecord]
) -> None:
    """The jobs of schedule NAME, newest first (for *:history)."""
    with _open(home, warehouse_url) as wh:
        record = get(wh, name)
        jobs = wh.state.jobs(schedule=name, limit=limit)
    print_history(record, jobs)


def check_enable(enable: bool, disable: bool) -> None:
    if enable and disable:
        raise ConfigError("give --enable or --disable, not both")


def common_changes(
    r: ScheduleRecord,
    cron: str | None,
    tz: str | None,
    delay: int | None,
    database: str | None,
    enable: bool,
    disable: bool,
    now: datetime,
) -> dict[str, Any]:
    """The changes of the options every *:update has: a new cron/time zone/delay (checked) or
    --enable count slots from NOW on; --database, --disable."""
    changes: dict[str, Any] = {}
    if cron is not None or tz is not None or delay is not None:
        new = (r.cron if cron is None else cron, r.timezone if tz is None else tz, r.delay_seconds if delay is None else delay)
        checked_schedule(*new)
        changes.update(cron=new[0], timezone=new[1], delay_seconds=new[2], last_scheduled_for=now)
    if database:
        changes["target_database"] = database
    if enable:
        changes.update(enabled=True, disabled_reason=None, disabled_at=None, consecutive_failures=0, last_scheduled_for=now)
    if disable:
        changes.update(enabled=False, disabled_reason="disabled by hand", disabled_at=now)
    return changes


def schedule_verb(verb: str, *params: Callable[[Any], Any], named: bool = True) -> Callable[[Callable[..., Any]], click.Command]:
    """A schedule verb: ``click.command(VERB)``, the NAME argument (if NAMED), PARAMS in order,
    ``--warehouse``, and the Home as first argument."""

    def decorate(f: Callable[..., Any]) -> click.Command:
        f = warehouse_option(click.pass_obj(f))
        for param in reversed(params):
            f = param(f)
        if named:
            f = click.argument("name")(f)
        return click.command(verb)(f)

    return decorate


def say_created(
    what: str, schedule: CronSchedule, now: datetime, by_hand: str, key_note: str | None, verbs: str, name: str
) -> None:
    """What *:create says: WHAT created, its timing and next run (BY_HAND: the words for none), KEY_NOTE
    (where an inline key was saved, if one was) and the next steps with the VERBS:run/history."""
    run = schedule.next_run(now)
    click.echo(f"{what} created: {schedule.describe()}; next run: {run.isoformat() if run else by_hand}")
    if key_note:
        click.echo(key_note)
    next_step(
        f"run it now: klaviyo-bridge {verbs}:run {name}",
        f"its jobs: klaviyo-bridge {verbs}:history {name}",
        "run it on its schedule: klaviyo-bridge scheduler (keep it running)",
    )


def get_pushed(wh: Warehouse, name: str) -> ScheduleRecord:
    """The pushed workflow NAME (a schedule of kind workflow)."""
    record = wh.state.schedule(name)
    if record is None or record.kind != "workflow":
        raise ConfigError(f"no .dig file and no pushed workflow named {name!r} (see workflow list)", key="name")
    return record


def run_pushed(home: Home, warehouse_url: str | None, name: str) -> None:
    """Run the stored copy of pushed workflow NAME now, in this process, recorded in its history."""
    result, job = run_now(home, warehouse_url, name, get_pushed, lambda r: "", None)
    read, written = (job.rows_read, job.rows_written) if job else (None, None)
    line = (
        f"job {result.run_id} {result.status}: {read or 0} rows read, {written or 0} records exported in "
        f"{(result.ended_at - result.started_at).total_seconds():.1f}s"
    )
    if result.status != "success":
        raise JobFailed(f"{line}: {result.error}", run_id=result.run_id, error=result.error_detail)
    click.echo(line)
    click.echo(f"History: klaviyo-bridge job:list --schedule {name}")


def failure_options(command: _Command) -> _Command:
    """``--max-failures`` and ``--notify-command``: what the embedded scheduler and a pool worker
    do when jobs fail (same words, same defaults in both)."""
    command = click.option(
        "--notify-command",
        metavar="CMD",
        help="Shell command run with the job summary as JSON on stdin when a job fails or a schedule is disabled.",
    )(command)
    return click.option(
        "--max-failures",
        default=3,
        show_default=True,
        type=click.IntRange(1),
        help="Disable a schedule after this many configuration failures in a row.",
    )(command)
