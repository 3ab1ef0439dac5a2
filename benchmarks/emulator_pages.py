#!/usr/bin/env python3
"""Pages per second the emulator serves with rate limits off (server in its own process),
beside the rate our importer reads the same data at, in the same run.

    python benchmarks/emulator_pages.py [--profiles 100000] [--events 1000000] [--seconds 10] [--clients 2]
                                        [--skip-import] [--goal 300]

The clients are lean on purpose (HTTP/1.1 keep-alive over asyncio streams; a page's
records are counted and its ``links.next`` found in the bytes, not parsed as JSON), so
the figure is the emulator's, not the client's: both share this machine's cores.
Besides wall-clock pages/s it prints the emulator process's CPU time per page, and
pages per emulator CPU-second (what one core of the emulator serves, the figure that
does not move with the machine's other load). The goal (issue 16): at least 300 pages/s
of 1,000 events, so the emulator is never the bottleneck of our benchmarks; the ratio
printed is pages per emulator CPU-second / goal (>= 1 meets it).

Then the importer reads every event of the same emulator into a temporary DuckDB
(``data_source: events``, with the metric and profile lookups, as the import benchmark
does, limits off, no latency), and the emulator's events/s is printed beside the
importer's records/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import tempfile
import time
from pathlib import Path

from _emulator_process import PIDS, cpu_seconds, emulator_process

from klaviyo_emulator.settings import DEFAULT_API_KEY
from klaviyo_spec import operation

REVISION = "2026-07-15"
#: The import benchmark's request: events with their metric and (sparse) profile included.
EVENT_INCLUDES = "&include=metric,profile&fields[metric]=name&fields[profile]=email,phone_number,external_id"
CASES = [
    ("get_profiles", "/api/profiles", 100, ""),
    ("get_events", "/api/events", 200, ""),
    ("get_events", "/api/events", 1000, ""),
    ("get_events", "/api/events", 1000, EVENT_INCLUDES),
    ("get_lists", "/api/lists", 10, ""),
]
RESOURCE_TYPE = {"/api/profiles": b"profile", "/api/events": b"event", "/api/lists": b"list"}


async def measure(base: str, path: str, page_size: int, seconds: float, clients: int, extra: str = "") -> tuple[int, int, int]:
    """(pages, records, bytes) walked by ``clients`` concurrent walkers in ``seconds``; each walker
    follows links.next and starts over at the end."""
    host, port = base.removeprefix("http://").split(":")
    first = f"{path}?page[size]={page_size}{extra}"
    marker = b'{"type":"' + RESOURCE_TYPE[path] + b'","id"'
    pages = records = size = 0
    deadline = time.perf_counter() + seconds

    async def walker() -> None:
        nonlocal pages, records, size
        reader, writer = await asyncio.open_connection(host, int(port), limit=1 << 24)
        target = first
        try:
            while time.perf_counter() < deadline:
                writer.write(
                    f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Klaviyo-API-Key "
                    f"{DEFAULT_API_KEY}\r\nrevision: {REVISION}\r\n\r\n".encode()
                )
                head = await reader.readuntil(b"\r\n\r\n")
                status = head.split(b" ", 2)[1]
                length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
                body = await reader.readexactly(length)
                if status != b"200":
                    raise RuntimeError(f"{target}: HTTP {status.decode()} {body[:300]!r}")
                pages += 1
                size += length
                # records of the page: resources of its own type ahead of "included"
                cut = body.find(b'"included":')
                records += body.count(marker, 0, cut if cut >= 0 else len(body))
                at = body.rfind(b'"next":"')
                if at < 0:
                    target = first
                    continue
                url = body[at + 8 : body.index(b'"', at + 8)].decode()
                target = url[url.index("/api/") :]
        finally:
            writer.close()

    await asyncio.gather(*(walker() for _ in range(clients)))
    return pages, records, size


def import_events(base: str, expected: int) -> tuple[int, int, float, float]:
    """(rows, pages, seconds, bridge CPU-seconds) of the importer reading every event of the emulator into DuckDB."""
    from klaviyo_bridge import aio
    from klaviyo_bridge.config import parse_import_config
    from klaviyo_bridge.imports.runner import run_import
    from klaviyo_bridge.store.factory import open_warehouse

    config = parse_import_config(
        {
            "in": {"data_source": "events", "api_token": DEFAULT_API_KEY, "base_url": base, "skip_related_object": False},
            "out": {"mode": "append"},
        }
    )
    with tempfile.TemporaryDirectory() as tmp, open_warehouse(Path(tmp) / "bench.duckdb") as wh:
        cpu0, t0 = _own_cpu(), time.perf_counter()
        result = aio.run(run_import(config, wh, "bench", "events", concurrency=16))
        wall, cpu = time.perf_counter() - t0, _own_cpu() - cpu0
    if result.rows != expected:
        print(f"  MISMATCH: the import has {result.rows:,} rows, expected {expected:,}")
    return result.rows, result.pages, wall, cpu


def _peak_rss_mb(pid: int) -> float:
    """Peak resident memory of a process (Linux /proc), MB."""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profiles", type=int, default=100_000)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--goal", type=float, default=300.0, help="pages/s of 1,000 events the emulator should serve")
    ap.add_argument("--skip-import", action="store_true", help="only the emulator's figures")
    args = ap.parse_args()
    with emulator_process(
        "--profiles",
        str(args.profiles),
        "--events",
        str(args.events),
        "--no-rate-limits",
        "--clock",
        "fixed:2026-12-01T00:00:00Z",
    ) as base:
        pid = PIDS[base]
        print(
            f"emulator: {args.profiles:,} profiles, {args.events:,} events, rate limits off, one process; "
            f"{args.clients} lean clients, {args.seconds:.0f}s per case; {os.cpu_count()} cores shared with the clients"
        )
        print(
            f"{'operation':<15} {'page':>5} {'pages/s':>8} {'records/s':>10} {'MB/page':>8} {'emu ms/page':>11} "
            f"{'pages/emu-CPU-s':>15} {'Klaviyo steady/s':>16} {'x steady':>8} {'x goal':>7}"
        )
        headline = {}
        for op_id, path, size, extra in CASES:
            asyncio.run(measure(base, path, size, 1.0, args.clients, extra))  # warm caches
            cpu0, t0 = cpu_seconds(pid), time.perf_counter()
            pages, records, nbytes = asyncio.run(measure(base, path, size, args.seconds, args.clients, extra))
            elapsed, cpu = time.perf_counter() - t0, cpu_seconds(pid) - cpu0
            steady = operation(op_id).ratelimit.steady_per_minute / 60
            per_cpu = pages / max(cpu, 1e-9)
            label = op_id + ("+incl" if extra else "")
            goal = f"{per_cpu / args.goal:>7.2f}" if size == 1000 else f"{'':>7}"
            print(
                f"{label:<15} {size:>5} {pages / elapsed:>8.1f} {records / elapsed:>10,.0f} {nbytes / pages / 1e6:>8.2f} "
                f"{cpu / pages * 1000:>11.2f} {per_cpu:>15.0f} {steady:>16.1f} {pages / elapsed / steady:>8.1f} {goal}"
            )
            if size == 1000:
                headline[label] = (pages / elapsed, records / elapsed, per_cpu)
        print(f"emulator peak RSS {_peak_rss_mb(pid):,.0f} MB (with the columns it keeps per block, see blockcache.py)")
        for label, (wall_rate, records_rate, per_cpu) in headline.items():
            print(
                f"{label}: {wall_rate:.0f} pages/s wall ({records_rate:,.0f} events/s), {per_cpu:.0f} pages per emulator "
                f"CPU-second = {per_cpu / args.goal:.2f} x the goal of {args.goal:.0f} pages/s"
            )
        if args.skip_import:
            return
        cpu0 = cpu_seconds(pid)
        rows, pages, wall, bridge_cpu = import_events(base, args.events)
        emulator_cpu = cpu_seconds(pid) - cpu0
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"importer (events + metric/profile lookups, 16 concurrent windows, into DuckDB): {rows:,} rows in {wall:.1f}s = "
            f"{rows / wall:,.0f} records/s, {pages / wall:.0f} pages/s; bridge CPU {bridge_cpu:.1f}s "
            f"({rows / max(bridge_cpu, 1e-9):,.0f} records per CPU-s), emulator CPU {emulator_cpu:.1f}s "
            f"({emulator_cpu / wall:.0%} of one core); peak RSS {rss:,.0f} MB"
        )
        wall_rate, records_rate, per_cpu = headline.get("get_events+incl", next(iter(headline.values())))
        print(
            f"emulator vs importer on the same request (events page 1000 + includes): {records_rate:,.0f} vs "
            f"{rows / wall:,.0f} records/s wall ({records_rate / (rows / wall):.2f}x); one emulator core serves "
            f"{per_cpu * 1000:,.0f} events/s ({per_cpu * 1000 / (rows / wall):.2f}x the importer's rate)"
        )


if __name__ == "__main__":
    main()
