"""``scheduler`` and workers never run on one PostgreSQL state at once: each refuses the other
with exit 2 and a message saying what runs there and what to do. Real processes; the test waits
on their state (registration, the scheduler's start line), never on time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from klaviyo_bridge.workers import prepare

from .conftest import wait_for
from .test_pool import FAST, fetch


def cli(pool, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "klaviyo_bridge", "--home", str(pool.home), *args], capture_output=True, text=True, timeout=120
    )


def test_scheduler_and_workers_refuse_each_other(pool, tmp_path):
    url = pool.url
    prepare(url)
    (worker,) = pool.start(1, *FAST)
    wait_for("the worker registered", lambda: fetch(url, "SELECT 1 FROM _bridge.workers"))

    # A live worker: the scheduler refuses to start, naming `worker status`.
    done = cli(pool, "scheduler", "--warehouse", url, "--once")
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "1 live worker(s)" in done.stderr and "w0" in done.stderr, done.stderr
    assert "worker --warehouse URL status" in done.stderr, done.stderr
    assert "nothing due" not in done.stdout

    # The worker stopped: the scheduler runs.
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0
    done = cli(pool, "scheduler", "--warehouse", url, "--once")
    assert done.returncode == 0 and "nothing due" in done.stdout, (done.stdout, done.stderr)

    # A scheduler running: a worker refuses to start (and registers nothing that stays).
    log_path = tmp_path / "scheduler.log"
    with open(log_path, "wb") as log:
        scheduler = subprocess.Popen(
            [sys.executable, "-m", "klaviyo_bridge", "--home", str(pool.home), "scheduler", "--warehouse", url, "--poll", "0.2"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        wait_for("the scheduler started", lambda: b"scheduler started" in log_path.read_bytes())
        done = cli(pool, "worker", "--warehouse", url, *FAST)
        assert done.returncode == 2, (done.stdout, done.stderr)
        assert "a `klaviyo-bridge scheduler` runs on this state" in done.stderr, done.stderr
        assert "stop the scheduler first" in done.stderr
        assert not fetch(url, "SELECT * FROM _bridge.workers"), done.stderr
    finally:
        scheduler.send_signal(signal.SIGTERM)
        scheduler.wait(timeout=60)
    assert scheduler.returncode == 0, log_path.read_text()

    # The scheduler gone, a worker starts again.
    pool.start(1, *FAST)
    wait_for("a worker registered again", lambda: fetch(url, "SELECT 1 FROM _bridge.workers"))
