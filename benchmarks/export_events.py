#!/usr/bin/env python3
"""Track N events (``operation: track_events``) at Klaviyo's rate limits.

    python benchmarks/export_events.py [--events 1000000] [--latency-ms 150]

N rows (metric_name, email, time, value, two properties) in a DuckDB warehouse are exported as
events to an emulator in its own process (spec rate limits on: bulk create events 10/s burst,
150/min steady; ``--latency-ms`` per request), with ``skip_invalid_records: true`` (the input is
read once; strict mode reads it twice). Prints the wall time, the requests, the
rate-limit bound for ceil(N / 1,000) requests measured the same way the client paces them
(``client_rate_limit.bound_seconds``) and their ratio (goal <= 1.2), peak RSS, and that the
emulator holds exactly N new events.
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _emulator_process import PIDS, cpu_seconds, emulator_process
from client_rate_limit import bound_seconds

from klaviyo_bridge.exports.job import export_query
from klaviyo_bridge.exports.settings import parse_export_settings
from klaviyo_bridge.memory import use_lean_arrow_pool
from klaviyo_bridge.store.factory import open_warehouse
from klaviyo_emulator.settings import DEFAULT_API_KEY

METRIC = "Benchmark Order"


def make_rows(db: Path, n: int) -> None:
    with open_warehouse(db) as wh:
        with wh.transaction() as s:
            s.execute("CREATE SCHEMA bench")
            s.execute(f"""CREATE TABLE bench.orders AS SELECT i AS n, 'buyer' || (i % 50000) || '@example.org' AS email,
                '{METRIC}' AS metric_name, TIMESTAMP '2025-01-01' + i * INTERVAL 7 SECOND AS time,
                round((i % 997) * 1.37, 2) AS value, 'SKU-' || (i % 311) AS sku, (i % 5) + 1 AS quantity
                FROM range({n}) t(i)""")


def events_recorded(base: str) -> int:
    headers = {"Authorization": f"Klaviyo-API-Key {DEFAULT_API_KEY}", "revision": "2026-07-15"}
    with httpx.Client(base_url=base, headers=headers, timeout=120) as c:
        metric = [m["id"] for m in c.get("/api/metrics").json()["data"] if m["attributes"]["name"] == METRIC]
        if not metric:
            return 0
        total, url = 0, "/api/events"
        params = {"filter": f'equals(metric_id,"{metric[0]}")', "page[size]": "1000", "fields[event]": "timestamp"}
        while url:
            r = c.get(url, params=params if url == "/api/events" else None)
            if r.status_code == 429:
                time.sleep(int(r.headers.get("Retry-After", "1")))
                continue
            doc = r.json()
            total += len(doc["data"])
            url = doc["links"].get("next")
        return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--latency-ms", type=int, default=150)
    ap.add_argument("--count-events", action="store_true", help="read every event back to count them (slow)")
    args = ap.parse_args()
    use_lean_arrow_pool()  # as the klaviyo-bridge command does: the process chooses Arrow's allocator
    n = args.events
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "w.duckdb"
        make_rows(db, n)
        with emulator_process(
            "--seed", "3", "--profiles", "1000", "--events", "0", "--lists", "1", "--latency-ms", str(args.latency_ms)
        ) as base:
            settings = parse_export_settings(
                {
                    "type": "klaviyo",
                    "api_token": DEFAULT_API_KEY,
                    "base_url": base,
                    "operation": "track_events",
                    "skip_invalid_records": True,
                }
            )
            with open_warehouse(db) as wh:
                cpu0 = time.process_time()
                t0 = time.perf_counter()
                result = export_query(
                    wh, "SELECT email, metric_name, time, value, sku, quantity FROM orders ORDER BY n", settings, database="bench"
                )
                wall = time.perf_counter() - t0
                cpu = time.process_time() - cpu0
            emulator_cpu = cpu_seconds(PIDS[base])
            recorded = events_recorded(base) if args.count_events else None
    requests = math.ceil(n / 1000)
    bound = bound_seconds("bulk_create_events", requests, args.latency_ms / 1000)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"track_events: {n:,} events in {requests:,} bulk requests of 1,000; emulator latency {args.latency_ms} ms, "
        "spec rate limits on (bulk_create_events: 10/s burst, 150/min steady)"
    )
    print(f"  {result.summary.line()}")
    print(
        f"  wall {wall:.1f}s, requests {result.requests:,}, our CPU {cpu:.1f}s, emulator CPU {emulator_cpu:.1f}s, "
        f"peak RSS {rss:,.0f} MB"
    )
    if recorded is not None:
        print(f"  events the emulator holds for the metric: {recorded:,} (expected {n:,})")
    print(f"rate-limit bound {bound:.1f}s; ratio {wall / bound:.2f} (goal <= 1.20)")
    sys.exit(0 if result.status == "success" else 1)


if __name__ == "__main__":
    main()
