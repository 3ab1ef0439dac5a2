"""kill -9 of a real ``klaviyo-bridge query`` subprocess at random points of a mirror and of a
track_events export, then ``--resume RUN_ID`` (or a plain rerun when the kill came before the run
was recorded). Against an emulator on a real socket with 40 ms per response, so the kills land
while members are read, batches sent and removals made.

Mirror: the list ends equal to the query result, every input row and every planned removal has
one outcome, and the emulator's ledger shows no removal of anyone in the result (a member who
should stay is never removed, however the run was cut). Events: Klaviyo holds each event once
(the row hash is the unique_id), every row has one outcome.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa

from klaviyo_bridge.store.factory import open_warehouse
from klaviyo_emulator.app import create_app
from klaviyo_emulator.settings import DEFAULT_API_KEY, EmulatorSettings

from .helpers import FIGURES, serve_app

EMU = dict(
    seed=91,
    profiles=4000,
    events=0,
    lists=2,
    segments=1,
    campaigns=1,
    templates=1,
    flows=1,
    rate_limits=False,
    job_profiles_per_second=200_000,
    latency_ms=40,
)
MEMBERS, STAY, NEW = 3000, 1500, 2000
EVENTS = 6000


class RemovalLedger:
    """ASGI wrapper recording the profile ids of every list removal the emulator applied."""

    def __init__(self, app) -> None:
        self.app, self.removed = app, []
        self.emulator = app.state.emulator

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "DELETE":
            return await self.app(scope, receive, send)
        chunks = []

        async def recv():
            msg = await receive()
            chunks.append(msg.get("body", b""))
            return msg

        status = {}

        async def snd(msg):
            if msg["type"] == "http.response.start":
                status["code"] = msg["status"]
            await send(msg)

        await self.app(scope, recv, snd)
        if 200 <= status.get("code", 500) < 300:
            self.removed += [item["id"] for item in orjson.loads(b"".join(chunks))["data"]]


def _mirror_world(tmp: Path):
    app = create_app(EmulatorSettings(**EMU))
    e = app.state.emulator
    list_id = e.account.records["list"][1].id
    state = e.state
    current = e.snapshot()["list_members"].get(list_id, [])
    state.remove_members(list_id, np.array([state.row_for_id(p) for p in current], dtype=np.int64), e.now())
    state.add_members(list_id, np.arange(MEMBERS, dtype=np.int64), e.now())
    emails = [state.current_identifiers(r)["email"] for r in range(MEMBERS)]
    result = sorted(emails[:STAY]) + [f"new.{i:05d}@example.org" for i in range(NEW)]
    home = tmp / "home"
    home.mkdir(parents=True)
    with open_warehouse(home / "warehouse.duckdb") as wh:
        wh.write("crm", "people", pa.table({"email": result}))
    stay_ids = {state.profile_id(r) for r in range(STAY) if emails[r] in set(result)}
    return RemovalLedger(app), list_id, home, set(result), stay_ids


def _cmd(home: Path, settings: dict, sql: str, resume: str | None = None) -> list[str]:
    path = home.parent / "settings.json"  # a key never goes on a command line: a file only we read
    path.write_text(json.dumps(settings))
    path.chmod(0o600)
    cmd = [sys.executable, "-m", "klaviyo_bridge", "--home", str(home), "query", "-d", "crm", "--result-settings", str(path)]
    return cmd + (["--resume", resume] if resume else []) + [sql]


def _newest_run(home: Path):
    with open_warehouse(home / "warehouse.duckdb") as wh:
        runs = [r for r in wh.state.runs(limit=100) if r.kind == "export"]
        if not runs:
            return None, None
        return runs[0], wh.state.export_rows(run_id=runs[0].run_id)


def _kill_then_finish(home, url, settings, sql, delay):
    proc = subprocess.Popen(_cmd(home, settings, sql), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    killed = proc.poll() is None
    if killed:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    time.sleep(0.1)
    run, _ = _newest_run(home)
    again = subprocess.run(
        _cmd(home, settings, sql, resume=run.run_id if run else None), capture_output=True, text=True, timeout=300
    )
    return killed, run, again


def _points(full: bool) -> int:
    return 6 if full else 2


def test_kill_9_during_a_mirror_then_resume(tmp_path, full):
    rng = random.Random(int(os.environ.get("RELIABILITY_KILL_SEED", "19190")))
    killed_count = 0
    # an uninterrupted run, for its duration
    ledger, list_id, home, result, stay_ids = _mirror_world(tmp_path / "ref")
    settings = {
        "type": "klaviyo",
        "api_token": DEFAULT_API_KEY,
        "operation": "mirror",
        "list_value": list_id,
        "max_removals": "60%",
        "wait_for_completion": True,
        "waiting_time_for_completion_millis": 300_000,
        "concurrency": 1,
    }
    sql = "SELECT email FROM people ORDER BY email"
    with serve_app(ledger) as url:
        settings["base_url"] = url
        started = time.monotonic()
        done = subprocess.run(_cmd(home, settings, sql), capture_output=True, text=True, timeout=300)
        seconds = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert f"{NEW:,} added, {STAY:,} already members, {MEMBERS - STAY:,} removed" in done.stdout, done.stdout
    for point in range(_points(full)):
        ledger, list_id, home, result, stay_ids = _mirror_world(tmp_path / f"kill{point}")
        delay = rng.uniform(0.5, seconds)
        where = f"mirror kill point {point} ({delay:.2f}s of {seconds:.2f}s)"
        with serve_app(ledger) as url:
            settings["base_url"] = url
            killed, run, again = _kill_then_finish(home, url, settings, sql, delay)
        killed_count += killed
        assert again.returncode == 0, f"{where}: {again.stderr}"
        members = ledger.emulator.snapshot()["list_members"][list_id]
        state = ledger.emulator.state
        assert {state.current_identifiers(state.row_for_id(p))["email"] for p in members} == result, where
        assert not (set(ledger.removed) & stay_ids), f"{where}: a member who stays was removed"
        run2, rows = _newest_run(home)
        assert run2.status == "success", where
        idx = sorted(rows.column("row_index").to_pylist())
        assert idx == list(range(STAY + NEW + MEMBERS - STAY)), f"{where}: {len(idx)} outcomes"
        FIGURES["mirror kill points tried"] += 1
    FIGURES["mirror kill points that hit a running export"] += killed_count
    assert killed_count >= 1, "no kill landed while the mirror ran"


def test_kill_9_during_track_events_then_resume_counts_each_event_once(tmp_path, full):
    rng = random.Random(int(os.environ.get("RELIABILITY_KILL_SEED", "19191")))
    sql = "SELECT email, metric_name, time, value, n FROM ev ORDER BY n"

    def world(name):
        app = create_app(EmulatorSettings(**{**EMU, "profiles": 50}))
        home = tmp_path / name / "home"
        home.mkdir(parents=True)
        with open_warehouse(home / "warehouse.duckdb") as wh:
            wh.write(
                "crm",
                "ev",
                pa.table(
                    {
                        "email": [f"buyer{i % 300}@example.org" for i in range(EVENTS)],
                        "metric_name": ["Kill Test Order"] * EVENTS,
                        "time": [f"2025-0{1 + i % 9}-{1 + i % 28:02d}T{i % 24:02d}:00:00Z" for i in range(EVENTS)],
                        "value": [float(i % 50) for i in range(EVENTS)],
                        "n": list(range(EVENTS)),
                    }
                ),
            )
        return app, home

    def count(app):
        acc = app.state.emulator.account
        metric = [i for i, m in enumerate(acc.records["metric"]) if m.attributes["name"] == "Kill Test Order"]
        return int((acc.events.metric[acc.events.base :] == metric[0]).sum()) if metric else 0

    app, home = world("ref")
    settings = {"type": "klaviyo", "api_token": DEFAULT_API_KEY, "operation": "track_events", "concurrency": 1}
    with serve_app(app) as url:
        settings["base_url"] = url
        started = time.monotonic()
        done = subprocess.run(_cmd(home, settings, sql), capture_output=True, text=True, timeout=300)
        seconds = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert count(app) == EVENTS
    killed_count = 0
    for point in range(_points(full)):
        app, home = world(f"kill{point}")
        delay = rng.uniform(0.3, seconds)
        where = f"events kill point {point} ({delay:.2f}s of {seconds:.2f}s)"
        with serve_app(app) as url:
            settings["base_url"] = url
            killed, run, again = _kill_then_finish(home, url, settings, sql, delay)
        killed_count += killed
        assert again.returncode == 0, f"{where}: {again.stderr}"
        assert count(app) == EVENTS, f"{where}: {count(app)} events recorded for {EVENTS} rows"
        run2, rows = _newest_run(home)
        assert run2.status == "success"
        assert sorted(rows.column("row_index").to_pylist()) == list(range(EVENTS)), where
        FIGURES["track_events kill points tried"] += 1
    FIGURES["track_events kill points that hit a running export"] += killed_count
    assert killed_count >= 1, "no kill landed while the export ran"
