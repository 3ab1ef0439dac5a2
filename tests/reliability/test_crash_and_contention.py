"""Real subprocesses: kill -9 at random points of an import, then a rerun; two imports of one
table at once; the retry budget of a permanent 5xx; a 401 that fails at once."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from klaviyo_bridge.api.retry import RetryPolicy
from klaviyo_bridge.store.factory import open_warehouse
from klaviyo_emulator.app import create_app
from klaviyo_emulator.settings import EmulatorSettings

from .helpers import FIGURES, rows_of, serve_app

KEY = "pk_emulator_demo_key"
DATA = dict(seed=31, profiles=300, events=3000, lists=4, rate_limits=False)
CONFIG = """\
in:
  type: klaviyo
  data_source: {source}
  api_token: {key}
  base_url: {base}
  incremental: true
  incremental_field: {field}
  retry_limit: {retries}
out:
  mode: {mode}
"""


def write_config(path: Path, base, source="events", field="created", mode="append", key=KEY, retries=3):
    path.write_text(CONFIG.format(source=source, field=field, base=base, mode=mode, key=key, retries=retries))
    return path


def cli(home: Path, *args) -> list[str]:
    return [sys.executable, "-m", "klaviyo_bridge", "--home", str(home), *args]


def issue(home, cfg, table="events"):
    return cli(home, "connector:issue", str(cfg), "-d", "klaviyo", "-t", table)


def table_and_cursor(home: Path, table="events"):
    with open_warehouse(home / "warehouse.duckdb") as wh:
        rows = rows_of(wh, "klaviyo", table) if wh.table_columns("klaviyo", table) else []
        return rows, wh.state.cursor(f"klaviyo.{table}")


@pytest.fixture(scope="module")
def slow_emulator():
    """20 ms per response, so one import spans a second or two of kill points."""
    with serve_app(create_app(EmulatorSettings(**DATA, latency_ms=20))) as url:
        yield url


@pytest.fixture(scope="module")
def reference(slow_emulator, tmp_path_factory):
    """An uninterrupted run, then an immediate rerun (which finds nothing new)."""
    home = tmp_path_factory.mktemp("reference")
    cfg = write_config(home / "c.yml", slow_emulator)
    started = time.monotonic()
    subprocess.run(issue(home, cfg), check=True, capture_output=True, timeout=120)
    seconds = time.monotonic() - started
    subprocess.run(issue(home, cfg), check=True, capture_output=True, timeout=120)
    rows, cursor = table_and_cursor(home)
    assert rows and cursor
    return rows, seconds


def test_kill_9_at_random_points_then_rerun(tmp_path, slow_emulator, reference, full):
    expected, seconds = reference
    expected_set = set(expected)
    rng = random.Random(int(os.environ.get("RELIABILITY_KILL_SEED", "20260101")))
    points = 24 if full else 5
    outcomes = {"killed": 0, "finished before the kill": 0}
    for point in range(points):
        home = tmp_path / f"kill{point}"
        cfg = write_config(tmp_path / f"kill{point}.yml", slow_emulator)
        delay = rng.uniform(0.05, seconds * 1.1)
        proc = subprocess.Popen(issue(home, cfg), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            outcomes["killed"] += 1
        else:
            outcomes["finished before the kill"] += 1
        proc.wait(timeout=30)
        if (home / "warehouse.duckdb").exists():
            rows, cursor = table_and_cursor(home)
            # All or nothing: the rows and the cursor land in one transaction.
            assert (rows, cursor is None) in ((expected, False), ([], True)), f"point {point} ({delay:.2f}s)"
            assert len(rows) == len(set(rows))
        rerun = subprocess.run(issue(home, cfg), capture_output=True, text=True, timeout=120)
        assert rerun.returncode == 0, f"rerun after kill point {point} ({delay:.2f}s): {rerun.stderr}"
        rows, cursor = table_and_cursor(home)
        assert rows == expected, (
            f"after kill point {point} ({delay:.2f}s) and a rerun: {len(expected)} {len(expected_set)} {len(set(rows))} {len(rows)} rows, {len(set(rows) - expected_set)} unexpected, {len(expected_set - set(rows))} missing"
        )
        assert set(rows) == expected_set and cursor is not None
        FIGURES["rows checked (kill -9 reruns)"] += len(rows)
    FIGURES["kill points tried"] += points
    FIGURES["kill points that hit a running import"] += outcomes["killed"]
    assert outcomes["killed"] >= max(1, points // 2), outcomes


def test_two_imports_of_one_table_at_once(tmp_path, slow_emulator, reference):
    """Both start together on one DuckDB file: the second waits for the lock (or refuses clearly);
    the table ends as two sequential runs would leave it and the history has both runs."""
    expected, _ = reference
    home = tmp_path / "home"
    cfg = write_config(tmp_path / "c.yml", slow_emulator)
    procs = [subprocess.Popen(issue(home, cfg), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    codes = sorted(r[0] for r in results)
    for code, out, err in results:
        if code:
            assert "is in use by another run" in err and "Traceback" not in err, err
    assert codes[0] == 0, results
    rows, cursor = table_and_cursor(home)
    assert rows == expected and cursor is not None  # incremental: the second run found nothing new
    with open_warehouse(home / "warehouse.duckdb") as wh:
        statuses = sorted(r.status for r in wh.state.runs("klaviyo.events"))
    assert statuses == ["success"] * (2 if codes == [0, 0] else 1)


def test_a_held_lock_makes_the_second_run_wait_then_succeed(tmp_path, slow_emulator, reference):
    """Proved by order, not elapsed time: the holder keeps the warehouse until the test releases
    it; meanwhile the second run says it is waiting and is still running; it finishes, successfully,
    only after the holder let go."""
    expected, _ = reference
    home = tmp_path / "home"
    home.mkdir()
    cfg = write_config(tmp_path / "c.yml", slow_emulator)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys; from klaviyo_bridge.store.factory import open_warehouse; "
                f"wh = open_warehouse({str(home / 'warehouse.duckdb')!r}); print('held', flush=True); "
                "sys.stdin.readline(); wh.close(); print('released', flush=True)"
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    second = None
    try:
        assert holder.stdout.readline().strip() == "held"
        second = subprocess.Popen(issue(home, cfg), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        before = []  # its log up to the moment it says it waits for the warehouse (EOF if it never does)
        for line in second.stderr:
            before.append(line)
            if "waiting for the DuckDB warehouse" in line:
                break
        assert before and "waiting for the DuckDB warehouse" in before[-1], "".join(before)
        assert second.poll() is None  # still running while the warehouse is held: it did not fail
        holder.stdin.write("go\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "released"
        assert holder.wait(timeout=30) == 0
        out, after = second.communicate(timeout=120)
    finally:
        for proc in (holder, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    assert second.returncode == 0, "".join(before) + after
    assert "is free now" in after and "Traceback" not in after, after  # it went on once released
    assert table_and_cursor(home)[0] == expected


def test_permanent_503_gives_up_after_the_configured_retries_in_time(tmp_path):
    app = create_app(EmulatorSettings(**DATA, faults="storm=get_lists:503:forever"))
    retries = 2
    policy = RetryPolicy(retry_limit=retries, initial_wait=1, max_wait=300)
    with serve_app(app) as url:
        cfg = write_config(tmp_path / "c.yml", url, source="lists", field="updated", retries=retries)
        done = subprocess.run(issue(tmp_path / "home", cfg, "lists"), capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    err = done.stderr.strip().splitlines()
    assert f"get_lists failed after {retries + 1} attempts (retry_limit={retries})" in err[-1], done.stderr
    assert "server error 503" in err[-1] and "Traceback" not in done.stderr
    assert app.state.faults.counters["get_lists"] == retries + 1
    # The waits the client chose (its log), not the wall clock: retry i waits between half of its
    # backoff ceiling and the ceiling, and all of them within the policy's worst case.
    waits = [float(w) for w in re.findall(r"get_lists: .*; retry \d+/%d in ([0-9.]+)s" % retries, done.stderr)]
    assert len(waits) == retries, done.stderr
    for i, wait in enumerate(waits):
        ceiling = min(300, 1 * 2**i)
        assert ceiling / 2 - 0.05 <= wait <= ceiling + 0.05, (i, wait)
    assert sum(waits) <= policy.worst_case_total_wait()
    FIGURES["faults injected (retry budget)"] += app.state.faults.total_injected


def test_401_fails_at_once_without_retry(tmp_path):
    app = create_app(EmulatorSettings(**DATA, faults="storm=get_campaigns:503:1s"))  # wrapper counts requests
    with serve_app(app) as url:
        cfg = write_config(tmp_path / "c.yml", url, source="lists", field="updated", key="pk_wrong_key_for_test")
        done = subprocess.run(issue(tmp_path / "home", cfg, "lists"), capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "the API key was rejected" in done.stderr and "retry" not in done.stderr.lower()
    assert app.state.faults.total_requests == 1  # one request, no retry and so no backoff wait
    assert "pk_wrong_key_for_test" not in done.stderr + done.stdout
