"""Jobs: ``job:list/show/kill`` (the scheduler daemon is scheduler_cmd). Only parses and prints."""

from __future__ import annotations

import csv
import sys

import click

from ..errors import ConfigError
from ..home import Home
from ..jobs import live_jobs, request_kill
from .schedule_common import (
    _console,
    _control_dir,
    _fmt_seconds,
    _fmt_time,
    _job_table,
    _open,
    _open_quick,
    warehouse_option,
)


# --- job:* ---------------------------------------------------------------------------------
@click.command("job:list")
@click.option("--schedule", help="Only jobs of this schedule.")
@click.option("--status", type=click.Choice(["queued", "running", "success", "error", "killed"]), help="Only this status.")
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
@click.option(
    "--rows",
    "show_rows",
    is_flag=True,
    help="An export's per-row outcomes as CSV: row number, identifier (email, phone, ...), outcome, reason.",
)
@click.option("--outcome", help="With --rows: only rows with this outcome (accepted, rejected, skipped, ...).")
@warehouse_option
@click.pass_obj
def job_show(home: Home, job_id: str, show_rows: bool, outcome: str | None, warehouse_url: str | None) -> None:
    """Status, timings, counts and error of job JOB_ID (a unique prefix of at least 6 characters works)."""
    with _open(home, warehouse_url) as wh:
        j = wh.state.job(job_id)
        rows_table = wh.state.export_rows(run_id=j.run_id) if (j is not None and show_rows) else None
    if j is None:
        raise ConfigError(f"no job {job_id!r} (see job:list)", key="job_id")
    if rows_table is not None:
        out = csv.writer(sys.stdout)
        out.writerow(["row_number", "identifier", "outcome", "reason"])
        for r in rows_table.sort_by("row_index").to_pylist():
            if outcome is None or r["outcome"] == outcome:
                out.writerow([r["row_index"] + 1, r["identifier"] or "", r["outcome"], r["reason"] or ""])
        return
    rows = [
        ("Job ID", j.run_id),
        ("Kind", j.kind),
        ("Job", j.job),
        ("Schedule", j.schedule or ""),
        ("Triggered by", j.triggered_by or ""),
        ("Status", j.status),
        ("Scheduled for", _fmt_time(j.scheduled_for)),
        ("Started at", _fmt_time(j.started_at)),
        ("Ended at", _fmt_time(j.ended_at)),
        ("Duration", _fmt_seconds(j.duration)),
        ("Database", j.database or ""),
        ("Table", j.table or ""),
        ("Records read", "" if j.rows_read is None else j.rows_read),
        ("Records written", "" if j.rows_written is None else j.rows_written),
        ("Counts", ", ".join(f"{k}={v}" for k, v in j.counts.items())),
        ("PID", j.pid or ""),
        ("Host", j.host or ""),
        ("Kill requested", "yes" if j.cancel_requested else ""),
        ("Error", j.error or ""),
    ]
    detail = j.error_detail or {}
    rows += [
        ("Error code", detail.get("code") or ""),
        ("Error field", detail.get("field") or ""),
        ("Error row", detail.get("row") or ""),
        ("Hint", detail.get("hint") or ""),
        ("Note", j.note or ""),
    ]
    for label, value in rows:
        if value != "" or label in ("Status", "Error"):
            click.echo(f"{label:<15}: {value}")


@click.command("job:kill")
@click.argument("job_id")
@warehouse_option
@click.pass_obj
def job_kill(home: Home, job_id: str, warehouse_url: str | None) -> None:
    """Stop running job JOB_ID (cooperatively: it stops at its next await and is recorded as killed)."""
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


COMMANDS = (job_list, job_show, job_kill)
