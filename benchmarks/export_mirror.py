#!/usr/bin/env python3
"""Mirror a list with 1% churn at Klaviyo's limits, against a full re-add measured in the same run.

    python benchmarks/export_mirror.py [--members 1000000] [--churn 0.01] [--latency-ms 150] [--first-run]

The emulator (its own process, spec rate limits on, ``--latency-ms`` per request) holds a list of
about ``--members`` members. The query result is that list with ``--churn`` of its members gone
and as many other profiles new. Measured, each against a fresh emulator:

* mirror, steady state: the list's snapshot from the previous run is in the warehouse (as a
  mirror run leaves it); the run reads the list's profile_count and the members who joined
  since, adds the new rows (one bulk import per 10,000), removes the departed (1,000 a request);
* full re-add: ``operation: add`` of every result row (what a user without mirror sends; it
  does not even remove the departed);
* with ``--first-run``: a mirror with no snapshot, which reads every member (100 a page).

Prints time and requests of each, the ratios, the list's final size, peak RSS.
"""

from __future__ import annotations

import argparse
import math
import resource
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
from _emulator_process import emulator_process
from client_rate_limit import bound_seconds

from klaviyo_bridge.exports.job import export_query
from klaviyo_bridge.exports.settings import parse_export_settings
from klaviyo_bridge.memory import use_lean_arrow_pool
from klaviyo_bridge.store.factory import open_warehouse
from klaviyo_emulator.app import create_app
from klaviyo_emulator.settings import DEFAULT_API_KEY, EmulatorSettings
from klaviyo_emulator.timefmt import iso

SEED = 23
LIST_SHARE = 0.55  # the emulator's first list holds about 55% of the profiles


def account(members: int, churn: float):
    profiles = int(members / LIST_SHARE * 1.02) + int(members * churn) + 1000
    app = create_app(EmulatorSettings(seed=SEED, profiles=profiles, events=0, lists=1, segments=0, rate_limits=False))
    emu = app.state.emulator
    list_id = emu.account.records["list"][0].id
    m = emu.account.list_members[list_id]
    rows = m.profiles
    base = emu.state.base
    emails = np.array([base.email(int(r)) for r in rows], dtype=object)
    k = int(len(rows) * churn)
    rng = np.random.default_rng(SEED)
    gone = np.zeros(len(rows), dtype=bool)
    gone[rng.choice(len(rows), k, replace=False)] = True
    outsiders = np.setdiff1d(np.arange(base.count, dtype=np.int64), rows)[:k]
    new = [base.email(int(r)) for r in outsiders]
    result = sorted(list(emails[~gone]) + new)  # the new rows spread through the result
    snapshot = pa.table(
        {
            "profile_id": pa.array(emu.state.profile_ids(rows), pa.string()),
            "email": pa.array(list(emails), pa.string()),
            "phone_number": pa.nulls(len(rows), pa.string()),
            "external_id": pa.nulls(len(rows), pa.string()),
        }
    )
    newest = iso(int(m.joined.max()))
    return profiles, list_id, result, snapshot, newest, k


def profile_count(base: str, list_id: str) -> int:
    headers = {"Authorization": f"Klaviyo-API-Key {DEFAULT_API_KEY}", "revision": "2026-07-15"}
    for _ in range(30):
        r = httpx.get(
            f"{base}/api/lists/{list_id}", params={"additional-fields[list]": "profile_count"}, headers=headers, timeout=60
        )
        if r.status_code == 200:
            return r.json()["data"]["attributes"]["profile_count"]
        time.sleep(int(r.headers.get("Retry-After", "1")))
    raise RuntimeError("profile_count unreadable")


def run(db: Path, args, profiles: int, list_id: str, operation: str, snapshot=None, newest=None, max_removals="10%"):
    # the account's clock fixed at the in-process account's "now", so both hold the same members
    emu_args = [
        "--seed",
        str(SEED),
        "--profiles",
        str(profiles),
        "--events",
        "0",
        "--lists",
        "1",
        "--latency-ms",
        str(args.latency_ms),
        "--clock",
        "fixed:2026-01-01T00:00:00Z",
    ]
    with emulator_process(*emu_args) as base:
        keys = {
            "type": "klaviyo",
            "api_token": DEFAULT_API_KEY,
            "base_url": base,
            "operation": operation,
            "list_value": list_id,
            "wait_for_completion": True,
            "waiting_time_for_completion_millis": 3_600_000,
            "skip_invalid_records": True,
        }
        if operation == "mirror":
            keys["max_removals"] = max_removals
        settings = parse_export_settings(keys)
        with open_warehouse(db) as wh:
            if snapshot is not None:
                wh.state.save_list_snapshot(f"{base}|{list_id}", snapshot, newest, "benchmark-setup")
            t0 = time.perf_counter()
            result = export_query(wh, "SELECT email FROM people ORDER BY n", settings, database="bench")
            wall = time.perf_counter() - t0
        size = profile_count(base, list_id)
    return wall, result, size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--members", type=int, default=1_000_000)
    ap.add_argument("--churn", type=float, default=0.01)
    ap.add_argument("--latency-ms", type=int, default=150)
    ap.add_argument("--first-run", action="store_true", help="also time a mirror with no snapshot (reads every member)")
    args = ap.parse_args()
    use_lean_arrow_pool()  # as the klaviyo-bridge command does: the process chooses Arrow's allocator
    t0 = time.perf_counter()
    profiles, list_id, result_emails, snapshot, newest, k = account(args.members, args.churn)
    setup = time.perf_counter() - t0
    members = snapshot.num_rows
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "w.duckdb"
        with open_warehouse(db) as wh:
            wh.write(
                "bench",
                "people",
                pa.table({"n": pa.array(np.arange(len(result_emails))), "email": pa.array(result_emails, pa.string())}),
            )
        figures = {}
        figures["mirror (snapshot)"] = run(db, args, profiles, list_id, "mirror", snapshot, newest)
        figures["full re-add"] = run(db, args, profiles, list_id, "add")
        if args.first_run:  # a fresh emulator (another address): no snapshot, every member is read
            figures["mirror (first run)"] = run(db, args, profiles, list_id, "mirror")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    latency = args.latency_ms / 1000
    print(
        f"mirror of a list of {members:,} members, churn {args.churn:.0%} ({k:,} gone, {k:,} new), "
        f"{len(result_emails):,} result rows; emulator latency {args.latency_ms} ms, spec rate limits on "
        f"(setup {setup:.0f}s)"
    )
    for name, (wall, result, size) in figures.items():
        print(f"  {name:<20} {wall:7.1f}s  requests {result.requests:>6,}  list size after {size:,}  {result.summary.line()}")
        for line in result.details:
            print(f"      {line}")
    m, full = figures["mirror (snapshot)"], figures["full re-add"]
    print(
        f"mirror / full re-add: time {m[0] / full[0]:.2f}x, requests {m[1].requests / full[1].requests:.2f}x; "
        f"the full re-add leaves {full[2] - (members - k + k):,} departed member(s) in the list"
    )
    print(
        f"first run (no snapshot) reads {math.ceil(members / 100):,} member pages: rate-limit bound "
        f"{bound_seconds('get_profiles_for_list', math.ceil(members / 100), latency):.0f}s; "
        f"full re-add bound {bound_seconds('bulk_import_profiles', math.ceil(len(result_emails) / 10_000), latency):.0f}s"
    )
    print(f"peak RSS {rss:,.0f} MB")


if __name__ == "__main__":
    main()
