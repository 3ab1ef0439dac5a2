"""The scheduler: start each saved schedule when it is due, one run at a time per schedule.

``klaviyo-bridge scheduler`` runs ``Scheduler.run_forever`` in the foreground (a service
manager keeps it alive). The clock and the sleep are injectable, so tests drive it over days,
months and DST changes without waiting.

Rules (documented in docs/schedules.md):

* A schedule's slots are its cron times (in its time zone) strictly after its
  ``last_scheduled_for``; a slot is due when its run time (slot + delay) has come.
* **Missed slots run once.** When several slots passed while the scheduler was down (or while
  the previous run of the same schedule was still going), ONE run starts, for the latest of
  them; the earlier ones are skipped, not queued. The run's ``now`` (an import's end of range)
  is the slot's scheduled time, so an incremental import still covers everything since its
  last cursor.
* ``last_scheduled_for`` moves in the same transaction that records the run as started
  (``StateStore.begin_job``): after a crash a slot is never started twice, and a slot the
  scheduler had not started yet is started after the restart.
* A run left ``running`` by a process that is gone (crash, kill -9, power loss) is marked
  failed ("interrupted") on the next tick, and its slot is run again once (a second
  interruption of the same slot is not retried). Only runs recorded on this host are judged.
* Never the same schedule twice at once: one in-memory guard per scheduler, and ``begin_job``
  refuses a second running row for a schedule across processes.
* Failures: see ``jobs.execute_job`` -- ``max_failures`` configuration failures in a row
  disable the schedule; transient ones never count. ``notify_command`` gets the job summary
  as JSON on stdin when a job fails or a schedule is disabled.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ..errors import ScheduleError, StoreError
from ..jobs import JobResult, JobSpec, cancel_local, execute_job, is_live_here, notify, pid_alive
from ..secrets import CredentialStore
from ..store.state import ScheduleRecord, StateStore
from ..store.warehouse import Warehouse
from .cron import CronSchedule, Fire

log = logging.getLogger("klaviyo_bridge.scheduler")

#: What versions before issue 18 named a schedule's job (its runs' label and an import's cursor
#: key): the CLI verb namespace of its kind. Stored cursors and run records keep these words, so
#: ``spec_for`` names them as the job's earlier names and an import resumes from such a cursor.
LEGACY_LABEL_PREFIX = {"import": "connector", "export": "sched"}
#: Windows tried, smallest first, to find the latest missed slot without walking every slot.
_SPANS = (
    timedelta(minutes=2),
    timedelta(hours=3),
    timedelta(days=3),
    timedelta(days=40),
    timedelta(days=400),
    timedelta(days=3700),
)
_ONE_US = timedelta(microseconds=1)
#: ``wait`` waits in slices this long: Python runs a signal's handler in the main thread only, and
#: a SIGTERM the kernel hands to another thread (a job's, a resolver's) does not wake a main
#: thread blocked in an untimed wait: ``scheduler --once`` then heard it only when its job ended.
WAIT_SLICE_SECONDS = 0.2


def job_label(record: ScheduleRecord) -> str:
    """A schedule's job name, stored as its runs' label and as an import's cursor key: the kind
    in the library's words (import, export, workflow) and the schedule's name. Never a CLI verb:
    renaming a command must not orphan stored state."""
    return f"{record.kind}:{record.name}"


def legacy_labels(record: ScheduleRecord) -> tuple[str, ...]:
    """The names older versions stored for the same job (``connector:NAME``, ``sched:NAME``)."""
    prefix = LEGACY_LABEL_PREFIX.get(record.kind)
    return (f"{prefix}:{record.name}",) if prefix else ()


def spec_for(record: ScheduleRecord) -> JobSpec:
    return JobSpec(
        record.kind,
        job_label(record),
        record.config,
        record.database,
        record.table,
        record.name,
        earlier_jobs=legacy_labels(record),
    )


def latest_due(schedule: CronSchedule, after: datetime, now: datetime) -> Fire | None:
    """The latest slot scheduled strictly after ``after`` whose run time is at or before ``now``."""
    delay = timedelta(seconds=schedule.delay_seconds)
    base = after + delay  # next_fires compares run times: run > after + delay <=> scheduled > after
    first = schedule.next_fires(base, 1)
    if not first or first[0].run_at > now:
        return None
    for span in _SPANS:
        cursor, found = max(base, now - span), None
        while True:
            batch = schedule.next_fires(cursor, 64)
            for fire in batch:
                if fire.run_at > now:
                    break
                found = fire
            else:
                cursor = batch[-1].run_at
                continue
            break
        if found is not None:
            return found
    return first[0]  # pragma: no cover - a slot every 10 years at most


@dataclass
class _Running:
    run_id: str
    thread: threading.Thread
    scheduled_for: datetime
    #: Set when the job's worker has recorded its end. Waiting on it, not on ``thread.join()``: a
    #: Ctrl-C that lands inside ``join`` makes Python mark the still-running thread stopped
    #: (bpo-45274), and the shutdown that follows would not wait for the job to record ``killed``.
    done: threading.Event = field(default_factory=threading.Event)


class Scheduler:
    """Starts due schedules in worker threads; ``tick`` is one pass, ``run_forever`` the loop."""

    def __init__(
        self,
        warehouse: Warehouse | Callable[[], Warehouse],
        credentials: CredentialStore,
        *,
        clock: Callable[[], datetime] | None = None,
        sleep: Callable[[float], None] | None = None,
        max_failures: int = 3,
        notify_command: str | None = None,
        control_dir: Path | None = None,
        poll_seconds: float = 30.0,
    ) -> None:
        if max_failures < 1:
            raise ScheduleError("max failures must be at least 1")
        # A factory lets run_forever close the warehouse between ticks when no job runs, so other
        # commands can open an embedded DuckDB file (one process at a time) while the scheduler idles.
        self._factory: Callable[[], Warehouse] | None = None
        self._warehouse: Warehouse | None = None
        if callable(warehouse) and not isinstance(warehouse, Warehouse):
            self._factory = warehouse
        else:
            self._warehouse = warehouse
        self.credentials = credentials
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.stop_event = threading.Event()
        self.sleep = sleep or (lambda seconds: self.stop_event.wait(seconds))
        self.max_failures = max_failures
        self.notify_command = notify_command
        self.control_dir = control_dir
        self.poll_seconds = poll_seconds
        self.results: list[JobResult] = []  # every job this scheduler ran, in end order
        self._running: dict[str, _Running] = {}
        self._retry: set[str] = set()  # schedules whose interrupted slot is being run again
        self._shutting_down = False
        self._lock = threading.Lock()
        self._host = socket.gethostname()

    @property
    def warehouse(self) -> Warehouse:
        if self._warehouse is None:
            assert self._factory is not None  # set when no warehouse was given
            self._warehouse = self._factory()
        return self._warehouse

    def release_if_idle(self) -> None:
        """Close a factory-made warehouse while no job runs (it reopens at the next tick)."""
        with self._lock:
            idle = not self._running
        if idle and self._factory is not None and self._warehouse is not None:
            self._warehouse.close()
            self._warehouse = None

    @property
    def state(self) -> StateStore:
        return self.warehouse.state

    # --- one pass ------------------------------------------------------------------------
    def tick(self, now: datetime | None = None) -> list[str]:
        """Recover interrupted runs, pass on kill requests, start what is due; returns run ids started."""
        now = (now or self.clock()).astimezone(timezone.utc)
        self._reap()
        self._recover()
        self._check_kills()
        started = []
        for record, fire in self.due(now):
            run_id = self._start(record, fire)
            if run_id:
                started.append(run_id)
        return started

    def _idle(self, *, say_errors: bool) -> Iterator[tuple[ScheduleRecord, CronSchedule, datetime]]:
        """Enabled schedules that are not running, parsed, with their last slot. One whose timing no
        longer parses (saved before a rule changed) is passed over, logged if SAY_ERRORS."""
        for record in self.state.schedules():
            if not record.enabled or record.name in self._running or record.last_scheduled_for is None:
                continue
            try:
                schedule = CronSchedule.parse(record.cron, record.timezone, record.delay_seconds)
            except ScheduleError as exc:
                if say_errors:
                    log.error("schedule %s: %s", record.name, exc)
                continue
            yield record, schedule, record.last_scheduled_for

    def due(self, now: datetime) -> list[tuple[ScheduleRecord, Fire]]:
        """Enabled schedules with a slot due at ``now`` that are not running."""
        out = []
        for record, schedule, last in self._idle(say_errors=True):
            fire = latest_due(schedule, last, now)
            if fire is not None:
                out.append((record, fire))
        return out

    def next_wake(self, now: datetime) -> datetime | None:
        """The earliest run time of any enabled, idle schedule after ``now``."""
        times = []
        for _, schedule, last in self._idle(say_errors=False):
            base = max(last + timedelta(seconds=schedule.delay_seconds), now)
            fires = schedule.next_fires(base, 1)
            if fires:
                times.append(fires[0].run_at.astimezone(timezone.utc))
        return min(times) if times else None

    def _start(self, record: ScheduleRecord, fire: Fire) -> str | None:
        run_id = uuid.uuid4().hex
        scheduled_for = fire.scheduled_at.astimezone(timezone.utc)
        triggered_by = "recovery" if record.name in self._retry else "schedule"
        self._retry.discard(record.name)
        done = threading.Event()
        thread = threading.Thread(
            target=self._run, name=f"job-{record.name}", daemon=True, args=(record, run_id, scheduled_for, triggered_by, done)
        )
        with self._lock:
            self._running[record.name] = _Running(run_id, thread, scheduled_for, done)
        log.info(
            "started %s (job %s, slot %s%s)",
            job_label(record),
            run_id,
            scheduled_for.isoformat(),
            ", again after an interruption" if triggered_by == "recovery" else "",
        )
        thread.start()
        return run_id

    def _run(
        self, record: ScheduleRecord, run_id: str, scheduled_for: datetime, triggered_by: str, done: threading.Event | None = None
    ) -> None:
        try:
            self._run_job(record, run_id, scheduled_for, triggered_by)
        finally:
            if done is not None:
                done.set()

    def _run_job(self, record: ScheduleRecord, run_id: str, scheduled_for: datetime, triggered_by: str) -> None:
        try:
            result = execute_job(
                spec_for(record),
                self.warehouse,
                self.credentials,
                now=scheduled_for,
                scheduled_for=scheduled_for,
                triggered_by=triggered_by,
                control_dir=self.control_dir,
                max_failures=self.max_failures,
                run_id=run_id,
            )
        except StoreError as exc:  # e.g. another process is running this schedule right now
            log.warning("schedule %s not started: %s", record.name, exc)
            with self._lock:
                self._running.pop(record.name, None)
            return
        except BaseException:  # pragma: no cover - execute_job records the job's own failures
            log.exception("schedule %s: job %s crashed the worker", record.name, run_id)
            with self._lock:
                self._running.pop(record.name, None)
            raise
        if self._shutting_down and result.status == "killed":
            # Stopped with the scheduler, not by a user: run the slot again after the restart.
            self.state.update_schedule(record.name, last_scheduled_for=scheduled_for - _ONE_US)
        seconds = (result.ended_at - result.started_at).total_seconds()
        log.info(
            "ended %s (job %s): %s, %s records in %.1fs%s",
            job_label(record),
            run_id,
            result.status,
            result.rows if result.rows is not None else 0,
            seconds,
            f": {result.error}" if result.error else "",
        )
        with self._lock:
            self.results.append(result)
            self._running.pop(record.name, None)
        if result.status == "error" or result.disabled:
            notify(self.notify_command, result)

    # --- housekeeping --------------------------------------------------------------------
    def _reap(self) -> None:
        with self._lock:
            for name, running in list(self._running.items()):
                if not running.thread.is_alive():
                    self._running.pop(name, None)

    def _recover(self) -> None:
        """Close runs whose process is gone; rerun their slot once."""
        for job in self.state.jobs(status="running", limit=1000):
            if job.host not in (None, self._host) or job.run_id in {r.run_id for r in self._running.values()}:
                continue
            if pid_alive(job.pid) and not (job.pid == os.getpid() and not is_live_here(job.run_id)):
                continue
            self.state.end_job(
                job.run_id,
                "error",
                error=f"interrupted: the process running it (pid {job.pid}) stopped before the job ended",
                note="interrupted; its slot runs again once" if job.triggered_by == "schedule" else None,
            )
            record = self.state.schedule(job.schedule) if job.schedule else None
            if (
                record is not None
                and job.triggered_by == "schedule"
                and job.scheduled_for is not None
                and record.last_run_id == job.run_id
            ):
                self.state.update_schedule(record.name, last_scheduled_for=job.scheduled_for - _ONE_US)
                self._retry.add(record.name)
            log.warning("job %s (%s) was interrupted; marked error", job.run_id, job.schedule or job.job)

    def _check_kills(self) -> None:
        for running in list(self._running.values()):
            try:
                if self.state.cancel_requested(running.run_id):
                    cancel_local(running.run_id)
            except StoreError:  # pragma: no cover
                pass

    def running(self) -> dict[str, str]:
        """schedule name -> run id of its running job."""
        with self._lock:
            return {name: r.run_id for name, r in self._running.items()}

    def wait(self, timeout: float | None = None) -> None:
        """Block until every job started so far has ended (for tests and shutdown)."""
        for running in list(self._running.values()):
            _wait_in_slices(running.done, timeout)
            running.thread.join(1 if timeout is None else timeout)
        self._reap()

    # --- the loop ------------------------------------------------------------------------
    def run_forever(self, *, max_ticks: int | None = None) -> None:
        """Tick, sleep until the next run time (at most ``poll_seconds``), until stopped."""
        ticks = 0
        try:
            while not self.stop_event.is_set():
                self.tick()
                ticks += 1
                if max_ticks is not None and ticks >= max_ticks:
                    break
                now = self.clock()
                wake = self.next_wake(now)
                self.release_if_idle()
                seconds = self.poll_seconds if wake is None else (wake - now).total_seconds()
                if self.running():  # its schedule's next slot is only known once it ends
                    seconds = min(seconds, 1.0)
                self.sleep(min(max(seconds, 0.05), self.poll_seconds))
        finally:
            self.shutdown()

    def stop(self) -> None:
        self.stop_event.set()

    def shutdown(self, timeout: float = 60) -> None:
        """Cancel running jobs (their slots run again on the next start) and wait for them."""
        self._shutting_down = True
        for running in list(self._running.values()):
            cancel_local(running.run_id, "stopped: the scheduler was shut down (Ctrl-C or SIGTERM)")
        self.wait(timeout)
        self._shutting_down = False
        self.release_if_idle()


def _wait_in_slices(event: threading.Event, timeout: float | None) -> bool:
    """``event.wait(timeout)``, woken every ``WAIT_SLICE_SECONDS`` so the main thread runs the
    handlers of signals delivered to other threads meanwhile (a KeyboardInterrupt ends the wait)."""
    end = None if timeout is None else time.monotonic() + timeout
    while True:
        part = WAIT_SLICE_SECONDS if end is None else min(WAIT_SLICE_SECONDS, end - time.monotonic())
        if part <= 0:
            return event.is_set()
        if event.wait(part):
            return True
