#!/usr/bin/env python3
"""``klaviyo-bridge replicate`` of every Qlik table against the emulator with the spec's limits.

    python benchmarks/replicate_tables.py [--events 200000] [--profiles 20000] [--latency-ms 150]
                                          [--repeat 1] [--warehouse postgresql://...]

One ``replicate`` process (every table of ``imports/replicate.py``: one per event metric, plus
campaigns, lists and global exclusions) into a fresh DuckDB home, against the emulator in its
own process with the spec's rate limits and ``--latency-ms`` per request. Its streams share one
rate budget per account and tier (one ``AccountLimits`` handed to every table), so no request should be answered
429. Prints the server's count of requests and 429s per operation and tier, the bound of each
(the earliest time its requests can be answered under the published windows, a fresh
sliding-window limiter, plus one round trip), the sum of those bounds (the tables run one after
the other) and the largest (all at once), wall time and ratio, CPU seconds and peak RSS.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

from _counting_emulator import counting_emulator, server_counts
from _emulator_process import cpu_seconds

from klaviyo_bridge.api.ratelimit import WindowLimiter
from klaviyo_emulator.settings import DEFAULT_API_KEY
from klaviyo_spec import operation


def bound_seconds(op_id: str, tier: str, n: int, latency: float) -> float:
    op = operation(op_id)
    limit = op.ratelimit
    for t in op.ratelimit_tiers:
        if t.name == tier:
            limit = t.ratelimit
    lim = WindowLimiter(tuple(limit.windows()))
    last = 0.0
    for _ in range(n):
        last = lim.reserve(0.0)
    return last + latency


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--profiles", type=int, default=20_000)
    ap.add_argument("--latency-ms", type=int, default=150)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--warehouse", help="a PostgreSQL warehouse URL instead of the home's DuckDB file")
    args = ap.parse_args()
    latency = args.latency_ms / 1000
    print(
        f"replicate every table: {args.events:,} events, {args.profiles:,} profiles, latency {args.latency_ms} ms, "
        f"spec rate limits on; load average {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)"
    )
    for _ in range(args.repeat):
        with (
            tempfile.TemporaryDirectory() as tmp,
            counting_emulator(profiles=args.profiles, events=args.events, latency_ms=args.latency_ms, rate_limits=True) as (
                base,
                emu,
            ),
        ):
            env = {
                **os.environ,
                "KLAVIYO_API_KEY": DEFAULT_API_KEY,
                "KLAVIYO_BASE_URL": base,
                "KLAVIYO_BRIDGE_RATE_BUDGET": "local",
            }
            cmd = [
                sys.executable,
                "-m",
                "klaviyo_bridge",
                "--home",
                tmp,
                "replicate",
                "-d",
                "qlik",
                "--start-date",
                "2020-01-01",
                *(["--warehouse", args.warehouse] if args.warehouse else []),
            ]
            emu0 = cpu_seconds(emu.pid)
            t0 = time.perf_counter()
            with open(os.path.join(tmp, "out.txt"), "w+") as out, open(os.path.join(tmp, "err.txt"), "w+") as err:
                proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, text=True)
                _, status, usage = os.wait4(proc.pid, 0)
                proc.returncode = os.waitstatus_to_exitcode(status)
                wall = time.perf_counter() - t0
                out.seek(0)
                err.seek(0)
                stdout, stderr = out.read(), err.read()
            emu_cpu = cpu_seconds(emu.pid) - emu0
            counts = server_counts(base)
        if proc.returncode != 0:
            raise SystemExit(f"replicate exited {proc.returncode}: {stderr[-3000:]}\n{stdout[-3000:]}")
        last = stdout.strip().splitlines()[-1]
        throttled_client = sum(int(m) for m in re.findall(r"(\d+) throttled", stdout))
        print(f"  {last}; the tables' summaries count {throttled_client} throttled")
        bounds = []
        total = refused_total = 0
        for (op_id, tier), by_status in sorted(counts.items()):
            n = sum(by_status.values())
            refused = by_status.get(429, 0)
            total, refused_total = total + n, refused_total + refused
            bound = bound_seconds(op_id, tier, n - refused, latency)
            bounds.append(bound)
            rl = operation(op_id).ratelimit
            print(
                f"    {op_id}{':' + tier if tier else ''} ({rl.burst_per_second}/s, {rl.steady_per_minute}/min): "
                f"{n} requests, {refused} answered 429, bound {bound:.2f}s"
            )
        print(
            f"  {total} requests, {refused_total} answered 429 ({100 * refused_total / max(total, 1):.2f}%); "
            f"wall {wall:.2f}s; bound, tables one after the other {sum(bounds):.2f}s (ratio "
            f"{wall / max(sum(bounds), 1e-9):.2f}), all at once {max(bounds):.2f}s (ratio {wall / max(bounds):.2f})"
        )
        print(
            f"  CPU: replicate {usage.ru_utime + usage.ru_stime:.1f}s (peak RSS {usage.ru_maxrss / 1024:.0f} MB), "
            f"emulator {emu_cpu:.1f}s; load {os.getloadavg()[0]:.1f}"
        )


if __name__ == "__main__":
    main()
