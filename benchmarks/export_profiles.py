#!/usr/bin/env python3
"""Export throughput: ``add`` of N generated rows from DuckDB to a list, against the emulator.

    python benchmarks/export_profiles.py --rows 1000000 [--latency-ms 150] [--job-speed 1000000]
                                         [--distinct-phones 0] [--concurrency 8] [--strict]

N rows (email, first_name, last_name, phone_number and two custom columns) are generated
with SQL (generate_series) into a DuckDB file by a child process, so the generation does
not count in this process's peak RSS. The emulator runs in its own process with the spec's
rate limits, ``--latency-ms`` added per request and bulk import jobs processed at
``--job-speed`` profiles/s (queued 0 s). The export runs through the library as
``klaviyo-bridge query`` does (``export_query``), list by id, ``wait_for_completion: true``.

The bound: bulk_import_profiles allows 10/s burst and 150/min steady, 10,000 profiles per job,
so N rows need ceil(N/10000) job POSTs; bound = earliest completion of those POSTs under the
windows (a fresh sliding-window limiter) + one round trip + one job's processing time at the
emulator's speed. Prints wall time, rows/s, peak RSS, batches, requests and wall/bound, and the
CPU seconds of this process and of the emulator.
"""

from __future__ import annotations

import argparse
import math
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import klaviyo_bridge  # noqa: F401  # first, as in the klaviyo-bridge command: httpx then loads without its CLI

# isort: split
import httpx
from _emulator_process import cpu_seconds, free_port
from client_rate_limit import bound_seconds

from klaviyo_bridge.exports.job import export_query
from klaviyo_bridge.exports.settings import parse_export_settings
from klaviyo_bridge.memory import use_lean_arrow_pool
from klaviyo_bridge.store.factory import open_warehouse
from klaviyo_emulator.settings import DEFAULT_API_KEY
from klaviyo_spec import spec_revision

PROFILES_PER_JOB = 10_000


def generate(path: Path, rows: int, distinct_phones: int) -> float:
    """Write bench.profiles with ``rows`` rows into a DuckDB file (in a child process)."""
    phone_mod = distinct_phones if distinct_phones > 0 else 30_000_000  # +44 20 [3|7|8]xxx xxxx: all valid
    sql = f"""
        CREATE SCHEMA bench;
        CREATE TABLE bench.profiles AS
        SELECT 'user' || i || '@example.com' AS email,
               'First' || (i % 997) AS first_name,
               CASE WHEN i % 10 = 0 THEN NULL ELSE 'Last' || (i % 4999) END AS last_name,
               '+4420' || CAST(30000000 + (i * 7919) % {phone_mod} + CASE WHEN (i * 7919) % {phone_mod} >= 10000000 THEN 30000000 ELSE 0 END AS VARCHAR) AS phone_number,
               CASE i % 3 WHEN 0 THEN 'gold' WHEN 1 THEN 'silver' ELSE 'bronze' END AS tier,
               CAST(i % 5000 AS BIGINT) AS points
        FROM generate_series(0, {rows - 1}) AS t(i)
        ORDER BY i;
    """
    code = f"import duckdb; con = duckdb.connect({str(path)!r}); con.execute({sql!r}); con.close()"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - t0


class Emulator:
    """The emulator in its own process, with job speed settings the CLI has no flags for."""

    def __init__(self, latency_ms: int, job_speed: float) -> None:
        self.port = free_port()
        code = textwrap.dedent(f"""
            from klaviyo_emulator.server import serve
            from klaviyo_emulator.settings import EmulatorSettings
            serve(EmulatorSettings(profiles=1000, events=1000, latency_ms={latency_ms}, rate_limits=True,
                                   job_profiles_per_second={job_speed!r}, job_queued_seconds=0.0),
                  "127.0.0.1", {self.port})
        """)
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.base = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "Emulator":
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"emulator exited: {self.proc.stderr.read().decode()[-2000:]}")
            try:
                httpx.get(self.base + "/", timeout=1)
                return self
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("emulator did not start within 120 s")

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def first_list_id(self) -> str:
        r = httpx.get(
            self.base + "/api/lists/",
            headers={
                "Authorization": f"Klaviyo-API-Key {DEFAULT_API_KEY}",
                "revision": spec_revision(),
                "Accept": "application/vnd.api+json",
            },
        )
        r.raise_for_status()
        return r.json()["data"][0]["id"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--latency-ms", type=int, default=150)
    ap.add_argument("--job-speed", type=float, default=1_000_000.0, help="emulator job profiles per second")
    ap.add_argument("--distinct-phones", type=int, default=0, help="0 = every row has its own phone number")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument(
        "--strict",
        action="store_true",
        help="skip_invalid_records: false (the setting's default): every row is validated before the first request",
    )
    args = ap.parse_args()
    use_lean_arrow_pool()  # as the klaviyo-bridge command does: the process chooses Arrow's allocator
    n = args.rows
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "warehouse.duckdb"
        gen = generate(db, n, args.distinct_phones)
        with Emulator(args.latency_ms, args.job_speed) as emu:
            list_id = emu.first_list_id()
            settings = parse_export_settings(
                {
                    "type": "klaviyo",
                    "api_token": DEFAULT_API_KEY,
                    "base_url": emu.base,
                    "operation": "add",
                    "list_identify_type": "id",
                    "list_value": list_id,
                    "skip_invalid_records": not args.strict,
                    "wait_for_completion": True,
                    "waiting_time_for_completion_millis": 300_000,
                    "concurrency": args.concurrency,
                }
            )
            print(
                f"add {n:,} rows (generated in {gen:.1f}s) to list {list_id}; emulator latency {args.latency_ms} ms, "
                f"spec rate limits on, jobs queued 0 s then {args.job_speed:,.0f} profiles/s; "
                f"phones {'unique' if args.distinct_phones <= 0 else f'{args.distinct_phones:,} distinct'}"
                f"{'; strict (a validation pass first)' if args.strict else ''}"
            )
            with open_warehouse(db) as wh:
                cpu0, emu0 = _cpu_seconds(), cpu_seconds(emu.proc.pid)
                t0 = time.perf_counter()
                result = export_query(wh, "SELECT * FROM profiles", settings, database="bench")
                wall = time.perf_counter() - t0
                cpu, emulator_cpu = _cpu_seconds() - cpu0, cpu_seconds(emu.proc.pid) - emu0
    jobs = math.ceil(n / PROFILES_PER_JOB)
    latency = args.latency_ms / 1000
    bound = bound_seconds("bulk_import_profiles", jobs, latency) + PROFILES_PER_JOB / args.job_speed
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    counts = result.summary.counts
    accounted = sum(counts.values())
    ok = "" if accounted == n else f"  MISMATCH: {accounted:,} rows accounted for, expected {n:,}"
    print(f"  {result.summary.line()}")
    print(
        f"wall {wall:.2f}s  {n / wall:,.0f} rows/s  peak RSS {rss:,.0f} MB  batches {result.batches}  "
        f"requests {result.requests}  bound {bound:.2f}s ({jobs} job POSTs)  ratio {wall / bound:.2f}{ok}"
    )
    print(
        f"CPU: bridge {cpu:.1f}s ({n / max(cpu, 1e-9):,.0f} rows per CPU-s), emulator {emulator_cpu:.1f}s "
        f"(both share this machine's cores)"
    )


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    main()
