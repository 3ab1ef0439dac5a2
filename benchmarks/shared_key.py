#!/usr/bin/env python3
"""Two importers sharing one key: 429s and wall time against the rate-limit bound.

    python benchmarks/shared_key.py [--profiles 30000] [--latency-ms 150] [--repeat 1]
                                    [--budgets redis,postgres,none] [--limits spec,*=0.3]

Two ``klaviyo-bridge connector:issue`` processes import every profile of one emulator account
(the emulator in its own process, ``--latency-ms`` per request, rate limits on) at the same time,
with the same key:

* ``redis``: the shared budget in Redis (``KLAVIYO_BRIDGE_RATE_BUDGET=redis://127.0.0.1:6379/0``),
  DuckDB homes;
* ``postgres``: the budget in the PostgreSQL state (``--warehouse postgresql://...``, a schema each);
* ``none``: no shared budget (``KLAVIYO_BRIDGE_RATE_BUDGET=local``): each process paces itself
  from the ``RateLimit-*`` headers (adaptive pacing) only.

``--limits``: ``spec`` (the published limits) and/or an emulator ``--rate-limits`` value for the
account (``*=0.3``: 30% of every published limit): the clients only learn such a limit from the
answers' headers. A fresh emulator serves each run, so no run starts in the window of another.

Prints each process's requests and 429s (as the process counted them), the server's count of
``get_profiles`` answers and 429s, the share answered 429 (goal: < 1%), wall time, CPU seconds of
each process, and the bound: the earliest time the server's count of requests can be answered
under the account's windows (a fresh sliding-window limiter) plus one round trip; ratio wall/bound.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from _counting_emulator import counting_emulator, server_counts
from _emulator_process import cpu_seconds

from klaviyo_bridge.api.ratelimit import WindowLimiter
from klaviyo_emulator.limits import overridden, parse_overrides
from klaviyo_emulator.settings import DEFAULT_API_KEY
from klaviyo_spec import operation

REDIS_URL = os.environ.get("KLAVIYO_BRIDGE_BENCH_REDIS", "redis://127.0.0.1:6379/0")
PG_URL = os.environ.get("KLAVIYO_BRIDGE_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
OPERATION = "get_profiles"
CONFIG = """\
in:
  type: klaviyo
  data_source: profiles
  api_token: {key}
  base_url: {base}
out:
  mode: replace
"""
SUMMARY = re.compile(r"(\d+) rows, \d+ pages, (\d+) requests, \d+ retries, (\d+) throttled")


def account_windows(limits: str) -> tuple[tuple[int, float], ...]:
    published = operation(OPERATION).ratelimit
    limit = published if limits == "spec" else overridden(parse_overrides(limits), OPERATION, "", published)
    return tuple(limit.windows())


def bound_seconds(windows: tuple[tuple[int, float], ...], n: int, latency: float) -> float:
    lim = WindowLimiter(windows)
    last = 0.0
    for _ in range(n):
        last = lim.reserve(0.0)
    return last + latency


def run_pair(tmp: Path, base: str, budget: str) -> tuple[float, list[dict[str, float]]]:
    """Two importer processes at once; wall seconds and per process rows/requests/429s/CPU/RSS."""
    procs = []
    for i in range(2):
        home = tmp / f"home-{uuid.uuid4().hex[:8]}"
        home.mkdir()
        cfg = home / "profiles.yml"
        cfg.write_text(CONFIG.format(key=DEFAULT_API_KEY, base=base))
        env = dict(os.environ)
        env["KLAVIYO_BRIDGE_RATE_BUDGET"] = {"redis": REDIS_URL, "postgres": "", "none": "local"}[budget]
        if budget == "postgres":
            env.pop("KLAVIYO_BRIDGE_RATE_BUDGET")
        database = f"shared_{uuid.uuid4().hex[:8]}"
        args = [
            sys.executable,
            "-m",
            "klaviyo_bridge",
            "--home",
            str(home),
            "connector:issue",
            str(cfg),
            "-d",
            database,
            "-t",
            "profiles",
            *(["--warehouse", PG_URL] if budget == "postgres" else []),
        ]
        out = (home / "out.txt").open("w+")
        err = (home / "err.txt").open("w+")
        procs.append((subprocess.Popen(args, env=env, stdout=out, stderr=err, text=True), out, err))
    t0 = time.perf_counter()
    results = []
    for proc, out, err in procs:
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        results.append((proc, out, err, usage, time.perf_counter() - t0))
    wall = max(r[4] for r in results)
    per = []
    for proc, out, err, usage, _ in results:
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
        if proc.returncode != 0:
            raise RuntimeError(f"importer exited {proc.returncode}: {stderr[-2000:]}")
        m = SUMMARY.search(stdout)
        if not m:
            raise RuntimeError(f"no summary in: {stdout[-2000:]}")
        rows, requests, throttled = (int(x) for x in m.groups())
        per.append(
            {
                "rows": rows,
                "requests": requests,
                "throttled": throttled,
                "cpu": usage.ru_utime + usage.ru_stime,
                "rss": usage.ru_maxrss / 1024,
            }
        )
    return wall, per


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profiles", type=int, default=30_000)
    ap.add_argument("--latency-ms", type=int, default=150)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--budgets", default="redis,postgres,none")
    ap.add_argument("--limits", default="spec,*=0.3")
    ap.add_argument("--low-profiles", type=int, default=6_000, help="profiles per run with a lower account limit")
    args = ap.parse_args()
    print(
        f"two connector:issue processes importing every profile of one account at once; "
        f"latency {args.latency_ms} ms; load average {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for limits in args.limits.split(","):
            windows = account_windows(limits)
            profiles = args.profiles if limits == "spec" else args.low_profiles
            print(
                f"\n{OPERATION} limits {limits}: "
                + ", ".join(f"{n}/{t:g}s" for n, t in windows)
                + f"; {profiles:,} profiles each"
            )
            for budget in args.budgets.split(","):
                for _ in range(args.repeat):
                    settings = dict(
                        profiles=profiles,
                        events=0,
                        lists=0,
                        latency_ms=args.latency_ms,
                        rate_limits=True,
                        rate_limit_overrides=None if limits == "spec" else limits,
                    )
                    with counting_emulator(**settings) as (base, emu):
                        emu_cpu0 = cpu_seconds(emu.pid)
                        wall, per = run_pair(Path(tmp), base, budget)
                        emu_cpu = cpu_seconds(emu.pid) - emu_cpu0
                        counted = server_counts(base).get((OPERATION, ""), {})
                    answered = sum(counted.values())
                    refused = counted.get(429, 0)
                    bound = bound_seconds(windows, answered - refused, args.latency_ms / 1000)
                    procs = "; ".join(
                        f"p{i + 1}: {p['rows']:,} rows, {p['requests']} requests, "
                        f"{p['throttled']} 429, {p['cpu']:.1f} CPU-s, {p['rss']:.0f} MB"
                        for i, p in enumerate(per)
                    )
                    print(f"  {budget:8s} {procs}")
                    print(
                        f"  {'':8s} server: {answered} requests, {refused} answered 429 "
                        f"({100 * refused / max(answered, 1):.2f}%)  wall {wall:.2f}s  bound {bound:.2f}s "
                        f"({answered - refused} requests)  ratio {wall / bound:.2f}  emulator {emu_cpu:.1f} CPU-s"
                        f"  load {os.getloadavg()[0]:.1f}"
                    )
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"\n(this process: {usage.ru_utime + usage.ru_stime:.1f} CPU-s)")


if __name__ == "__main__":
    main()
