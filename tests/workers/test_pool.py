"""``klaviyo-bridge worker``: 3 real worker processes, 50 import schedules on 10 emulator accounts,
three simulated minutes driven through the enqueue step, one worker killed with SIGKILL mid-run.

Simulated time: the test calls ``enqueue_due(now=...)`` with chosen times; the workers read no
clock for the schedules. It waits on state in the database (bounded polls), never on time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from klaviyo_bridge.home import Home
from klaviyo_bridge.secrets import CredentialStore
from klaviyo_bridge.store import open_warehouse
from klaviyo_bridge.store import workers as sql
from klaviyo_bridge.store.state import ScheduleRecord
from klaviyo_bridge.workers import TASK, account_lock, enqueue_due, prepare

from .conftest import wait_for

UTC = timezone.utc
T0 = datetime(2026, 1, 1, tzinfo=UTC)
ACCOUNTS = 10
SCHEDULES = 50
KEYS = tuple(f"pk_emulator_account_{i:02d}" for i in range(ACCOUNTS))
#: Heartbeats every 0.5 s; a worker silent 4 s is dead (short for the test; a loaded CI machine
#: can delay one heartbeat by a second or two, which must not count as a death).
FAST = ["--no-schedules", "--poll", "0.1", "--heartbeat", "0.5", "--stalled-after", "4", "--concurrency", "2"]
PROFILES = 120
#: Imports cover [cursor or start_time, slot): a short first range keeps each run small.
START = "2025-09-01T00:00:00Z"


def cron_of(i: int) -> str:
    """Schedule i runs at minute i % 3 + 1 of each hour: over minutes 1-3, each due once."""
    return f"{i % 3 + 1} * * * *"


def setup_schedules(home: Home, url: str, base_url: str, n: int = SCHEDULES, cron: str | None = None) -> CredentialStore:
    credentials = CredentialStore(home.ensure().credentials)
    for i, key in enumerate(KEYS):
        credentials.save(f"acct{i}", key)
    wh = open_warehouse(url)
    try:
        for i in range(n):
            config = {
                "in": {
                    "type": "klaviyo",
                    "data_source": "profiles",
                    "connection": f"acct{i % ACCOUNTS}",
                    "base_url": base_url,
                    "incremental": True,
                    "start_time": START,
                },
                "out": {"mode": "merge"},
            }
            wh.state.create_schedule(
                ScheduleRecord(
                    f"s{i:02d}", "import", cron or cron_of(i), "UTC", 0, "klaviyo", f"t{i:02d}", config, last_scheduled_for=T0
                )
            )
    finally:
        wh.close()
    prepare(url)
    return credentials


def enqueue(url: str, credentials: CredentialStore, now: datetime):
    wh = open_warehouse(url)
    conn = sql.connect(url)
    try:
        return enqueue_due(wh, credentials, conn, now)
    finally:
        conn.close()
        wh.close()


def fetch(url: str, query: str, params: list | None = None) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(query, params or []).fetchall()


def freeze_mid_run(url: str, pids: list[int]) -> tuple[str, int]:
    """Stop (SIGSTOP) a worker while one of its runs is in progress: (that run, its pid).

    A run seen running may finish before a signal lands (a run takes well under a second); once
    the worker is stopped its runs cannot move, so one still running then is killed mid-run."""
    while True:
        ((run_id, pid),) = wait_for(
            "a run in progress",
            lambda: fetch(url, "SELECT run_id, pid FROM _bridge.runs WHERE status = 'running' AND pid = ANY(%s) LIMIT 1", [pids]),
            interval=0.01,
        )
        os.kill(pid, signal.SIGSTOP)
        still_running = False
        try:
            wait_for("the worker stopped", lambda: _state(pid) in ("T", "t"), interval=0.01)
            still_running = fetch(url, "SELECT status FROM _bridge.runs WHERE run_id = %s", [run_id]) == [("running",)]
        finally:
            if not still_running:
                os.kill(pid, signal.SIGCONT)  # it finished first (or the test failed): let it go on
        if still_running:
            return run_id, pid


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0]


def queue_empty(url: str) -> bool:
    return not fetch(url, "SELECT 1 FROM procrastinate_jobs WHERE status IN ('todo', 'doing') LIMIT 1")


@pytest.mark.klaviyo_emulator(extra_api_keys=KEYS, rate_limits=False, profiles=PROFILES, events=0, lists=1)
# The scenario: each import run costs 1-2 s of CPU here (7 ADBC connects, windows), so 50 runs
# take 65-75 s on 2 cores, beside the rest of the suite (pytest -n auto).
@pytest.mark.parametrize("n_workers, n_schedules", [pytest.param(3, SCHEDULES, marks=pytest.mark.timeout(900))])
def test_workers_schedules_one_killed(klaviyo_emulator, pool, tmp_path, n_workers, n_schedules):
    home = Home.resolve(pool.home)
    url = pool.url
    credentials = setup_schedules(home, url, klaviyo_emulator.base_url, n=n_schedules)
    workers = pool.start(n_workers, *FAST)
    wait_for("workers registered", lambda: len(fetch(url, "SELECT 1 FROM _bridge.workers")) == n_workers)

    slots = [T0 + timedelta(minutes=m) for m in (1, 2, 3)]
    killed_run = None
    for minute, slot in enumerate(slots, 1):
        report = enqueue(url, credentials, slot + timedelta(seconds=30))
        assert not report.busy and not report.waiting
        assert sorted(name for name, _, _ in report.enqueued) == [f"s{i:02d}" for i in range(n_schedules) if i % 3 + 1 == minute]
        assert {s for _, s, _ in report.enqueued} == {slot}
        # Enqueueing the same time again finds nothing due: a slot is enqueued once.
        assert not enqueue(url, credentials, slot + timedelta(seconds=30)).enqueued
        if minute == 2:
            pids = [p.pid for p in workers]
            killed_run, victim_pid = freeze_mid_run(url, pids)
            index = pids.index(victim_pid)
            victim = workers[index]
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait(timeout=30)
            # worker status: every worker with its heartbeat, the dead one's job still "doing" on it.
            status = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "klaviyo_bridge",
                    "--home",
                    str(pool.home),
                    "worker",
                    "--warehouse",
                    url,
                    "status",
                    "--stalled-after",
                    "600",
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert status.returncode == 0, status.stderr
            assert f"{n_workers} worker(s)" in status.stdout and f"w{index} on" in status.stdout, status.stdout
            assert "last heartbeat" in status.stdout and "running s" in status.stdout, status.stdout
        wait_for(f"minute {minute}'s runs to finish", lambda: queue_empty(url), timeout=180)

    # Every due run happened exactly once: one success per (schedule, slot), nothing left running.
    rows = fetch(
        url, "SELECT schedule, scheduled_for, status, triggered_by, run_id, error, started_at, ended_at, pid FROM _bridge.runs"
    )
    successes = Counter((r[0], r[1]) for r in rows if r[2] == "success")
    expected = {(f"s{i:02d}", slots[i % 3]) for i in range(n_schedules)}
    assert set(successes) == expected
    assert set(successes.values()) == {1}
    assert not [r for r in rows if r[2] == "running"]
    # The killed attempt ends error ("interrupted"), truthfully; its slot was run by a recovery attempt.
    killed = next(r for r in rows if r[4] == killed_run)
    assert killed[2] == "error" and "interrupted" in killed[5] and f"w{index} on" in killed[5], killed
    assert [r for r in rows if r[2] == "success" and (r[0], r[1]) == (killed[0], killed[1])][0][3] == "recovery"
    # Nothing else failed; the victim may have had a second run going (--concurrency 2): interrupted too.
    others = [r for r in rows if r[2] != "success" and r[4] != killed_run]
    assert all(r[8] == victim.pid and r[2] == "error" and "interrupted" in r[5] for r in others), others
    # procrastinate agrees: every job succeeded, one per slot.
    assert dict(fetch(url, "SELECT status::text, count(*) FROM procrastinate_jobs GROUP BY 1")) == {"succeeded": len(expected)}
    # Merge mode: every table has each profile of its range once (the killed one's too).
    counts = {fetch(url, f'SELECT count(*), count(DISTINCT id) FROM klaviyo."t{i:02d}"')[0] for i in range(n_schedules)}
    assert len(counts) == 1 and next(iter(counts))[0] == next(iter(counts))[1] > 0
    # Runs on one account never overlapped (procrastinate's lock), killed attempt aside.
    by_account = defaultdict(list)
    wh = open_warehouse(url)
    try:
        locks = {r.name: account_lock(r, credentials) for r in wh.state.schedules()}
    finally:
        wh.close()
    assert len(set(locks.values())) == min(ACCOUNTS, n_schedules)
    for r in rows:
        if r[8] != victim.pid:
            by_account[locks[r[0]]].append((r[6], r[7]))
    for spans in by_account.values():
        spans.sort()
        for (_, end), (start, _) in zip(spans, spans[1:]):
            assert end <= start
    # The two surviving workers did the work; the killed one is reported gone by its peers.
    assert all(p.poll() is None for p in workers if p is not victim)


def test_worker_refuses_duckdb(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "klaviyo_bridge",
            "--home",
            str(tmp_path / "h"),
            "worker",
            "--warehouse",
            str(tmp_path / "w.duckdb"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "needs the state in PostgreSQL" in done.stderr and "klaviyo-bridge scheduler" in done.stderr


@pytest.mark.klaviyo_emulator(clean=True)
def test_racing_enqueuers_enqueue_each_slot_once(klaviyo_emulator, pool):
    home = Home.resolve(pool.home)
    url = pool.url
    credentials = setup_schedules(home, url, klaviyo_emulator.base_url, n=20, cron="*/5 * * * *")
    now = T0 + timedelta(minutes=17)  # slots 00:05, 00:10, 00:15 missed: ONE run, for 00:15
    reports = []
    barrier = threading.Barrier(4)

    def race() -> None:
        barrier.wait()
        reports.append(enqueue(url, credentials, now))

    threads = [threading.Thread(target=race) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    enqueued = [e for r in reports for e in r.enqueued]
    assert len(enqueued) == 20 and {s for _, s, _ in enqueued} == {T0 + timedelta(minutes=15)}
    assert fetch(url, "SELECT count(*) FROM procrastinate_jobs")[0][0] == 20
    # While a schedule's run is queued, its next slot waits (and is not lost: it stays due).
    later = enqueue(url, credentials, T0 + timedelta(minutes=21))
    assert not later.enqueued and len(later.waiting) == 20
    assert {r[0] for r in fetch(url, "SELECT last_scheduled_for FROM _bridge.schedules")} == {T0 + timedelta(minutes=15)}
    # The job args name the schedule and slot; the lock names the account, never the key.
    args = fetch(url, "SELECT args->>'schedule', args->>'scheduled_for', lock FROM procrastinate_jobs")
    assert all(lock.startswith("account:") and "pk_" not in lock for _, _, lock in args)
    assert len({lock for _, _, lock in args}) == ACCOUNTS
    assert TASK == "klaviyo_bridge.run_schedule"


@pytest.mark.klaviyo_emulator(extra_api_keys=KEYS, rate_limits=False, profiles=20, events=0, lists=1, latency_ms=1500)
def test_export_killed_after_a_batch_is_not_resent_blind(klaviyo_emulator, pool):
    """A worker killed while an export's batch is on the wire: the worker that takes the job over
    closes the dead attempt (error, interrupted) and does NOT send the batch again (consent is
    never resent blind); it names the resume command instead."""
    home = Home.resolve(pool.home)
    url = pool.url
    credentials = CredentialStore(home.ensure().credentials)
    credentials.save("acct0", KEYS[0])
    wh = open_warehouse(url)
    try:
        with wh.transaction() as s:
            s.execute("CREATE SCHEMA shop")
            s.execute("CREATE TABLE shop.customers (email TEXT)")
            s.execute("INSERT INTO shop.customers SELECT 'c' || g || '@example.com' FROM generate_series(1, 5) g")
        settings = {
            "type": "klaviyo",
            "connection": "acct0",
            "base_url": klaviyo_emulator.base_url,
            "operation": "add",
            "list_identify_type": "name",
            "list_value": "Workers",
            "skip_invalid_records": True,
        }
        wh.state.create_schedule(
            ScheduleRecord(
                "exp",
                "export",
                "1 * * * *",
                "UTC",
                0,
                "shop",
                None,
                {"query": "SELECT email FROM customers ORDER BY email", "result_settings": settings},
                last_scheduled_for=T0,
            )
        )
    finally:
        wh.close()
    prepare(url)
    workers = pool.start(2, *FAST)
    wait_for("workers registered", lambda: len(fetch(url, "SELECT 1 FROM _bridge.workers")) == 2)
    assert [n for n, _, _ in enqueue(url, credentials, T0 + timedelta(minutes=1, seconds=5)).enqueued] == ["exp"]
    batch = wait_for(
        "the export's first batch recorded",
        lambda: fetch(url, "SELECT b.run_id, r.pid FROM _bridge.export_batches b JOIN _bridge.runs r USING (run_id)"),
        interval=0.01,
    )
    killed_run, pid = batch[0]
    victim = next(p for p in workers if p.pid == pid)
    os.kill(pid, signal.SIGKILL)
    victim.wait(timeout=30)
    wait_for("the job taken over and ended", lambda: queue_empty(url), timeout=120)
    runs = {r[0]: r[1:] for r in fetch(url, "SELECT run_id, status, triggered_by, error FROM _bridge.runs")}
    assert runs[killed_run][0] == "error" and "interrupted" in runs[killed_run][2]
    (other,) = [v for k, v in runs.items() if k != killed_run]
    assert other[0] == "error" and other[1] == "recovery"
    assert "not rerun" in other[2] and f"--resume {killed_run}" in other[2]
    # No second batch: only the dead attempt's one was ever recorded (and so sent).
    assert [r[0] for r in fetch(url, "SELECT run_id FROM _bridge.export_batches")] == [killed_run]
