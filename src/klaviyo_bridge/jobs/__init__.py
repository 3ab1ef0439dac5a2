"""Run one job (an import now, an export later), record it, and let it be killed.

Used by ``connector:run`` (in the CLI's own process) and by the scheduler (in worker threads).
Every job is one row of ``_bridge.runs`` (one ``JobRecord``) written by ``StateStore.begin_job``
before any work; the engine (``run_import``, ``export_query``), handed that ``run_id``, fills in
its counts on the same row, and ``end_job`` closes it with the status and the schedule's failure
bookkeeping in one transaction.

Job kinds are a small registry: ``register_kind("import", run_import_job)``. The built-in kinds
(``jobs.kinds``: import, export, workflow) load with their engines when a job first runs; the
scheduler only calls ``execute_job`` and needs no change.

Killing is cooperative: ``job:kill`` drops a marker file ``HOME/jobs/<run_id>.cancel`` (always
writable, even while another process holds the DuckDB file), sets ``cancel_requested`` in the
state when it can, and signals (SIGTERM) a ``connector:run`` process by its recorded pid. The
job's event loop watches for the marker and cancels the running task; the run ends ``killed``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import threading
import traceback
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import aio
from ..errors import (
    BridgeError,
    ConfigError,
    ExportBusy,
    ExportError,
    ExportFailed,
    FatalApiError,
    RetriesExhausted,
    RetryableApiError,
    ScheduleError,
    StoreError,
    error_dict,
)
from ..secrets import ApiKey, CredentialStore, redact, resolve_connection
from ..store.state import StateStore
from ..store.warehouse import Warehouse

log = logging.getLogger("klaviyo_bridge.jobs")

#: Failures that rerunning cannot fix: they count toward disabling a schedule.
CONFIG_FAILURES: tuple[type[BaseException], ...] = (ConfigError, FatalApiError, ExportError, ScheduleError)
#: Failures that may pass by themselves (network, 5xx, 429 after retries): they never count.
TRANSIENT_FAILURES: tuple[type[BaseException], ...] = (RetriesExhausted, RetryableApiError)
CANCEL_POLL_SECONDS = 0.2


class JobCancelled(BridgeError):
    """The job was killed (job:kill)."""


def classify(exc: BaseException) -> str:
    """'killed', 'config', 'transient' or 'other' (only 'config' disables a schedule)."""
    if isinstance(exc, (JobCancelled, asyncio.CancelledError, KeyboardInterrupt, SystemExit)):
        return "killed"
    if isinstance(exc, (ExportFailed, ExportBusy)):
        return "other"  # the run's rows or a busy list: not the schedule's configuration by itself
    if isinstance(exc, CONFIG_FAILURES):
        return "config"
    if isinstance(exc, TRANSIENT_FAILURES):
        return "transient"
    return "other"


@dataclass
class JobSpec:
    """What to run: a saved schedule or an ad-hoc job of some kind."""

    kind: str
    job: str  # history label and cursor key, e.g. "import:daily_import"
    config: Mapping[str, Any]
    database: str | None = None
    table: str | None = None
    schedule: str | None = None
    #: An export's query result already read (an Arrow table): the console reads the user's SQL in
    #: its sandbox (``store.sandbox``) and the export then runs from it. Never stored.
    result: Any = field(default=None, repr=False, compare=False)
    #: Names the same job was stored under before (``connector:NAME`` for ``import:NAME``): an
    #: import with no cursor of its own starts from the first of these that has one.
    earlier_jobs: tuple[str, ...] = ()


@dataclass
class JobContext:
    """Handed to a kind's runner."""

    spec: JobSpec
    run_id: str
    now: datetime
    warehouse: Warehouse
    credentials: CredentialStore
    secrets: list[Any] = field(default_factory=list)  # every key resolved (ApiKey); scrubbed from errors

    def resolved_config(self) -> dict[str, Any]:
        """The config with a saved authentication filled in (and remembered for scrubbing)."""
        config = resolve_connection(self.spec.config, self.credentials)
        for section in (config.get("in"), config):
            if isinstance(section, dict):
                for key in ("api_token", "api_key"):
                    if isinstance(section.get(key), (str, ApiKey)):
                        self.secrets.append(section[key])
        return config


