"""Worker-pool tests: real worker processes on a fresh PostgreSQL database per test.

PostgreSQL (KLAVIYO_BRIDGE_TEST_POSTGRES, default the server on 127.0.0.1) is required: the
state schema ``_bridge`` and procrastinate's tables are per database, so each test gets its own
database, dropped afterwards (its workers are stopped first).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

PG_URL = os.environ.get("KLAVIYO_BRIDGE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def _with_db(url: str, name: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh database on the test server; its URL."""
    name = f"kbw_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(PG_URL, autocommit=True)
    except psycopg.Error as exc:
        pytest.fail(
            f"PostgreSQL at {PG_URL} is required for the worker tests and is unreachable "
            f"(set KLAVIYO_BRIDGE_TEST_POSTGRES to point elsewhere): {exc}",
            pytrace=False,
        )
    try:
        admin.execute(f'CREATE DATABASE "{name}"')
        yield _with_db(PG_URL, name)
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()


def wait_for(what: str, check: Callable[[], Any], timeout: float = 90.0, interval: float = 0.05) -> Any:
    """Poll ``check`` until it returns something truthy (waiting for state, not for time to pass)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


class Pool:
    """Worker processes (``python -m klaviyo_bridge worker``) for one test."""

    def __init__(self, home: Path, url: str, logs: Path) -> None:
        self.home, self.url, self.logs = home, url, logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, n: int, *extra: str) -> list[subprocess.Popen[bytes]]:
        started = []
        for _ in range(n):
            i = len(self.procs)
            log = open(self.logs / f"worker{i}.log", "wb")
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "klaviyo_bridge",
                    "--home",
                    str(self.home),
                    "-v",
                    "worker",
                    "--warehouse",
                    self.url,
                    "--name",
                    f"w{i}",
                    *extra,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            log.close()
            self.procs.append(proc)
            started.append(proc)
        return started

    def log(self, i: int) -> str:
        return (self.logs / f"worker{i}.log").read_text(errors="replace")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def pool(tmp_path, pg_url) -> Iterator[Pool]:
    logs = tmp_path / "logs"
    logs.mkdir()
    p = Pool(tmp_path / "home", pg_url, logs)
    yield p
    p.stop()
