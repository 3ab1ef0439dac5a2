"""Many accounts and schedules on N machines: ``klaviyo-bridge worker`` on procrastinate.

The embedded scheduler (``schedule/scheduler.py``) stays the default for the DuckDB setup; this
package is for a PostgreSQL state shared by several worker processes (docs/workers.md).

* **Our schedules stay ours.** ``enqueue_due(now)`` computes due slots with the Scheduler's own
  ``due`` (TD cron dialect, zones, delay, missed slots run once) and, in ONE transaction under the
  enqueuer's advisory lock, moves each slot's ``last_scheduled_for`` (compare-and-set) and inserts
  its procrastinate job: a slot is enqueued exactly once, whatever number of workers race. A
  schedule whose previous run is still queued or running waits (its latest slot runs after).
* **procrastinate executes.** Each job carries a ``lock`` per Klaviyo account (a hash of the base
  URL and key, never the key): runs on one account -- and so on one list -- never overlap,
  runs on different accounts spread over the workers. The task calls ``jobs.execute_job`` with
  ``now = scheduled_for``, so the job record has the seeds' status words as with the scheduler.
* **Recovery.** Workers send heartbeats; a job left ``doing`` by a worker whose heartbeat
  stopped (SIGKILL, power loss) is put back to ``todo`` by any live worker's housekeeping, and
  the attempt that takes it over first closes the killed attempt's record (``error``,
  "interrupted") -- imports then resume from their committed cursor. An export whose killed
  attempt had recorded batches is NOT rerun: its consent writes may have happened, so the new
  attempt ends ``error`` and names the ``query ... --resume RUN`` that checks before resending.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import procrastinate
from procrastinate.job_context import JobContext
from procrastinate.worker import Worker

from ..errors import BridgeError, ConfigError, StoreError
from ..jobs import cancel_local, execute_job, notify
from ..schedule.scheduler import Scheduler, spec_for
from ..secrets import ApiKey, CredentialStore, resolve_connection
from ..store import workers as sql
from ..store.factory import open_warehouse
from ..store.pgconn import libpq_url
from ..store.schedule_state import ScheduleRecord
from ..store.warehouse import Warehouse

log = logging.getLogger("klaviyo_bridge.workers")

TASK = "klaviyo_bridge.run_schedule"
QUEUE = "klaviyo-bridge"
DEFAULT_BASE_URL = "https://a.klaviyo.com"
#: A run refused because its schedule already has a running record elsewhere is tried again.
BUSY_RETRIES = 20
BUSY_WAIT_SECONDS = 30


class ScheduleBusy(BridgeError):
    """The schedule has a running job record of another process; procrastinate retries later."""


def is_postgres_url(url: str | None) -> bool:
    return bool(url) and str(url).startswith(("postgresql://", "postgres://"))


def require_postgres(url: str | None) -> str:
    if url is None or not is_postgres_url(url):
        raise ConfigError(
            "klaviyo-bridge worker needs the state in PostgreSQL (--warehouse postgresql://...); "
            "with the embedded DuckDB warehouse run `klaviyo-bridge scheduler` (one process) instead",
            key="warehouse",
        )
    return url


def account_lock(record: ScheduleRecord, credentials: CredentialStore) -> str:
    """The procrastinate lock of a schedule's runs: one per Klaviyo account it touches.

    A hash of the base URL and the key (resolved from the saved authentication), never the key
    itself; a schedule whose key cannot be resolved gets a lock of its own (its run then fails
    with the real reason)."""
    config: Mapping[str, Any] = record.config
    section: Any = config.get("in") if record.kind == "import" else config.get("result_settings")
    if isinstance(section, Mapping):
        try:
            resolved = resolve_connection({"in": dict(section)} if record.kind == "import" else section, credentials)
        except BridgeError:
            resolved = {}
        part = resolved.get("in") if record.kind == "import" else resolved
        if isinstance(part, Mapping):
            key = part.get("api_token") or part.get("api_key")
            if isinstance(key, ApiKey):
                key = key.reveal()
            if isinstance(key, str) and key:
                base = str(part.get("base_url") or DEFAULT_BASE_URL).rstrip("/")
                return "account:" + hashlib.sha256(f"{base}\0{key}".encode()).hexdigest()[:24]
    return f"schedule:{record.name}"


# --- the enqueuer ------------------------------------------------------------------------------
@dataclass
class EnqueueReport:
    """What one enqueue pass did."""

    enqueued: list[tuple[str, datetime, int]] = field(default_factory=list)  # schedule, slot, job id
    waiting: list[str] = field(default_factory=list)  # due, but the previous run is queued or running
    busy: bool = False  # another enqueuer held the lock: nothing done by this one


def enqueue_due(warehouse: Warehouse, credentials: CredentialStore, conn: Any, now: datetime) -> EnqueueReport:
    """Enqueue every slot due at ``now``, each exactly once (see the module docstring)."""
    now = now.astimezone(timezone.utc)
    report = EnqueueReport()
    with sql.enqueue_transaction(conn) as tx:
        if tx is None:
            report.busy = True
            return report
        pending = tx.pending_schedules(TASK)
        for record, fire in Scheduler(warehouse, credentials).due(now):
            if record.name in pending:
                report.waiting.append(record.name)
                continue
            slot = fire.scheduled_at.astimezone(timezone.utc)
            assert record.last_scheduled_for is not None  # due() skips schedules without one
            if not tx.advance(record.name, record.last_scheduled_for, slot):
                continue  # changed since due() read it (updated, disabled): the next pass sees it
            job_id = tx.defer(
                queue=QUEUE,
                task_name=TASK,
                lock=account_lock(record, credentials),
                queueing_lock=f"slot:{record.name}:{slot.isoformat()}",
                args={"schedule": record.name, "scheduled_for": slot.isoformat()},
            )
            report.enqueued.append((record.name, slot, job_id))
    for name, slot, job_id in report.enqueued:
        log.info("enqueued %s slot %s (job %s)", name, slot.isoformat(), job_id)
    return report


def pass_on_kills(warehouse: Warehouse) -> None:
    """``job:kill`` from any machine sets ``cancel_requested``: cancel such runs of this process."""
    here, pid = socket.gethostname(), os.getpid()
    for job in warehouse.state.jobs(status="running", limit=1000):
        if job.pid == pid and job.host == here and job.cancel_requested:
            cancel_local(job.run_id)


def recover_stalled(conn: Any, seconds_since_heartbeat: float) -> list[int]:
    """Put our jobs whose worker stopped sending heartbeats back to ``todo``; returns their ids."""
    done = []
    for job_id in sql.stalled_jobs(conn, TASK, seconds_since_heartbeat):
        try:
            conn.execute("SELECT procrastinate_retry_job_v2(%s, now(), NULL, NULL, NULL)", [job_id])
        except Exception as exc:  # noqa: BLE001 - another worker retried it first
            log.debug("job %s not retried: %s", job_id, exc)
            continue
        log.warning("job %s: its worker stopped sending heartbeats; queued again", job_id)
        done.append(job_id)
    return done


# --- the task ----------------------------------------------------------------------------------
@dataclass
class Runtime:
    """What the task needs in a worker process (set by ``run_worker``)."""

    url: str
    warehouse: Warehouse
    credentials: CredentialStore
    control_dir: Path | None = None
    max_failures: int = 3
    notify_command: str | None = None
    stalled_seconds: float = 30.0
    worker: Any = None  # procrastinate.worker.Worker
    worker_id: int | None = None  # procrastinate's id, once registered (it forgets it on stop)
    refused: str | None = None  # a scheduler took the state while this worker started: it stopped

    def connect(self) -> Any:
        return sql.connect(self.url)


_RUNTIME: Runtime | None = None


def run_schedule(context: JobContext, schedule: str, scheduled_for: str) -> str:
    """One enqueued slot of ``schedule``: close a killed attempt's record, then execute the job."""
    rt = _RUNTIME
    if rt is None:  # pragma: no cover - only run_worker registers the task with a runtime
        raise StoreError("the worker runtime is not set up")
    job = context.job
    job_id, attempt = int(job.id or 0), int(job.attempts)
    worker_id = getattr(rt.worker, "worker_id", None)
    state = rt.warehouse.state
    slot = datetime.fromisoformat(scheduled_for)
    conn = rt.connect()
    try:
        earlier = sql.attempts(conn, job_id)
        for a in earlier:
            if a.status == "running" and a.heartbeat_age is not None and a.heartbeat_age < rt.stalled_seconds:
                # Judged stalled, but its worker's heartbeat is back (a slow machine): it is still
                # running; never close a live run's record nor run its slot beside it. Try later.
                raise ScheduleBusy(f"attempt {a.attempt + 1} (run {a.run_id}) is still running on {a.worker}")
        finished = [a for a in earlier if a.finished_on_its_own]
        if finished:
            # Judged stalled while its worker was only late, an earlier attempt ran the slot to its
            # end: the slot is done (whatever its status says); running it again would be a second run.
            a = finished[-1]
            log.warning(
                "job %s: slot %s of %s already done by attempt %s (run %s, %s); attempt %s skips it",
                job_id,
                scheduled_for,
                schedule,
                a.attempt + 1,
                a.run_id,
                a.status,
                attempt + 1,
            )
            return f"skipped: already done by attempt {a.attempt + 1} (run {a.run_id}, {a.status})"
        for a in earlier:
            if a.status == "running":
                who = a.worker or f"worker {a.worker_id}"
                state.end_job(
                    a.run_id,
                    "error",
                    error=f"interrupted: {who} stopped sending heartbeats before the "
                    "job ended; nothing after its last commit was written",
                    note=f"taken over by attempt {attempt + 1} (procrastinate job {job_id})",
                )
                sql.mark_taken_over(conn, a.run_id, attempt)
        record = state.schedule(schedule)
        if record is None or not record.enabled:
            log.info("job %s: schedule %s is %s; nothing run", job_id, schedule, "gone" if record is None else "disabled")
            return "skipped"
        run_id = uuid.uuid4().hex
        # Consent writes may have gone out from a dead attempt: never resend them blind. An export
        # that recorded batches is resumed by hand (the resume reads the list back first); a
        # workflow's export tasks record runs of their own, so any dead workflow attempt counts.
        sent = [
            a.run_id
            for a in earlier
            if a.status is not None and (a.kind == "workflow" or (a.kind == "export" and sql.batches_sent(conn, a.run_id)))
        ]
        sql.link_attempt(conn, run_id, job_id, worker_id, attempt)
    finally:
        conn.close()
    triggered_by = "recovery" if attempt else "schedule"
    if sent:
        spec = spec_for(record)
        how = (
            f"check its export runs (klaviyo-bridge job:show {sent[-1]}), then run it by hand"
            if record.kind == "workflow"
            else f"resume it, which checks before resending: klaviyo-bridge query ... --resume {sent[-1]}"
        )
        state.begin_job(
            run_id,
            spec.job,
            spec.kind,
            schedule=record.name,
            scheduled_for=slot,
            triggered_by=triggered_by,
            pid=os.getpid(),
            host=socket.gethostname(),
            database=record.database,
            table=record.table,
        )
        state.end_job(
            run_id,
            "error",
            schedule=record.name,
            error=f"not rerun: the interrupted attempt (run {sent[-1]}) may have sent consent or list writes; {how}",
        )
        return "error"
    try:
        result = execute_job(
            spec_for(record),
            rt.warehouse,
            rt.credentials,
            now=slot,
            scheduled_for=slot,
            triggered_by=triggered_by,
            control_dir=rt.control_dir,
            max_failures=rt.max_failures,
            run_id=run_id,
        )
    except StoreError as exc:  # another process has a running record of this schedule
        raise ScheduleBusy(str(exc)) from None
    log.info("ended %s (job %s, run %s): %s", schedule, job_id, run_id, result.status)
    if result.status == "error" or result.disabled:
        notify(rt.notify_command, result)
    return result.status


