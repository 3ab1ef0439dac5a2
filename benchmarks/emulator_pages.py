#!/usr/bin/env python3
"""Pages per second the emulator serves with rate limits off (server in its own process).

    python benchmarks/emulator_pages.py [--profiles 1000000] [--events 1000000] [--seconds 10] [--clients 4]

Prints, per endpoint and page size: pages/s, records/s, and the ratio to Klaviyo's
steady rate limit for that endpoint (>1 means the emulator can out-serve Klaviyo).
"""

from __future__ import annotations

import argparse
import asyncio
import time

import httpx

from _emulator_process import emulator_process
from klaviyo_spec import operation
from klaviyo_emulator.settings import DEFAULT_API_KEY

HEADERS = {"Authorization": f"Klaviyo-API-Key {DEFAULT_API_KEY}", "revision": "2026-07-15"}
#: The import benchmark's request: events with their metric and (sparse) profile included.
EVENT_INCLUDES = "&include=metric,profile&fields[metric]=name&fields[profile]=email,phone_number,external_id"
CASES = [("get_profiles", "/api/profiles", 100, ""), ("get_events", "/api/events", 200, ""), ("get_events", "/api/events", 1000, ""),
         ("get_events", "/api/events", 1000, EVENT_INCLUDES), ("get_lists", "/api/lists", 10, "")]


async def measure(base: str, path: str, page_size: int, seconds: float, clients: int, extra: str = "") -> tuple[int, int]:
    pages = records = 0
    deadline = time.perf_counter() + seconds

    async def walker(http: httpx.AsyncClient) -> None:
        nonlocal pages, records
        url = f"{base}{path}?page[size]={page_size}{extra}"
        while time.perf_counter() < deadline:
            doc = (await http.get(url)).json()
            pages += 1
            records += len(doc["data"])
            url = doc["links"].get("next") or f"{base}{path}?page[size]={page_size}{extra}"

    async with httpx.AsyncClient(headers=HEADERS, timeout=60) as http:
        await asyncio.gather(*(walker(http) for _ in range(clients)))
    return pages, records


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profiles", type=int, default=1_000_000)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--clients", type=int, default=4)
    args = ap.parse_args()
    with emulator_process("--profiles", str(args.profiles), "--events", str(args.events), "--no-rate-limits") as base:
        print(f"emulator: {args.profiles:,} profiles, {args.events:,} events; {args.clients} concurrent clients, "
              f"{args.seconds:.0f}s per case")
        print(f"{'operation':<14} {'page':>5} {'pages/s':>9} {'records/s':>10} {'Klaviyo steady/s':>17} {'ratio':>6}")
        for op_id, path, size, extra in CASES:
            asyncio.run(measure(base, path, size, 1.0, args.clients, extra))  # warm caches
            t0 = time.perf_counter()
            pages, records = asyncio.run(measure(base, path, size, args.seconds, args.clients, extra))
            elapsed = time.perf_counter() - t0
            steady = operation(op_id).ratelimit.steady_per_minute / 60
            print(f"{op_id + ('+incl' if extra else ''):<14} {size:>5} {pages / elapsed:>9.1f} {records / elapsed:>10,.0f} {steady:>17.1f} "
                  f"{pages / elapsed / steady:>6.2f}")


if __name__ == "__main__":
    main()
