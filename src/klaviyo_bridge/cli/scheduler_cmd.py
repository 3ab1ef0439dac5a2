"""The scheduler daemon: ``scheduler``. Only parses and prints; the scheduling lives in ``schedule/``."""

from __future__ import annotations

import logging
import os
import signal

import click

from ..home import Home
from ..schedule.scheduler import Scheduler
from ..workers import guard_scheduler
from .auth_cmd import credential_store
from .schedule_common import _control_dir, _open, failure_options, warehouse_option

log = logging.getLogger("klaviyo_bridge.scheduler")


@click.command("scheduler")
@failure_options
@click.option(
    "--poll",
    "poll_seconds",
    default=30.0,
    show_default=True,
    type=click.FloatRange(0.1),
    help="Longest sleep between checks, in seconds.",
)
@click.option("--once", is_flag=True, help="Check once, run what is due, wait for it, and exit.")
@warehouse_option
@click.pass_obj
def scheduler_command(
    home: Home, max_failures: int, notify_command: str | None, poll_seconds: float, once: bool, warehouse_url: str | None
) -> None:
    """Run due schedules, in the foreground, until stopped (Ctrl-C / SIGTERM).

    A slot missed while the scheduler was down runs once on start (not once per
    missed slot); the same schedule never runs twice at once. With the embedded
    DuckDB warehouse the file is closed while no job runs, so other commands work.
    """
    if not log.isEnabledFor(logging.INFO):
        log.setLevel(logging.INFO)  # one line per job start and end, also without -v
    # On a PostgreSQL state: refuses while workers run there, and keeps them out while it runs.
    guard = guard_scheduler(str(warehouse_url or home.ensure().warehouse))
    try:
        _scheduler(home, max_failures, notify_command, poll_seconds, once, warehouse_url)
    finally:
        if guard is not None:
            guard.close()


def _scheduler(
    home: Home, max_failures: int, notify_command: str | None, poll_seconds: float, once: bool, warehouse_url: str | None
) -> None:
    scheduler = Scheduler(
        lambda: _open(home, warehouse_url),
        credential_store(home),
        max_failures=max_failures,
        notify_command=notify_command,
        control_dir=_control_dir(home),
        poll_seconds=poll_seconds,
    )
    if once:
        try:
            started = scheduler.tick()
            scheduler.wait()
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the running jobs end killed, recorded, then exit
            scheduler.shutdown()
            raise
        scheduler.release_if_idle()
        for result in scheduler.results:
            click.echo(f"{result.schedule}: job {result.run_id} {result.status}" + (f": {result.error}" if result.error else ""))
        if not started:
            click.echo("nothing due")
        return
    previous = signal.signal(signal.SIGTERM, lambda *_: scheduler.stop())
    click.echo(f"scheduler started (pid {os.getpid()}); Ctrl-C to stop", err=True)
    try:
        scheduler.run_forever()
    except KeyboardInterrupt:
        scheduler.shutdown()
    finally:
        signal.signal(signal.SIGTERM, previous)


COMMANDS = (scheduler_command,)