def make_app(url: str) -> procrastinate.App:
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=libpq_url(url)))
    app.task(
        name=TASK,
        queue=QUEUE,
        pass_context=True,
        retry=procrastinate.RetryStrategy(max_attempts=BUSY_RETRIES, wait=BUSY_WAIT_SECONDS, retry_exceptions={ScheduleBusy}),
    )(run_schedule)
    return app


# --- the worker process ------------------------------------------------------------------------
@dataclass
class WorkerOptions:
    name: str | None = None
    concurrency: int = 4
    enqueue: bool = True  # run the enqueuer step (one worker at a time acts) on the wall clock
    poll_seconds: float = 5.0
    heartbeat_seconds: float = 10.0
    stalled_seconds: float = 30.0
    max_failures: int = 3
    notify_command: str | None = None


def prepare(url: str) -> None:
    """procrastinate's schema and our tables, and the ``_bridge`` state (idempotent)."""
    conn = sql.connect(require_postgres(url))
    try:
        sql.ensure_schema(conn)
    finally:
        conn.close()


def refuse_scheduler(conn: Any) -> str | None:
    """Why a worker may not run on this state: a ``klaviyo-bridge scheduler`` holds it (or None)."""
    holders = sql.scheduler_holders(conn)
    if not holders:
        return None
    pid, addr, _app = holders[0]
    where = f" from {addr}" if addr else ""
    return (
        f"a `klaviyo-bridge scheduler` runs on this state (PostgreSQL backend pid {pid}{where}); the scheduler "
        "and workers never run on one state at once (a slot could run twice): stop the scheduler first, "
        "or keep using it instead of workers"
    )


