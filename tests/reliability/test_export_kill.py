"""kill -9 at random points of a real ``klaviyo-bridge query`` export, then ``--resume RUN_ID``.

The export (``add`` to a list by id, ``wait_for_completion``, 15,000 rows = 2 bulk import
batches of Klaviyo's real 10,000) runs as a subprocess against an emulator on a real socket whose
import jobs take ~0.1 s (then a 1 s poll wait), so kills land before the run, while batches are being
posted, while jobs are polled and between batches being recorded. ``PostLedger`` in front of the
emulator counts the bulk-import POSTs of each batch (the batch = its emails, in order).

After each kill: the run id is the newest export run in ``_bridge.runs`` (no run yet: the kill
came before anything was recorded, and the export is simply run again). Then ``--resume`` and:

* every input row has exactly one outcome, all accepted, and the run succeeded;
* the emulator's final state equals an uninterrupted run's (``normal_snapshot``);
* a batch recorded ``sent`` or ``done`` at the kill gets no further POST; a batch recorded
  ``sending`` (the kill came between posting it and recording Klaviyo's answer) is sent once more
  (Klaviyo may or may not have it; a second import job with the same profiles is harmless and the
  final-state check proves it); a batch never recorded is sent by the resume.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest

from klaviyo_bridge.store.factory import open_warehouse
from klaviyo_emulator.app import create_app
from klaviyo_emulator.settings import DEFAULT_API_KEY, EmulatorSettings

from .export_ledger import PostLedger, normal_snapshot
from .helpers import FIGURES, serve_app

EMU = dict(
    seed=61,
    profiles=300,
    events=0,
    lists=2,
    segments=1,
    campaigns=1,
    templates=1,
    flows=1,
    rate_limits=False,
    job_profiles_per_second=100_000,
)
ROWS, BATCH = 15_000, 10_000
SQL = "SELECT email, first_name FROM people ORDER BY email"
IMPORT = "bulk_import_profiles"


def emails() -> list[str]:
    return sorted(f"kill.{i:05d}@example.org" for i in range(ROWS))


def batch_keys() -> list[tuple]:
    e = emails()
    return [tuple(e[i : i + BATCH]) for i in range(0, ROWS, BATCH)]


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("template") / "warehouse.duckdb"
    e = emails()
    with open_warehouse(path) as wh:
        wh.write("crm", "people", pa.table({"email": e, "first_name": [f"K{i}" for i in range(ROWS)]}))
    return path


def new_home(tmp_path: Path, name: str, template: Path) -> Path:
    home = tmp_path / name
    home.mkdir()
    (home / "warehouse.duckdb").write_bytes(template.read_bytes())
    return home


def query_cmd(home: Path, url: str, list_id: str, resume: str | None = None) -> list[str]:
    settings = {
        "type": "klaviyo",
        "api_token": DEFAULT_API_KEY,
        "base_url": url,
        "operation": "add",
        "list_identify_type": "id",
        "list_value": list_id,
        "wait_for_completion": True,
        "waiting_time_for_completion_millis": 300_000,
        "retry_limit": 3,
    }
    conf = home.parent / f"{home.name}-settings.json"  # a file: a key on the command line is refused
    conf.write_text(json.dumps(settings))
    cmd = [sys.executable, "-m", "klaviyo_bridge", "--home", str(home), "query", "-d", "crm", "--result-settings", str(conf)]
    return cmd + (["--resume", resume] if resume else []) + [SQL]


def run_state(home: Path):
    """(newest export run or None, {batch_id: status}, rows table)."""
    with open_warehouse(home / "warehouse.duckdb") as wh:
        runs = [r for r in wh.state.runs(limit=1000) if r.kind == "export"]
        if not runs:
            return None, {}, None
        run = runs[0]
        batches = {b.batch_id: b.status for b in wh.state.export_batches(run.run_id)}
        return run, batches, wh.state.export_rows(run_id=run.run_id)


def emulator():
    app = PostLedger(create_app(EmulatorSettings(**EMU)))
    return app, app.emulator.account.records["list"][0].id


def posts_per_batch(ledger: PostLedger) -> Counter:
    return Counter(e.key for e in ledger.entries if e.op == IMPORT)


def accepted_per_batch(ledger: PostLedger) -> Counter:
    return Counter(e.key for e in ledger.entries if e.op == IMPORT and e.accepted)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, template):
    home = new_home(tmp_path_factory.mktemp("ref"), "home", template)
    app, list_id = emulator()
    with serve_app(app) as url:
        started = time.monotonic()
        done = subprocess.run(query_cmd(home, url, list_id), capture_output=True, text=True, timeout=120)
        seconds = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert f"{ROWS:,} rows: {ROWS:,} accepted" in done.stdout, done.stdout
    assert posts_per_batch(app) == Counter({k: 1 for k in batch_keys()})
    run, batches, rows = run_state(home)
    assert run.status == "success" and set(batches.values()) == {"done"}
    return normal_snapshot(app), seconds


def test_kill_9_at_random_points_of_an_export_then_resume(tmp_path, template, reference, full):
    expected, seconds = reference
    keys = batch_keys()
    rng = random.Random(int(os.environ.get("RELIABILITY_KILL_SEED", "20260107")))
    points = 20 if full else 5
    outcomes: Counter = Counter()
    for point in range(points):
        home = new_home(tmp_path, f"kill{point}", template)
        app, list_id = emulator()
        delay = rng.uniform(0.3, seconds * 1.05)
        where = f"kill point {point} ({delay:.2f}s of {seconds:.2f}s)"
        with serve_app(app) as url:
            proc = subprocess.Popen(query_cmd(home, url, list_id), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(delay)
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                outcomes["killed"] += 1
            else:
                outcomes["finished before the kill"] += 1
            proc.wait(timeout=30)
            time.sleep(0.1)  # a request cut by the kill is handled (or not) by now
            run, at_kill, _ = run_state(home)
            posts_at_kill = posts_per_batch(app)
            if run is None:
                outcomes["killed before the run was recorded"] += 1
                again = subprocess.run(query_cmd(home, url, list_id), capture_output=True, text=True, timeout=120)
            else:
                for status in at_kill.values():
                    outcomes[f"batches '{status}' at the kill"] += 1
                again = subprocess.run(
                    query_cmd(home, url, list_id, resume=run.run_id), capture_output=True, text=True, timeout=120
                )
            assert again.returncode == 0, f"{where}: {again.stderr}"
        run2, batches, rows = run_state(home)
        assert run is None or run2.run_id == run.run_id
        assert run2.status == "success", where
        # Every row accounted for exactly once.
        assert rows.sort_by("row_index").column("row_index").to_pylist() == list(range(ROWS)), (
            f"{where}: {rows.num_rows} outcomes for {ROWS} rows"
        )
        assert set(rows.column("outcome").to_pylist()) == {"accepted"}, where
        assert set(batches.values()) == {"done"} and len(batches) == len(keys), (where, batches)
        # The same final state as an uninterrupted run.
        assert normal_snapshot(app) == expected, where
        # Batches recorded as sent/done are never posted again; 'sending' at most once more.
        posts_after = posts_per_batch(app) - posts_at_kill
        for seq, key in enumerate(keys):
            status = at_kill.get(f"{run.run_id}-b{seq:05d}") if run else None
            if status in ("sent", "done"):
                assert posts_after[key] == 0, f"{where}: batch {seq} was '{status}' at the kill and was posted again"
            elif status == "sending":
                assert posts_after[key] <= 1, where
                if posts_at_kill[key] and posts_after[key]:
                    outcomes["'sending' batches posted again (the kill came before the answer was recorded)"] += 1
            else:
                assert posts_after[key] == 1, f"{where}: batch {seq} never sent before the kill"
        outcomes["accepted twice in all"] += sum(n - 1 for n in accepted_per_batch(app).values() if n > 1)
        FIGURES["rows checked (export kill -9 + resume)"] += ROWS
    FIGURES["export kill points tried"] += points
    FIGURES["export kill points that hit a running export"] += outcomes["killed"]
    for key, n in outcomes.items():
        if key not in ("killed",):
            FIGURES[f"export kill: {key}"] += n
    assert outcomes["killed"] >= max(1, points // 2), outcomes


# --- the crash windows between two state writes, hit exactly (in-process) ----------------------


class Killed(BaseException):
    """Stands in for kill -9 at one exact line: nothing after it runs."""


WINDOWS = {
    # (what the state says when the kill comes, the call that never happens)
    # (row outcomes and the final status are one transaction: a kill before it stores neither)
    "job done, outcome not yet recorded": ("finish_export_batch", "done"),
    "batch 'sending' recorded, nothing posted": ("record_export_batch", "sending"),
    "batch failed, outcome not yet recorded": ("finish_export_batch", "failed"),
}


@pytest.mark.parametrize("window", list(WINDOWS))
def test_kill_in_each_window_between_state_writes_then_resume(tmp_path, monkeypatch, window):
    """Every row exactly once after the resume, whichever pair of state writes the kill split."""
    import asyncio

    import httpx

    from klaviyo_bridge.exports.runner import run_export
    from klaviyo_bridge.exports.settings import parse_export_settings
    from klaviyo_bridge.store.state import StateStore

    method, status = WINDOWS[window]
    app, list_id = emulator()
    n = 12_000
    table = pa.table({"email": [f"w{i:05d}@example.org" for i in range(n)]})
    s = parse_export_settings(
        {
            "type": "klaviyo",
            "api_token": DEFAULT_API_KEY,
            "base_url": "http://emulator.test",
            "operation": "add",
            "list_value": list_id,
            "wait_for_completion": True,
            "concurrency": 1,
            "retry_limit": 1,
        }
    )
    if status == "failed":  # the first batch fails: a 503 storm on every POST, retry_limit 1
        app = PostLedger(create_app(EmulatorSettings(**EMU, faults="storm=bulk_import_profiles:503:forever")))
        list_id = app.emulator.account.records["list"][0].id
        s = s.model_copy(update={"list_value": list_id})
    original = getattr(StateStore, method)
    calls = Counter()

    def dying(self, batch_id, run_id, operation, st, *args, **kw):
        target = batch_id.endswith("b00001" if status != "failed" else "b00000")
        if st == status and target and not calls[st]:
            calls[st] += 1
            raise Killed()
        return original(self, batch_id, run_id, operation, st, *args, **kw)

    async def no_sleep(_s):
        await asyncio.sleep(0)

    with open_warehouse(tmp_path / "wh.duckdb") as wh:
        monkeypatch.setattr(StateStore, method, dying)
        with pytest.raises(Killed):
            asyncio.run(
                run_export(
                    wh, table, s, transport=httpx.ASGITransport(app=app), sleep=no_sleep, run_id="run-w", poll_initial=0.01
                )
            )
        monkeypatch.setattr(StateStore, method, original)
        if status == "failed":
            app.state.faults.spec = type(app.state.faults.spec)()  # the storm is over
        asyncio.run(
            run_export(
                wh,
                table,
                s,
                transport=httpx.ASGITransport(app=app),
                sleep=no_sleep,
                run_id="run-w",
                resume=True,
                poll_initial=0.01,
            )
        )
        rows = wh.state.export_rows(run_id="run-w").sort_by("row_index")
        indexes = rows.column("row_index").to_pylist()
        assert len(indexes) == n and indexes == list(range(n)), (
            f"{window}: {len(indexes)} outcomes for {n} rows ({len(indexes) - len(set(indexes))} recorded twice)"
        )
    FIGURES["rows checked (export crash windows)"] += n
