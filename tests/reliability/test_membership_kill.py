"""kill -9 of a membership-history import (and of a late-events import with its lookback) at
random points, then a rerun: the history, the current table and the cursor change together or
not at all, and the rerun ends where an uninterrupted run ends."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from klaviyo_bridge.store.factory import open_warehouse
from klaviyo_emulator.app import create_app
from klaviyo_emulator.settings import EmulatorSettings

from .helpers import FIGURES, serve_app
from .test_crash_and_contention import KEY, cli

DATA = dict(seed=33, profiles=5000, events=0, lists=2, rate_limits=False, latency_ms=120)
HEADERS = {"Authorization": f"Klaviyo-API-Key {KEY}", "revision": "2026-07-15", "content-type": "application/vnd.api+json"}


def write_config(path: Path, base: str, list_id: str) -> Path:
    path.write_text(
        f"in:\n  type: klaviyo\n  data_source: list_memberships\n  api_token: {KEY}\n  base_url: {base}\n"
        f"  list_id: {list_id}\nout:\n  mode: append\n"
    )
    return path


def issue(home: Path, cfg: Path) -> list[str]:
    return cli(home, "connector:issue", str(cfg), "-d", "klaviyo", "-t", "members")


def state(home: Path):
    """(history as (list, profile, joined_at, still open), current members, cursor)."""
    with open_warehouse(home / "warehouse.duckdb") as wh:
        history = sorted(
            (r["list_id"], r["profile_id"], r["joined_at"], r["left_at"] is None)
            for r in wh.table_arrow("klaviyo", "members").to_pylist()
        )
        current = sorted(r["profile_id"] for r in wh.table_arrow("klaviyo", "members_current").to_pylist())
        return history, current, wh.state.cursor("klaviyo.members")


@pytest.fixture(scope="module")
def served():
    with serve_app(create_app(EmulatorSettings(**DATA))) as url:
        lists = httpx.get(f"{url}/api/lists", headers=HEADERS).json()["data"]
        yield url, lists[0]["id"]


def test_kill_9_during_a_membership_history_run(tmp_path, served, full):
    base, list_id = served
    first = tmp_path / "first"
    cfg = write_config(tmp_path / "c.yml", base, list_id)
    subprocess.run(issue(first, cfg), check=True, capture_output=True, timeout=180)
    before = state(first)
    # members leave and others join, through Klaviyo's endpoints
    members = [p for _, p, _, _ in before[0]]
    everyone = [p["id"] for p in httpx.get(f"{base}/api/profiles?page[size]=100", headers=HEADERS).json()["data"]]
    joining = [p for p in everyone if p not in set(members)][:20]
    httpx.request(
        "DELETE",
        f"{base}/api/lists/{list_id}/relationships/profiles",
        headers=HEADERS,
        json={"data": [{"type": "profile", "id": p} for p in members[:30]]},
    ).raise_for_status()
    httpx.post(
        f"{base}/api/lists/{list_id}/relationships/profiles",
        headers=HEADERS,
        json={"data": [{"type": "profile", "id": p} for p in joining]},
    ).raise_for_status()
    reference = tmp_path / "reference"
    shutil.copytree(first, reference)
    started = time.monotonic()
    subprocess.run(issue(reference, cfg), check=True, capture_output=True, timeout=180)
    seconds = time.monotonic() - started
    after = state(reference)
    assert after[0] != before[0] and len(after[0]) == len(before[0]) + 20
    assert sum(1 for r in after[0] if not r[3]) == 30

    rng = random.Random(int(os.environ.get("RELIABILITY_KILL_SEED", "20260102")))
    points, killed = (12 if full else 4), 0
    for point in range(points):
        home = tmp_path / f"kill{point}"
        shutil.copytree(first, home)
        delay = rng.uniform(0.3, seconds * 0.9)  # inside the run: start-up, fetch, commit
        proc = subprocess.Popen(issue(home, cfg), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            killed += 1
        proc.wait(timeout=30)
        history, current, cursor = state(home)
        # all or nothing: the first run's tables and cursor, or the finished second run's
        assert (history, current) in ((before[0], before[1]), (after[0], after[1])), f"point {point} ({delay:.2f}s)"
        assert (cursor == before[2]) == ((history, current) == (before[0], before[1]))
        rerun = subprocess.run(issue(home, cfg), capture_output=True, text=True, timeout=180)
        assert rerun.returncode == 0, rerun.stderr
        history, current, _ = state(home)
        assert (history, current) == (after[0], after[1]), f"after kill point {point} and a rerun"
        FIGURES["membership rows checked (kill -9 reruns)"] += len(history)
    FIGURES["membership kill points that hit a running import"] += killed
    assert killed >= 1  # at least one kill hit a running import (the others finished first: checked all the same)
