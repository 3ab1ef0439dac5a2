"""``klaviyo-bridge worker`` (run one worker of a pool on the PostgreSQL state), ``worker status``
and ``worker enqueue``. Only parses and prints; the pool lives in ``workers/``."""

from __future__ import annotations

from datetime import datetime, timezone

import click

from ..home import Home
from ..store import workers as sql
from ..store.factory import open_warehouse
from ..workers import EnqueueReport, WorkerOptions, enqueue_due, pool_status, prepare, require_postgres, run_worker
from .auth_cmd import credential_store
from .schedule_common import _control_dir, _fmt_time, failure_options, parse_as_of

WAREHOUSE_HELP = "The PostgreSQL state: postgresql://USER@HOST:PORT/DB."


def _url(url: str | None) -> str:
    return require_postgres(url)


@click.group("worker", invoke_without_command=True)
@click.option("--warehouse", "warehouse_url", help=WAREHOUSE_HELP)
@click.option("--name", help="This worker's name in `worker status` (default HOST:PID).")
@click.option(
    "--concurrency",
    default=4,
    show_default=True,
    type=click.IntRange(1),
    help="Jobs this worker runs at once (each on a different account).",
)
@click.option(
    "--no-schedules",
    is_flag=True,
    help="Only run queued jobs; do not enqueue due schedules (another worker or `worker enqueue` does).",
)
@click.option(
    "--poll",
    "poll_seconds",
    default=5.0,
    show_default=True,
    type=click.FloatRange(0.05),
    help="Seconds between looks for due schedules, stalled jobs and (without NOTIFY) new jobs.",
)
@click.option(
    "--heartbeat",
    "heartbeat_seconds",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0.05),
    help="Seconds between this worker's heartbeats.",
)
@click.option(
    "--stalled-after",
    "stalled_seconds",
    default=30.0,
    show_default=True,
    type=click.FloatRange(0.1),
    help="A worker silent this long is dead: its running job is queued again for another worker.",
)
@failure_options
@click.pass_context
def worker_command(
    ctx: click.Context,
    warehouse_url: str | None,
    name: str | None,
    concurrency: int,
    no_schedules: bool,
    poll_seconds: float,
    heartbeat_seconds: float,
    stalled_seconds: float,
    max_failures: int,
    notify_command: str | None,
) -> None:
    """Run one worker of a pool on the PostgreSQL state, until Ctrl-C / SIGTERM.

    Start it on as many machines as you like (docs/workers.md): each due run is
    executed by exactly one worker, runs on one Klaviyo account never overlap, and
    a job whose worker died is taken over once its heartbeat is stalled. With the
    embedded DuckDB warehouse use `klaviyo-bridge scheduler` instead.
    """
    ctx.ensure_object(Home)
    ctx.meta["worker_warehouse"] = warehouse_url
    if ctx.invoked_subcommand is not None:
        return
    home: Home = ctx.obj
    url = _url(warehouse_url)
    options = WorkerOptions(
        name=name,
        concurrency=concurrency,
        enqueue=not no_schedules,
        poll_seconds=poll_seconds,
        heartbeat_seconds=heartbeat_seconds,
        stalled_seconds=stalled_seconds,
        max_failures=max_failures,
        notify_command=notify_command,
    )

    def ready(worker_id: int) -> None:
        click.echo(
            f"worker {worker_id} started (pid {__import__('os').getpid()}); Ctrl-C to stop (running jobs finish first)", err=True
        )

    run_worker(url, credential_store(home), options, control_dir=_control_dir(home), on_ready=ready)


@worker_command.command("status")
@click.option(
    "--stalled-after",
    "stalled_seconds",
    default=30.0,
    show_default=True,
    type=click.FloatRange(0.1),
    help="Heartbeats older than this are shown as stalled.",
)
@click.pass_context
def worker_status(ctx: click.Context, stalled_seconds: float) -> None:
    """Workers with their heartbeats, the jobs they run, and the queue's counts."""
    url = _url(ctx.meta.get("worker_warehouse"))
    status = pool_status(url, stalled_seconds)
    by_worker: dict[int | None, list[str]] = {}
    for job in status.running:
        by_worker.setdefault(job.worker_id, []).append(
            f"{job.schedule} slot {job.scheduled_for} (job {job.job_id}, attempt {job.attempts + 1}"
            + (f", run {job.run_id}" if job.run_id else "")
            + ")"
        )
    click.echo(f"{len(status.workers)} worker(s)")
    for w in status.workers:
        state = "STALLED" if w.heartbeat_age > stalled_seconds else "alive"
        who = f"{w.name} on {w.host} pid {w.pid}" if w.name else "(not registered by klaviyo-bridge)"
        click.echo(
            f"  worker {w.worker_id}: {who}, {state}, last heartbeat {_fmt_time(w.last_heartbeat)} "
            f"({w.heartbeat_age:.1f}s ago), concurrency {w.concurrency or '?'}"
        )
        for line in by_worker.pop(w.worker_id, []):
            click.echo(f"    running {line}")
    for line in (line for lines in by_worker.values() for line in lines):
        click.echo(f"  running without a live worker (taken over once stalled): {line}")
    counts = status.counts
    click.echo("jobs: " + ", ".join(f"{counts.get(k, 0)} {k}" for k in ("todo", "doing", "succeeded", "failed")))


@worker_command.command("enqueue")
@click.option("--now", "as_of", metavar="TIME", help="Enqueue what is due at TIME (ISO 8601; default: now).")
@click.pass_context
def worker_enqueue(ctx: click.Context, as_of: str | None) -> None:
    """Enqueue the schedules' due runs once (what a worker does every --poll) and exit."""
    home: Home = ctx.obj
    url = _url(ctx.meta.get("worker_warehouse"))
    now = parse_as_of(as_of, "2026-01-01T00:10:00Z") or datetime.now(timezone.utc)
    prepare(url)

    wh = open_warehouse(url)
    conn = sql.connect(url)
    try:
        report: EnqueueReport = enqueue_due(wh, credential_store(home), conn, now)
    finally:
        conn.close()
        wh.close()
    if report.busy:
        click.echo("another enqueuer is acting right now; nothing done")
        return
    for name, slot, job_id in report.enqueued:
        click.echo(f"{name}: slot {slot.isoformat()} enqueued (job {job_id})")
    for name in report.waiting:
        click.echo(f"{name}: due, waits for its previous run")
    if not report.enqueued and not report.waiting:
        click.echo("nothing due")


COMMANDS = (worker_command,)
