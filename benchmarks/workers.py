"""Worker-pool throughput: N accounts (emulator keys), one import schedule each, on 1, 2 and 4 workers.

Each round: a fresh PostgreSQL database, W ``klaviyo-bridge worker`` processes (``--concurrency C``),
one slot of every schedule enqueued at once through the enqueue step (simulated time), and the
wall time from the enqueue until the queue is empty. Prints runs per minute for each W, the
linear bound (W x the 1-worker rate measured in the same run), the ratio, and the machine's load
and core count (a ratio below 1 on a machine with fewer cores than workers is the CPU's bound,
not the pool's).

The emulator runs in this process (its keys: ``extra_api_keys``, one per account, sharing one
dataset); limits off, so the accounts' Klaviyo limits are not what is measured.

    python benchmarks/workers.py                      # 100 accounts, 1/2/4 workers, concurrency 1
    python benchmarks/workers.py --accounts 20 --workers 1,2
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg

from klaviyo_bridge.home import Home
from klaviyo_bridge.secrets import CredentialStore
from klaviyo_bridge.store import open_warehouse
from klaviyo_bridge.store import workers as sql
from klaviyo_bridge.store.state import ScheduleRecord
from klaviyo_bridge.workers import enqueue_due, prepare
from klaviyo_emulator.app import create_app
from klaviyo_emulator.server import serving
from klaviyo_emulator.settings import EmulatorSettings

PG = os.environ.get("KLAVIYO_BRIDGE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _db_url(name: str) -> str:
    return urllib.parse.urlunsplit(urllib.parse.urlsplit(PG)._replace(path=f"/{name}"))


def one_round(base_url: str, keys: list[str], workers: int, concurrency: int, work: Path) -> float:
    """Seconds from enqueueing one slot of every account's schedule to an empty queue."""
    name = f"kbw_bench_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(PG, autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    url = _db_url(name)
    home = Home.resolve(work / name)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        credentials = CredentialStore(home.ensure().credentials)
        wh = open_warehouse(url)
        try:
            for i, key in enumerate(keys):
                credentials.save(f"acct{i}", key)
                config = {
                    "in": {
                        "type": "klaviyo",
                        "data_source": "profiles",
                        "connection": f"acct{i}",
                        "base_url": base_url,
                        "incremental": True,
                        "start_time": "2025-09-01T00:00:00Z",
                    },
                    "out": {"mode": "merge"},
                }
                wh.state.create_schedule(
                    ScheduleRecord(
                        f"a{i:03d}", "import", "* * * * *", "UTC", 0, "klaviyo", f"a{i:03d}", config, last_scheduled_for=T0
                    )
                )
        finally:
            wh.close()
        prepare(url)
        log = open(work / f"{name}.log", "wb")
        for w in range(workers):
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "klaviyo_bridge",
                        "--home",
                        str(home.root),
                        "worker",
                        "--warehouse",
                        url,
                        "--name",
                        f"w{w}",
                        "--no-schedules",
                        "--poll",
                        "0.2",
                        "--concurrency",
                        str(concurrency),
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        log.close()
        with psycopg.connect(url, autocommit=True) as conn:
            while conn.execute("SELECT count(*) FROM _bridge.workers").fetchone()[0] < workers:  # type: ignore[index]
                time.sleep(0.05)
            wh = open_warehouse(url)
            try:
                started = time.perf_counter()
                report = enqueue_due(wh, credentials, sql.connect(url), T0 + timedelta(seconds=70))
            finally:
                wh.close()
            assert len(report.enqueued) == len(keys), report
            while conn.execute("SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')").fetchone()[0]:  # type: ignore[index]
                time.sleep(0.05)
            seconds = time.perf_counter() - started
            done = dict(conn.execute("SELECT status, count(*) FROM _bridge.runs GROUP BY 1").fetchall())
        if done != {"success": len(keys)}:
            raise SystemExit(f"runs did not all succeed: {done} (log: {work / f'{name}.log'})")
        return seconds
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--workers", default="1,2,4", help="comma-separated worker counts (the first is the base)")
    parser.add_argument("--concurrency", type=int, default=1, help="jobs at once per worker")
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    keys = [f"pk_emulator_bench_{i:03d}" for i in range(args.accounts)]
    settings = EmulatorSettings(extra_api_keys=tuple(keys), rate_limits=False, profiles=120, events=0, lists=1)
    work = Path(tempfile.mkdtemp(prefix="kb-workers-bench-"))
    print(
        f"{args.accounts} accounts, one import schedule each (120 profiles, incremental, merge); "
        f"concurrency {args.concurrency} per worker; {os.cpu_count()} cores"
    )
    base_rate = None
    try:
        with serving(create_app(settings), name="klaviyo-emulator") as base_url:
            for w in counts:
                load = os.getloadavg()[0]
                seconds = one_round(base_url, keys, w, args.concurrency, work)
                rate = args.accounts / seconds * 60
                if base_rate is None:
                    base_rate = rate / counts[0]
                bound = base_rate * w
                print(
                    f"{w} worker(s): {args.accounts} runs in {seconds:.1f} s = {rate:.1f} runs/min; "
                    f"linear bound {bound:.1f} runs/min; ratio {rate / bound:.2f} (load before {load:.1f})",
                    flush=True,
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