@dataclass
class JobOutcome:
    rows_read: int | None = None
    rows_written: int | None = None
    counts: dict[str, Any] = field(default_factory=dict)


Runner = Callable[[JobContext], Awaitable[JobOutcome]]
KINDS: dict[str, Runner] = {}


def register_kind(kind: str, runner: Runner) -> None:
    """Plug a job kind in (the built-in ones come from ``jobs.kinds``; see ``runner_for``)."""
    KINDS[kind] = runner


def runner_for(kind: str) -> Runner | None:
    """The runner of ``kind``; the built-in kinds (and the engines) load at the first job, so the
    verbs that only list or kill jobs start without them."""
    if kind not in KINDS:
        from .kinds import BUILT_IN

        for name, runner in BUILT_IN.items():
            KINDS.setdefault(name, runner)
    return KINDS.get(kind)


# --- local control: live jobs of this process, marker files for other processes --------------
_LIVE: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Task[Any]]] = {}
_LIVE_LOCK = threading.Lock()
#: Why a job of this process was cancelled (run id -> words for its record), set by ``cancel_local``.
_KILL_REASONS: dict[str, str] = {}
KILLED_BY_JOB_KILL = "killed by job:kill"


def is_live_here(run_id: str) -> bool:
    with _LIVE_LOCK:
        return run_id in _LIVE


def cancel_local(run_id: str, reason: str = KILLED_BY_JOB_KILL) -> bool:
    """Cancel a job running in this process; False when it is not running here. ``reason`` is
    what its record says stopped it (job:kill, SIGTERM, the scheduler stopping...)."""
    with _LIVE_LOCK:
        entry = _LIVE.get(run_id)
        if entry is not None:
            _KILL_REASONS.setdefault(run_id, reason)
    if entry is None:
        return False
    loop, task = entry
    loop.call_soon_threadsafe(task.cancel)
    return True


def cancel_marker(control_dir: Path, run_id: str) -> Path:
    return control_dir / f"{run_id}.cancel"


def live_file(control_dir: Path, run_id: str) -> Path:
    return control_dir / f"{run_id}.json"


def live_jobs(control_dir: Path) -> list[dict[str, Any]]:
    """Jobs some process on this machine says it is running (from HOME/jobs/*.json)."""
    out = []
    for path in sorted(control_dir.glob("*.json")) if control_dir.is_dir() else []:
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return out


def process_identity(pid: int) -> str | None:
    """Who ``pid`` is, beyond its number: the boot and the process's start time (Linux /proc).
    A pid recorded by a job that died may belong to an unrelated process later; the identity
    then differs. None where it cannot be read (another OS, or the process is gone)."""
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except (OSError, ValueError):
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # after "pid (comm) ": state is field 3, starttime 22
    try:
        return f"{boot}:{fields[19]}"
    except IndexError:
        return None


def is_our_process(info: Mapping[str, Any]) -> bool:
    """Whether the process recorded in a live file is still the one that wrote it."""
    pid = info.get("pid")
    if not isinstance(pid, int) or not pid_alive(pid):
        return False
    recorded = info.get("proc")
    return bool(recorded) and process_identity(pid) == recorded