def guard_scheduler(url: str, stalled_seconds: float = 30.0) -> Any:
    """Before ``klaviyo-bridge scheduler`` on a PostgreSQL state: mark the state as the scheduler's
    and refuse (ConfigError) when live workers are registered on it. Returns the connection that
    holds the mark: keep it open while the scheduler runs, close it after. None for DuckDB."""
    if not is_postgres_url(url):
        return None
    conn = sql.connect(url)
    try:
        sql.hold_scheduler_lock(conn)  # first: a worker starting from now on sees it
        live = sql.live_workers(conn, stalled_seconds)
    except BaseException:
        conn.close()
        raise
    if live:
        conn.close()
        names = ", ".join(f"{w.name or w.worker_id}" + (f" on {w.host}" if w.host else "") for w in live[:5])
        raise ConfigError(
            f"{len(live)} live worker(s) run on this state ({names}): the scheduler and workers never "
            "run on one state at once (a slot could run twice). See them with "
            "`klaviyo-bridge worker --warehouse URL status`; stop them first, or let the workers run "
            "the schedules instead of the scheduler",
            key="warehouse",
        )
    return conn


def run_worker(
    url: str,
    credentials: CredentialStore,
    options: WorkerOptions,
    *,
    control_dir: Path | None = None,
    clock: Callable[[], datetime] | None = None,
    on_ready: Callable[[int], None] | None = None,
) -> None:
    """Run one worker until SIGINT/SIGTERM (running jobs finish first)."""
    global _RUNTIME
    require_postgres(url)
    warehouse = open_warehouse(url)
    try:
        prepare(url)
        conn = sql.connect(url)
        try:
            refused = refuse_scheduler(conn)
        finally:
            conn.close()
        if refused:
            raise ConfigError(refused, key="warehouse")
        _RUNTIME = Runtime(
            url, warehouse, credentials, control_dir, options.max_failures, options.notify_command, options.stalled_seconds
        )
        asyncio.run(_serve(url, _RUNTIME, options, clock or (lambda: datetime.now(timezone.utc)), on_ready))
        if _RUNTIME.refused:
            raise ConfigError(_RUNTIME.refused, key="warehouse")
    finally:
        _RUNTIME = None
        warehouse.close()


