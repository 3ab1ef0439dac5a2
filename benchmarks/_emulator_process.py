"""Start the emulator in its own process (its own core), for benchmarks."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx

#: base URL -> emulator process id, for ``cpu_seconds`` (the emulator's share of the machine)
PIDS: dict[str, int] = {}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc)."""
    import os

    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def emulator_process(*args: str) -> Iterator[str]:
    """Run ``klaviyo-bridge emulator ARGS`` on a free port; yield its base URL."""
    port = free_port()
    cmd = [sys.executable, "-m", "klaviyo_bridge", "emulator", "--port", str(port), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"emulator exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                httpx.get(base + "/", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise RuntimeError("emulator did not start within 120 s")
        PIDS[base] = proc.pid
        yield base
    finally:
        PIDS.pop(base, None)
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