def pid_alive(pid: int | None) -> bool:
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class JobResult:
    """How a job ended: what the scheduler and the CLI report, and what notify receives."""

    run_id: str
    kind: str
    job: str
    schedule: str | None
    status: str
    database: str | None
    table: str | None
    scheduled_for: datetime | None
    started_at: datetime
    ended_at: datetime
    rows: int | None = None
    error: str | None = None
    error_class: str | None = None  # config / transient / other / killed
    #: The error as data (``BridgeError.to_dict()``: code, message, field, row, hint, problems),
    #: redacted like ``error``; what notify and the console read instead of parsing ``error``.
    error_detail: dict[str, Any] | None = None
    consecutive_failures: int | None = None
    disabled: bool = False
    note: str | None = None

    def summary(self) -> dict[str, Any]:
        data = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in self.__dict__.items()}
        data["event"] = "schedule_disabled" if self.disabled else f"job_{self.status}"
        data["duration_seconds"] = round((self.ended_at - self.started_at).total_seconds(), 3)
        return data


async def _watch(run_id: str, task: asyncio.Task[Any], marker: Path | None) -> None:
    while not task.done():
        if marker is not None and marker.exists():
            task.cancel()
            return
        await asyncio.sleep(CANCEL_POLL_SECONDS)


async def _run_cancellable(runner: Runner, ctx: JobContext, marker: Path | None) -> JobOutcome:
    task = asyncio.ensure_future(runner(ctx))
    with _LIVE_LOCK:
        _LIVE[ctx.run_id] = (asyncio.get_running_loop(), task)
    watcher = asyncio.ensure_future(_watch(ctx.run_id, task, marker))
    try:
        return await task
    finally:
        watcher.cancel()
        with _LIVE_LOCK:
            _LIVE.pop(ctx.run_id, None)


def execute_job(
    spec: JobSpec,
    warehouse: Warehouse,
    credentials: CredentialStore,
    *,
    now: datetime | None = None,
    scheduled_for: datetime | None = None,
    triggered_by: str = "manual",
    control_dir: Path | None = None,
    max_failures: int | None = None,
    run_id: str | None = None,
    clock: Callable[[], datetime] | None = None,
) -> JobResult:
    """Run ``spec`` to the end in this thread and record it; never raises for the job's own failure.

    ``now`` is the job's "as of" time (an import's end of range); ``scheduled_for`` the slot a
    scheduled run belongs to. With ``max_failures``, a configuration failure raises the
    schedule's consecutive-failure count and disables it at that count; any success resets it.
    Raises StoreError when the schedule is already running (the run is then not started).
    """
    clock = clock or (lambda: datetime.now(timezone.utc))
    run_id = run_id or uuid.uuid4().hex
    runner = runner_for(spec.kind)
    state = warehouse.state
    as_of = (now or clock()).astimezone(timezone.utc)
    started = datetime.now(timezone.utc)
    state.begin_job(
        run_id,
        spec.job,
        spec.kind,
        schedule=spec.schedule,
        scheduled_for=scheduled_for,
        triggered_by=triggered_by,
        pid=os.getpid(),
        host=socket.gethostname(),
        database=spec.database,
        table=spec.table,
    )
    marker = cancel_marker(control_dir, run_id) if control_dir is not None else None
    ctx = JobContext(spec, run_id, as_of, warehouse, credentials)
    outcome, failure = JobOutcome(), None
    try:
        if control_dir is not None:  # inside the try: a full disk here still ends the job recorded
            control_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            live_file(control_dir, run_id).write_text(
                json.dumps(
                    {
                        "run_id": run_id,
                        "pid": os.getpid(),
                        "proc": process_identity(os.getpid()),
                        "schedule": spec.schedule,
                        "triggered_by": triggered_by,
                        "kind": spec.kind,
                        "started_at": started.isoformat(),
                    }
                )
            )
        if runner is None:
            raise ConfigError(f"no job kind {spec.kind!r} is installed (known: {', '.join(sorted(KINDS))})")
        outcome = aio.run(_run_cancellable(runner, ctx, marker)) or JobOutcome()
    except BaseException as exc:  # noqa: BLE001 - every failure is recorded (Ctrl-C too, then re-raised)
        failure = exc
    finally:
        reason = _KILL_REASONS.pop(run_id, None)
        if marker is not None and marker.exists():
            reason = KILLED_BY_JOB_KILL
        if failure is not None and reason is None and isinstance(failure, (KeyboardInterrupt, SystemExit)):
            reason = "stopped by Ctrl-C or SIGTERM"
        if control_dir is not None:
            for path in (live_file(control_dir, run_id), cancel_marker(control_dir, run_id)):
                path.unlink(missing_ok=True)
    result = _finish(
        state, spec, run_id, outcome, failure, ctx.secrets, scheduled_for, started, triggered_by, max_failures, kill_reason=reason
    )
    if isinstance(failure, (KeyboardInterrupt, SystemExit)):
        raise failure
    if failure is not None:
        # The traceback's frames hold what the engine had open (e.g. an export source whose query
        # session never closed because the run stopped before reading it); the message is recorded,
        # so free them now rather than at some later GC pass: a long-lived scheduler reopens the
        # (DuckDB) warehouse between ticks, which a still-open session would block.
        log.debug("job %s failed", run_id, exc_info=failure)
        traceback.clear_frames(failure.__traceback__)
        failure = None
    return result