async def _serve(
    url: str, rt: Runtime, options: WorkerOptions, clock: Callable[[], datetime], on_ready: Callable[[int], None] | None
) -> None:
    app = make_app(url)
    name = options.name or f"{socket.gethostname()}:{os.getpid()}"
    async with app.open_async():
        worker = Worker(
            app,
            queues=[QUEUE],
            name=name,
            concurrency=options.concurrency,
            fetch_job_polling_interval=options.poll_seconds,
            update_heartbeat_interval=options.heartbeat_seconds,
            stalled_worker_timeout=options.stalled_seconds,
        )
        rt.worker = worker
        house = asyncio.create_task(_housekeeping(worker, rt, options, name, clock, on_ready))
        try:
            await worker.run()  # type: ignore[no-untyped-call]
        finally:
            house.cancel()
            await asyncio.gather(house, return_exceptions=True)
            worker_id = worker.worker_id if worker.worker_id is not None else rt.worker_id
            if worker_id is not None:
                await asyncio.to_thread(_unregister, rt, int(worker_id))


def _unregister(rt: Runtime, worker_id: int) -> None:
    conn = rt.connect()
    try:
        sql.unregister_worker(conn, worker_id)
    finally:
        conn.close()


async def _housekeeping(
    worker: Any,
    rt: Runtime,
    options: WorkerOptions,
    name: str,
    clock: Callable[[], datetime],
    on_ready: Callable[[int], None] | None,
) -> None:
    """Say who this worker is; then, every poll, requeue stalled jobs and enqueue due slots."""
    while worker.worker_id is None:
        await asyncio.sleep(0.05)
    worker_id = rt.worker_id = int(worker.worker_id)
    conn = await asyncio.to_thread(rt.connect)
    try:
        await asyncio.to_thread(
            sql.register_worker, conn, worker_id, name, socket.gethostname(), os.getpid(), options.concurrency
        )
        # A scheduler that started between our first check and this registration did not see us.
        refused = await asyncio.to_thread(refuse_scheduler, conn)
        if refused:
            rt.refused = refused
            worker.stop()
            return
        log.info("worker %s (id %s) ready", name, worker_id)
        if on_ready is not None:
            on_ready(worker_id)
        while True:
            try:
                await asyncio.to_thread(recover_stalled, conn, options.stalled_seconds)
                await asyncio.to_thread(pass_on_kills, rt.warehouse)
                if options.enqueue:
                    await asyncio.to_thread(enqueue_due, rt.warehouse, rt.credentials, conn, clock())
            except BridgeError as exc:
                log.error("worker housekeeping: %s", exc)
            except Exception as exc:  # noqa: BLE001 - a lost connection: reconnect at the next pass
                log.error("worker housekeeping: %s: %s", type(exc).__name__, exc)
                conn.close()
                conn = await asyncio.to_thread(rt.connect)
            await asyncio.sleep(options.poll_seconds)
    finally:
        conn.close()


# --- status ------------------------------------------------------------------------------------
@dataclass
class PoolStatus:
    workers: list[sql.WorkerRow]
    running: list[sql.JobRow]
    counts: dict[str, int]
    stalled_seconds: float


def pool_status(url: str, stalled_seconds: float = 30.0) -> PoolStatus:
    conn = sql.connect(require_postgres(url))
    try:
        sql.ensure_schema(conn)
        return PoolStatus(
            sql.worker_rows(conn), sql.job_rows(conn, TASK, ("doing",)), sql.job_counts(conn, TASK), stalled_seconds
        )
    finally:
        conn.close()
