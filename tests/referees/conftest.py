"""Referee tests (opt-in: ``pytest -m referees``): clients that nobody here wrote, installed from the
package registry into throwaway venvs and run, unchanged but for the base URL, against an emulator
started as ``klaviyo-bridge emulator`` on 127.0.0.1. See docs/referees.md.

Venvs are cached under ``$KLAVIYO_BRIDGE_REFEREES_CACHE`` (default ~/.cache/klaviyo-bridge-referees),
one per package and version, so reruns install nothing.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from klaviyo_emulator.settings import DEFAULT_API_KEY

HERE = Path(__file__).parent
CACHE = Path(os.environ.get("KLAVIYO_BRIDGE_REFEREES_CACHE", Path.home() / ".cache" / "klaviyo-bridge-referees"))
SPEC_REVISION = "2026-07-15"


def referee_venv(requirement: str) -> Path:
    """A venv with ``requirement`` (``name==version``) installed from the registry; built once, then cached.

    The venv's Python is the one running the tests (``python -m venv``); a venv whose install did not
    finish (no ``.complete`` marker) is rebuilt."""
    CACHE.mkdir(parents=True, exist_ok=True)
    key = requirement.replace("==", "-").replace("/", "_")
    venv = CACHE / f"{key}-py{sys.version_info.major}{sys.version_info.minor}"
    with open(CACHE / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two pytest processes never build the same venv at once
        if (venv / ".complete").exists():
            return venv
        shutil.rmtree(venv, ignore_errors=True)
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
        done = subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", requirement],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"pip install {requirement} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
        (venv / ".complete").write_text(requirement + "\n")
        return venv


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class EmulatorProcess:
    """A ``klaviyo-bridge emulator`` subprocess on 127.0.0.1, and a plain HTTP client to read its data."""

    base_url: str
    api_key: str
    process: subprocess.Popen

    @property
    def headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Klaviyo-API-Key {self.api_key}",
            "revision": SPEC_REVISION,
            "accept": "application/vnd.api+json",
        }

    def fetch(self, url: str, params: dict | None = None) -> dict:
        """GET a document, waiting out the emulator's 429s as its Retry-After says (at most 10 times)."""
        for _ in range(10):
            response = httpx.get(url, params=params, headers=self.headers, timeout=60)
            if response.status_code != 429:
                break
            time.sleep(int(response.headers.get("Retry-After", "1")))
        response.raise_for_status()
        return response.json()

    def get(self, path: str, params: dict | None = None) -> dict:
        return self.fetch(f"{self.base_url}{path}", params)

    def count(self, path: str, params: dict | None = None) -> int:
        """Every record of a collection, following links.next."""
        n, url, params = 0, f"{self.base_url}{path}", dict(params or {})
        while url:
            body = self.fetch(url, params)
            n += len(body["data"])
            url, params = body["links"].get("next"), None
        return n


@pytest.fixture(scope="module")
def referee_emulator(request, tmp_path_factory) -> Iterator[EmulatorProcess]:
    """The emulator as a user starts it (``klaviyo-bridge emulator``), one per referee module.

    A module sets ``EMULATOR_ARGS`` (a list of extra CLI options) to size the account."""
    extra = list(getattr(request.module, "EMULATOR_ARGS", []))
    port = _free_port()
    cli = Path(sys.executable).parent / "klaviyo-bridge"
    log = open(tmp_path_factory.mktemp("emulator") / "emulator.log", "w")
    process = subprocess.Popen([str(cli), "emulator", "--host", "127.0.0.1", "--port", str(port), *extra], stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"klaviyo-bridge emulator exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("klaviyo-bridge emulator did not start within 60 s")
            time.sleep(0.1)
    try:
        yield EmulatorProcess(base, DEFAULT_API_KEY, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def run_json_lines(argv: list[str], *, cwd: Path, timeout: float, env: dict | None = None) -> tuple[list[dict], str]:
    """Run a client, return its stdout as parsed JSON lines (non-JSON lines skipped) and its stderr."""
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})
    messages = []
    for line in done.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                messages.append(json.loads(line))
            except ValueError:
                pass
    if done.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv[:3])} ... exited {done.returncode}\n"
            f"stdout tail:\n{done.stdout[-3000:]}\nstderr tail:\n{done.stderr[-5000:]}"
        )
    return messages, done.stderr