def _finish(
    state: StateStore,
    spec: JobSpec,
    run_id: str,
    outcome: JobOutcome,
    failure: BaseException | None,
    secrets: list[str],
    scheduled_for: datetime | None,
    started: datetime,
    triggered_by: str,
    max_failures: int | None,
    kill_reason: str | None = None,
) -> JobResult:
    error_class = classify(failure) if failure is not None else None
    status = "success" if failure is None else "killed" if error_class == "killed" else "error"
    error = None
    error_detail = None
    if failure is not None:
        if error_class == "killed":
            # Who stopped it, then what the engine recorded of what was and was not committed.
            message = kill_reason or KILLED_BY_JOB_KILL
            before = state.job(run_id)
            detail = _engine_account(before.error if before is not None else None)
            if detail:
                message = f"{message}: {detail}"
        else:
            message = f"{type(failure).__name__}: {failure}"
        error = redact(message, secrets)[:2000]  # type: ignore[index]
        error_detail = structured_error(failure, secrets, killed=message if error_class == "killed" else None)
    schedule = state.schedule(spec.schedule) if spec.schedule else None
    changes: dict[str, Any] = {}
    note = None
    failures = schedule.consecutive_failures if schedule else None
    if schedule is not None:
        if status == "success":
            failures = 0
        elif error_class == "config" and max_failures is not None and triggered_by != "manual":
            failures = schedule.consecutive_failures + 1
            if failures >= max_failures and schedule.enabled:
                reason = f"{failures} configuration failures in a row (last: {error})"
                changes.update(enabled=False, disabled_reason=reason[:500], disabled_at=datetime.now(timezone.utc))
                how = {"export": f"sched:update {schedule.name} --enable", "workflow": "workflow push the fixed file again"}.get(
                    schedule.kind, f"connector:update {schedule.name} --enable"
                )
                note = f"schedule disabled after {failures} configuration failures in a row; fix it, then {how}"
        if failures != schedule.consecutive_failures:
            changes["consecutive_failures"] = failures
    state.end_job(
        run_id,
        status,
        error=error,
        note=note,
        rows_read=outcome.rows_read,
        rows_written=outcome.rows_written,
        schedule=spec.schedule,
        schedule_changes=changes,
        error_detail=error_detail,
    )
    record = state.job(run_id)
    return JobResult(
        run_id,
        spec.kind,
        spec.job,
        spec.schedule,
        status,
        spec.database,
        spec.table,
        scheduled_for,
        started,
        datetime.now(timezone.utc),
        rows=record.rows_written if record and record.rows_written is not None else (record.rows_read if record else None),
        error=error,
        error_class=error_class,
        error_detail=error_detail,
        consecutive_failures=failures,
        disabled="enabled" in changes,
        note=note,
    )


