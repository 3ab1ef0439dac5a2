#!/usr/bin/env python3
"""Import throughput from the emulator into DuckDB, concurrent windows vs one page at a time.

    python benchmarks/import_events.py --events 1000000 [--source events|profiles] [--latency-ms 150]
                                       [--concurrency 8] [--skip-sequential] [--mode append|replace|merge|...]

The emulator runs in its own process with the spec's rate limits and added latency.
The bound is the earliest time the needed page requests can complete under the
endpoint's burst and steady windows (a fresh sliding-window limiter), plus one
round trip. Prints wall time, records/s, pages, peak RSS and wall/bound for each mode, and the
bridge process's own CPU time (records per CPU-second: what the import costs, apart from the
emulator that shares this machine's cores), and the emulator's CPU time: with both on two cores,
the wall time is about (bridge CPU + emulator CPU) / 2 once the rate limits stop being the bound.
"""

from __future__ import annotations

import argparse
import math
import resource
import tempfile
import time
from pathlib import Path

from _emulator_process import PIDS, cpu_seconds, emulator_process
from client_rate_limit import bound_seconds

from klaviyo_bridge import aio
from klaviyo_bridge.config import parse_import_config
from klaviyo_bridge.imports.runner import run_import
from klaviyo_bridge.imports.streams import stream
from klaviyo_bridge.memory import use_lean_arrow_pool
from klaviyo_bridge.store.factory import open_warehouse
from klaviyo_emulator.settings import DEFAULT_API_KEY


def run_mode(
    base: str,
    source: str,
    concurrency: int,
    windows: int | None,
    label: str,
    expected: int,
    latency: float,
    mode: str = "append",
    warehouse: str | None = None,
):
    config = parse_import_config(
        {
            "in": {"data_source": source, "api_token": DEFAULT_API_KEY, "base_url": base, "skip_related_object": False},
            "out": {"mode": mode},
        }
    )
    with tempfile.TemporaryDirectory() as tmp, open_warehouse(warehouse or Path(tmp) / "bench.duckdb") as wh:
        if warehouse:
            with wh.transaction() as session:
                session.execute(f"DROP TABLE IF EXISTS bench.{source}")
        cpu0, emu0 = _cpu_seconds(), cpu_seconds(PIDS[base])
        t0 = time.perf_counter()
        result = aio.run(run_import(config, wh, "bench", source, concurrency=concurrency, windows=windows))
        wall = time.perf_counter() - t0
        cpu = _cpu_seconds() - cpu0
        emulator_cpu = cpu_seconds(PIDS[base]) - emu0
    s = stream(source)
    bound = bound_seconds(s.operation_id, math.ceil(expected / s.page_size()), latency)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ok = "" if result.rows == expected else f"  MISMATCH: expected {expected}"
    print(
        f"{label:<22} {result.rows:>9,} rows {wall:>8.1f}s {result.rows / wall:>9,.0f} rec/s "
        f"{result.pages:>6} pages {result.throttled:>4} 429s  bound {bound:>6.1f}s  ratio {wall / bound:>6.2f}  "
        f"peak RSS {rss:,.0f} MB  bridge CPU {cpu:.1f}s = {result.rows / max(cpu, 1e-9):,.0f} rec per CPU-s  "
        f"emulator CPU {emulator_cpu:.1f}s{ok}"
    )


def _cpu_seconds() -> float:
    """User + system CPU of this process (the bridge side; the emulator runs elsewhere)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--profiles", type=int, default=None, help="default: events/10 (at least 1000)")
    ap.add_argument("--source", choices=["events", "profiles"], default="events")
    ap.add_argument("--latency-ms", type=int, default=150)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--skip-sequential", action="store_true", help="only the concurrent mode")
    ap.add_argument("--mode", default="append", help="out.mode: append, replace, replace_on_new_data, merge")
    ap.add_argument(
        "--warehouse",
        help="e.g. postgresql://postgres@127.0.0.1:5432/test (default: a temporary DuckDB "
        "file); the table bench.<source> is dropped first",
    )
    args = ap.parse_args()
    use_lean_arrow_pool()  # as the klaviyo-bridge command does: the process chooses its allocators
    profiles = args.profiles or max(1000, args.events // 10)
    expected = args.events if args.source == "events" else profiles
    with emulator_process(
        "--events", str(args.events), "--profiles", str(profiles), "--latency-ms", str(args.latency_ms)
    ) as base:
        print(f"{args.source}: {expected:,} records, emulator latency {args.latency_ms} ms, spec rate limits on")
        latency = args.latency_ms / 1000
        run_mode(
            base,
            args.source,
            args.concurrency,
            None,
            f"concurrent (x{args.concurrency})",
            expected,
            latency,
            args.mode,
            args.warehouse,
        )
        if not args.skip_sequential:
            run_mode(base, args.source, 1, 1, "one page at a time", expected, latency, args.mode, args.warehouse)


if __name__ == "__main__":
    main()
