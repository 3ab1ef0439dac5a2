#!/usr/bin/env python3
"""How close the client runs to Klaviyo's published rate limits.

    python benchmarks/client_rate_limit.py [--operation get_lists] [--requests 700] [--latency-ms 150] [--concurrency 32]

The emulator (own process) enforces the spec's limits and adds latency; the client
sends N concurrent requests of one operation through its limiter. The bound is the
earliest time N requests can complete under the burst and steady windows (computed
with a fresh sliding-window limiter) plus one round trip. Prints wall time,
requests/s, 429s seen, and wall/bound (1.00 = at the limit).
"""

from __future__ import annotations

import argparse
import asyncio
import time

from _emulator_process import emulator_process

from klaviyo_bridge.api.client import KlaviyoClient
from klaviyo_bridge.api.query import Query
from klaviyo_bridge.api.ratelimit import WindowLimiter
from klaviyo_bridge.api.settings import ClientSettings
from klaviyo_emulator.settings import DEFAULT_API_KEY
from klaviyo_spec import operation


def bound_seconds(op_id: str, n: int, latency: float) -> float:
    lim = WindowLimiter.for_ratelimit(operation(op_id).ratelimit)
    last = 0.0
    for _ in range(n):
        last = lim.reserve(0.0)
    return last + latency


async def run(base: str, op_id: str, n: int, concurrency: int) -> tuple[float, KlaviyoClient]:
    settings = ClientSettings(api_key=DEFAULT_API_KEY, base_url=base, max_concurrency=concurrency)
    op = operation(op_id)
    query = Query(page_size=op.page_size_max) if op.page_size_max else None
    async with KlaviyoClient(settings) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(client.request(op_id, query=query) for _ in range(n)))
        return time.perf_counter() - t0, client


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--operation", default="get_lists")
    ap.add_argument("--requests", type=int, default=700)
    ap.add_argument("--latency-ms", type=int, default=150)
    ap.add_argument("--concurrency", type=int, default=32)
    args = ap.parse_args()
    rl = operation(args.operation).ratelimit
    with emulator_process("--profiles", "1000", "--events", "1000", "--latency-ms", str(args.latency_ms)) as base:
        wall, client = asyncio.run(run(base, args.operation, args.requests, args.concurrency))
    bound = bound_seconds(args.operation, args.requests, args.latency_ms / 1000)
    s = client.stats
    print(
        f"{args.operation}: limits {rl.burst_per_second}/s burst, {rl.steady_per_minute}/min steady; "
        f"{args.requests} requests, {args.latency_ms} ms latency, concurrency {args.concurrency}"
    )
    print(
        f"wall {wall:.2f}s  bound {bound:.2f}s  ratio {wall / bound:.3f}  "
        f"{args.requests / wall:.1f} req/s  429s {s.throttled}  retries {s.retries}"
    )


if __name__ == "__main__":
    main()
