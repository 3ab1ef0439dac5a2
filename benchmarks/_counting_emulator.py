"""The emulator in its own process, counting its answers per (operation, rate tier, status).

Benchmarks of rate limiting need what the server saw, not only what each client says: how many
requests of each tier it answered and how many with 429. The counts are served at
``GET /__bench/counts`` (JSON, read before any check of the key), so a benchmark reads them after
its clients finished, from the one process that enforced the limits.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import httpx
from _emulator_process import free_port

_SERVER = """
import collections, json
from klaviyo_emulator import app as emu_app
from klaviyo_emulator.server import serve
from klaviyo_emulator.settings import EmulatorSettings

counts = collections.Counter()
handle = emu_app.Emulator.handle

async def counting(self, request):
    if request.url.path == "/__bench/counts":
        return emu_app.Response(json.dumps([[*k, n] for k, n in counts.items()]).encode(),
                                media_type="application/json")
    response = await handle(self, request)
    op, _ = self.match(request.url.path, request.method)
    if op:
        tier = op.ratelimit_for(request.query_params.multi_items())[0] if op.ratelimit_tiers else ""
        counts[(op.operation_id, tier, response.status_code)] += 1
    return response

emu_app.Emulator.handle = counting
serve(EmulatorSettings(**SETTINGS), "127.0.0.1", PORT)
"""


@contextlib.contextmanager
def counting_emulator(**settings: object) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Start the emulator with these ``EmulatorSettings``; yield (base URL, process)."""
    port = free_port()
    code = textwrap.dedent(_SERVER).replace("SETTINGS", repr(settings)).replace("PORT", str(port))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"emulator exited: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
            try:
                httpx.get(base + "/__bench/counts", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError("emulator did not start within 120 s") from None
                time.sleep(0.1)
        yield base, proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def server_counts(base: str) -> dict[tuple[str, str], dict[int, int]]:
    """(operation, tier) -> {status: answers} as the emulator counted them."""
    out: dict[tuple[str, str], dict[int, int]] = {}
    for op, tier, status, n in httpx.get(base + "/__bench/counts", timeout=10).json():
        out.setdefault((op, tier), {})[int(status)] = int(n)
    return out
