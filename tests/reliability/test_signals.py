"""SIGTERM and Ctrl-C (SIGINT) in the middle of an import, an export, ``sched:run`` and the
scheduler: the job ends ``killed`` (never left ``running``, never ``error`` with an empty
message), its record says what was committed and what was not, and what was committed before
stays. And ``job:kill`` never signals a process that is not the job's own (a stale pid file).

Real subprocesses of the CLI against the emulator on 127.0.0.1. The emulator sits behind a gate
that holds one chosen request until the test has sent its signal: the signal always lands while
a request is in flight, without any timing guess. Every wait is bounded (events and subprocess
timeouts), so a process that ignores the signal fails the test instead of hanging it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pytest

from klaviyo_bridge.jobs import live_file, process_identity
from klaviyo_bridge.store.factory import open_warehouse
from klaviyo_emulator.app import create_app
from klaviyo_emulator.settings import DEFAULT_API_KEY, EmulatorSettings

from .helpers import FIGURES, rows_of, serve_app

DATA = dict(seed=8, profiles=350, events=50, lists=2, rate_limits=False, job_profiles_per_second=1e9)
WAIT = 60  # seconds: the bound of every wait (a healthy run takes a fraction of it)


class Gate:
    """ASGI wrapper: request number ``nth`` of ``operation`` waits (after ``arrived`` is set) until
    ``release`` is set or its client goes away; every other request passes straight through."""

    def __init__(self, app, operation: str, nth: int) -> None:
        self.app, self.operation, self.nth = app, operation, nth
        self.state = app.state
        self.seen = 0
        self.arrived, self.release = threading.Event(), threading.Event()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            op, _ = self.app.state.emulator.match(scope["path"], scope["method"])
            if op and op.operation_id == self.operation:
                self.seen += 1
                if self.seen == self.nth:
                    self.arrived.set()
                    for _ in range(WAIT * 100):
                        if self.release.is_set():
                            break
                        await asyncio.sleep(0.01)
        return await self.app(scope, receive, send)


@pytest.fixture
def gated(request):
    operation, nth = request.param
    gate = Gate(create_app(EmulatorSettings(**DATA)), operation, nth)
    with serve_app(gate) as url:
        yield gate, url
    gate.release.set()


def cli(home: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "klaviyo_bridge", "--home", str(home), *args]


def start(argv: list[str]) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLAVIYO_")}
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def stop_at_the_gate(proc: subprocess.Popen, gate: Gate, sig: int) -> tuple[int, str]:
    if not gate.arrived.wait(WAIT):
        proc.kill()
        out, err = proc.communicate(timeout=WAIT)
        pytest.fail(f"the run never reached the gated request:\n{err[-3000:]}")
    proc.send_signal(sig)
    gate.release.set()  # the request in flight may end now (an export finishes its batch)
    out, err = proc.communicate(timeout=WAIT)
    return proc.returncode, out + err


def import_config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "profiles.yml"
    path.write_text(
        f"in:\n  type: klaviyo\n  data_source: profiles\n  api_token: {DEFAULT_API_KEY}\n  base_url: {url}\n"
        "  incremental: true\n  start_time: '2000-01-01T00:00:00'\nout:\n  mode: merge\n"
    )
    return path


def export_settings(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "export.yml"
    path.write_text(
        f"type: klaviyo\napi_token: {DEFAULT_API_KEY}\nbase_url: {url}\noperation: add\n"
        "list_identify_type: name\nlist_value: Signals\nconcurrency: 1\n"
    )
    return path


EXPORT_SQL = "SELECT 'p' || i || '@example.com' AS email FROM range(25000) t(i)"


def committed_before(home: Path):
    """A table, a cursor and an earlier run committed before the run that is stopped."""
    with open_warehouse(home / "warehouse.duckdb") as wh:
        wh.write("klaviyo", "keep", pa.table({"id": ["a", "b"]}), "append", cursors={"keep-job": "2025-01-01"})


def assert_committed_kept(wh):
    assert rows_of(wh, "klaviyo", "keep") == [("'a'",), ("'b'",)]
    assert wh.state.cursor("keep-job") == "2025-01-01"


@pytest.mark.parametrize("gated", [("get_profiles", 2)], indirect=True)
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_stopping_an_import_ends_it_killed_saying_nothing_was_committed(tmp_path, gated, sig, code):
    gate, url = gated
    home = tmp_path / "home"
    committed_before(home)
    proc = start(cli(home, "connector:issue", str(import_config(tmp_path, url)), "-d", "klaviyo", "-t", "profiles"))
    returncode, said = stop_at_the_gate(proc, gate, sig)
    assert returncode == code, said
    assert "Traceback" not in said
    assert ("Terminated." in said) if sig == signal.SIGTERM else ("Aborted." in said or "Interrupted." in said)
    with open_warehouse(home / "warehouse.duckdb") as wh:
        [run] = wh.state.runs("klaviyo.profiles")
        fetched = run.rows_read  # pages of other windows may have arrived before the signal: 0..N, said the same way
        assert run.status == "killed" and run.rows_written == 0 and fetched % 50 == 0 and fetched < 350, run
        assert f"nothing was committed: the {fetched} records fetched were discarded and the cursor did not move" in run.error, (
            run.error
        )
        assert f"{fetched} records fetched, 0 written" in said and "nothing was committed" in said
        assert wh.state.cursor("klaviyo.profiles") is None and not wh.table_columns("klaviyo", "profiles")
        assert_committed_kept(wh)
    FIGURES["signal cases"] += 1


@pytest.mark.parametrize("gated", [("bulk_import_profiles", 2)], indirect=True)
def test_sigterm_during_an_export_ends_it_killed_saying_what_was_sent(tmp_path, gated):
    gate, url = gated
    home = tmp_path / "home"
    committed_before(home)
    proc = start(cli(home, "query", "-d", "klaviyo", "--result-settings", str(export_settings(tmp_path, url)), EXPORT_SQL))
    returncode, said = stop_at_the_gate(proc, gate, signal.SIGTERM)
    assert returncode == 143 and "Traceback" not in said, said
    with open_warehouse(home / "warehouse.duckdb") as wh:
        [run] = [r for r in wh.state.runs() if r.kind == "export"]
        assert run.status == "killed" and run.rows_read == 25000, run
        assert "stopped before the end: of 25000 rows, 10000 have an outcome (10000 submitted)" in run.error, run.error
        # the second batch's request was out (held by the gate): neither sent for sure nor not sent
        assert "10000 were being sent when it stopped; the other 5000 were not sent" in run.error, run.error
        assert f"--resume {run.run_id} reads back" in run.error
        assert_committed_kept(wh)
    FIGURES["signal cases"] += 1


def _export_schedule(home: Path, tmp_path: Path, url: str) -> None:
    done = subprocess.run(
        cli(
            home,
            "sched:create",
            "weekly",
            "0 7 * * 1",
            "-d",
            "klaviyo",
            "--result-settings",
            str(export_settings(tmp_path, url)),
            EXPORT_SQL,
        ),
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("gated", [("bulk_import_profiles", 2)], indirect=True)
def test_sigterm_during_sched_run_ends_the_job_killed(tmp_path, gated):
    gate, url = gated
    home = tmp_path / "home"
    committed_before(home)
    _export_schedule(home, tmp_path, url)
    proc = start(cli(home, "sched:run", "weekly"))
    returncode, said = stop_at_the_gate(proc, gate, signal.SIGTERM)
    assert "Traceback" not in said and returncode != 0, said
    with open_warehouse(home / "warehouse.duckdb") as wh:
        [job] = wh.state.jobs(schedule="weekly")
        assert job.status == "killed" and job.ended_at is not None, job
        assert job.error.startswith("stopped by SIGTERM: stopped before the end: of 25000 rows"), job.error
        assert "were not sent" in job.error
        assert_committed_kept(wh)
    FIGURES["signal cases"] += 1


@pytest.mark.parametrize("gated", [("get_profiles", 2)], indirect=True)
@pytest.mark.parametrize("once", [False, True], ids=["daemon", "once"])
def test_sigterm_stops_the_scheduler_and_its_running_import_ends_killed(tmp_path, gated, once):
    gate, url = gated
    home = tmp_path / "home"
    committed_before(home)
    done = subprocess.run(
        cli(home, "connector:create", "hourly", "@hourly", "klaviyo", "profiles", str(import_config(tmp_path, url))),
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert done.returncode == 0, done.stderr
    with open_warehouse(home / "warehouse.duckdb") as wh:  # the last slot two hours ago: one is due
        wh.state.update_schedule("hourly", last_scheduled_for=datetime.now(timezone.utc) - timedelta(hours=2))
    proc = start(cli(home, "scheduler", *(["--once"] if once else ["--poll", "0.5"])))
    returncode, said = stop_at_the_gate(proc, gate, signal.SIGTERM)
    assert "Traceback" not in said, said
    with open_warehouse(home / "warehouse.duckdb") as wh:
        [job] = wh.state.jobs(schedule="hourly")
        assert job.status == "killed" and job.ended_at is not None, (job, said)
        assert "scheduler was shut down" in job.error or "SIGTERM" in job.error, job.error
        assert "nothing was committed" in job.error and job.rows_written == 0, job.error
        assert not {
            k for k in wh.state.cursors() if k.endswith(":hourly")
        }  # none for it (import:hourly, or connector:hourly before)
        assert_committed_kept(wh)
    FIGURES["signal cases"] += 1


# --- job:kill and stale pid files -------------------------------------------------------------


def _running_job(home: Path, pid: int, proc: str | None) -> str:
    with open_warehouse(home / "warehouse.duckdb") as wh:
        run_id = "0123456789abcdef0123456789abcdef"
        wh.state.begin_job(run_id, "klaviyo.profiles", "import", pid=pid, host="here", triggered_by="manual")
    control = home / "jobs"
    control.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = {
        "run_id": run_id,
        "pid": pid,
        "schedule": None,
        "triggered_by": "manual",
        "kind": "import",
        "started_at": "2026-01-01T00:00:00+00:00",
    }
    if proc is not None:
        info["proc"] = proc
    live_file(control, run_id).write_text(json.dumps(info))
    return run_id


@pytest.mark.parametrize("recorded", ["another_identity", "no_identity"])
def test_job_kill_never_signals_a_process_that_is_not_the_jobs(tmp_path, recorded):
    """The job's process died without closing its record; its pid now belongs to an unrelated
    process (here a child of the test, which must survive)."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    bystander = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        run_id = _running_job(home, bystander.pid, "boot:1" if recorded == "another_identity" else None)
        done = subprocess.run(cli(home, "job:kill", run_id[:8]), capture_output=True, text=True, timeout=WAIT)
        assert done.returncode == 0, done.stderr
        assert "not signalled" in done.stdout and f"pid {bystander.pid} now belongs to another process" in done.stdout
        assert bystander.poll() is None, "job:kill signalled an unrelated process"
        with open_warehouse(home / "warehouse.duckdb") as wh:
            job = wh.state.job(run_id)
            assert job.status == "killed" and "now belongs to another process" in job.error
        assert not live_file(home / "jobs", run_id).exists()
    finally:
        bystander.stdin.close()
        bystander.wait(timeout=WAIT)
    FIGURES["signal cases"] += 1


def test_job_kill_of_a_job_whose_process_is_gone_records_it_killed(tmp_path):
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=WAIT)
    run_id = _running_job(home, gone.pid, "boot:1")
    done = subprocess.run(cli(home, "job:kill", run_id), capture_output=True, text=True, timeout=WAIT)
    assert done.returncode == 0 and "is gone" in done.stdout, done.stdout + done.stderr
    with open_warehouse(home / "warehouse.duckdb") as wh:
        assert wh.state.job(run_id).status == "killed"


def test_process_identity_tells_a_reused_pid_apart():
    me = process_identity(os.getpid())
    if me is None:
        pytest.skip("no /proc on this system: the pid's identity cannot be read (job:kill then never signals)")
    assert me == process_identity(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=WAIT)
    assert process_identity(child.pid) in (None,) or process_identity(child.pid) != me