def structured_error(failure: BaseException, secrets: list[Any], *, killed: str | None = None) -> dict[str, Any]:
    """``failure`` as data for the job record and notify: ``error_dict`` with every text redacted
    and cut like ``error`` (a stopped run: code "killed" and who stopped it)."""
    data = (
        error_dict(failure)
        if killed is None
        else {"code": "killed", "message": killed, "field": None, "row": None, "hint": None, "problems": []}
    )

    def clean(text: Any) -> Any:
        return redact(text, secrets)[:2000] if isinstance(text, str) else text  # type: ignore[index]

    data = {k: clean(v) for k, v in data.items()}
    data["problems"] = [{k: clean(v) for k, v in p.items()} for p in data.get("problems") or []]
    data["error_type"] = type(failure).__name__
    return data


_ENGINE_STOP_PREFIXES = ("stopped (Ctrl-C or a kill)", "CancelledError: ", "KeyboardInterrupt: ", "JobCancelled: ")


def _engine_account(text: str | None) -> str:
    """The engine's record of a stopped run without its own guess at the cause."""
    text = (text or "").strip()
    changed = True
    while changed:
        changed = False
        for prefix in _ENGINE_STOP_PREFIXES:
            if text.startswith(prefix):
                text = text[len(prefix) :].lstrip(" ;,:")
                changed = True
    return "" if text in ("killed by job:kill", "CancelledError", "KeyboardInterrupt") else text


def notify(command: str | None, result: JobResult, *, timeout: float = 60) -> None:
    """Run ``command`` (a shell command line) with the job summary as JSON on stdin; never raises."""
    if not command:
        return
    payload = json.dumps(result.summary(), sort_keys=True)
    try:
        done = subprocess.run(command, shell=True, input=payload, text=True, capture_output=True, timeout=timeout)
        if done.returncode:
            log.warning("notify command exited %s: %s", done.returncode, done.stderr.strip()[:500])
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("notify command failed: %s", exc)


def request_kill(run_id: str, *, control_dir: Path, state: StateStore | None = None) -> list[str]:
    """Ask a running job to stop, wherever it runs; returns what was done (for the CLI).

    A process is signalled only when it is provably the job's own: its pid is alive AND its
    identity (boot and start time, recorded when the job began) is the same. A pid file left by
    a job whose process died, whose number now belongs to something else, is never trusted: the
    job is then recorded ``killed`` (its process is gone) and the stale file removed."""
    done = []
    info = next((j for j in live_jobs(control_dir) if j.get("run_id") == run_id), None)
    control_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if cancel_local(run_id):
        cancel_marker(control_dir, run_id).write_text("")
        return ["cancel requested", "cancelled in this process"]
    pid = info.get("pid") if info else None
    ours = info is not None and is_our_process(info)
    if info is not None and not ours:
        # The process that wrote the file is gone (or its pid was reused): nothing runs the job.
        live_file(control_dir, run_id).unlink(missing_ok=True)
        cancel_marker(control_dir, run_id).unlink(missing_ok=True)
        why = (
            f"its process (pid {pid}) is gone"
            if not pid_alive(pid if isinstance(pid, int) else None)
            else f"pid {pid} now belongs to another process (the job's own ended without closing its record)"
        )
        done.append(f"not signalled: {why}")
        if state is not None:
            try:
                record = state.job(run_id)
                if record is not None and record.status == "running":
                    state.end_job(
                        run_id,
                        "killed",
                        error=f"killed by job:kill; {why}, so the run had already "
                        "stopped: nothing after its last commit was written",
                    )
                    done.append("recorded as killed")
            except StoreError:  # pragma: no cover - best effort
                pass
        return done
    cancel_marker(control_dir, run_id).write_text("")
    done.append("cancel requested")
    if state is not None:
        try:
            state.request_cancel(run_id)
        except StoreError:  # pragma: no cover - best effort
            pass
    if ours and info is not None and info.get("triggered_by") == "manual" and pid is not None and pid != os.getpid():
        try:
            os.kill(int(pid), signal.SIGTERM)
            done.append(f"signalled pid {pid}")
        except OSError:  # pragma: no cover - raced with its exit
            pass
    return done
