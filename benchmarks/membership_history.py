#!/usr/bin/env python3
"""Membership history of a 200k-member list at Klaviyo's rate limits.

    python benchmarks/membership_history.py [--members 200000] [--churn 0.01] [--latency-ms 150]

An emulator in its own process (spec rate limits on, ``--latency-ms`` added per request) holds
a list of about ``--members`` members. Three imports of ``data_source: list_memberships`` into
DuckDB:

1. the first run: every member becomes an open history row;
2. ``--churn`` of the members leave and as many newcomers join (through Klaviyo's own list
   endpoints), then the second run records them (departures get ``left_at``);
3. a third run with nothing changed.

Each run reads the whole list (Klaviyo never says who left: a departure is an absence), so its
floor is the rate limit of ``get_profiles_for_list`` for members/100 pages. Prints each run's
time, requests, joined/left counts (checked against the churn), the bound measured from the
spec's limits with the same request count and latency, the ratio, and the importer's peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from _emulator_process import emulator_process  # noqa: E402
from client_rate_limit import bound_seconds  # noqa: E402

from klaviyo_bridge.config import parse_import_config  # noqa: E402
from klaviyo_bridge.imports.runner import run_import  # noqa: E402
from klaviyo_bridge.store.factory import open_warehouse  # noqa: E402
from klaviyo_emulator.data import LIST_FRACTIONS  # noqa: E402
from klaviyo_emulator.settings import DEFAULT_API_KEY  # noqa: E402

SEED = 9
HEADERS = {
    "Authorization": f"Klaviyo-API-Key {DEFAULT_API_KEY}",
    "revision": "2026-07-15",
    "content-type": "application/vnd.api+json",
}


def _send(c: httpx.Client, method: str, url: str, json: dict | None = None) -> httpx.Response:
    while True:
        r = c.request(method, url, json=json)
        if r.status_code != 429:
            r.raise_for_status()
            return r
        time.sleep(float(r.headers.get("Retry-After", "1")))


def list_and_ids(base: str) -> tuple[str, list[str]]:
    """The first list (the biggest) and its member ids, read once."""
    with httpx.Client(base_url=base, headers=HEADERS, timeout=60) as c:
        list_id = _send(c, "GET", "/api/lists").json()["data"][0]["id"]
        ids, url = [], f"/api/lists/{list_id}/relationships/profiles?page[size]=100"
        while url:
            doc = _send(c, "GET", url).json()
            ids += [d["id"] for d in doc["data"]]
            url = doc["links"].get("next")
        return list_id, ids


def churn(base: str, list_id: str, leaving: list[str], joining: list[str]) -> None:
    with httpx.Client(base_url=base, headers=HEADERS, timeout=60) as c:
        for method, ids in (("DELETE", leaving), ("POST", joining)):
            for i in range(0, len(ids), 1000):
                body = {"data": [{"type": "profile", "id": p} for p in ids[i : i + 1000]]}
                _send(c, method, f"/api/lists/{list_id}/relationships/profiles", json=body)


def outsiders(base: str, members: set[str], n: int) -> list[str]:
    """``n`` profiles not in the list (profile ids in id order, skipping members)."""
    out: list[str] = []
    with httpx.Client(base_url=base, headers=HEADERS, timeout=60) as c:
        url = "/api/profiles?page[size]=100&fields[profile]=email"
        while url and len(out) < n:
            doc = _send(c, "GET", url).json()
            out += [d["id"] for d in doc["data"] if d["id"] not in members]
            url = doc["links"].get("next")
    return out[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--members", type=int, default=200_000)
    ap.add_argument("--churn", type=float, default=0.01)
    ap.add_argument("--latency-ms", type=int, default=150)
    args = ap.parse_args()
    profiles = int(args.members / LIST_FRACTIONS[0])
    latency = args.latency_ms / 1000
    with (
        emulator_process(
            "--seed",
            str(SEED),
            "--profiles",
            str(profiles),
            "--events",
            "0",
            "--lists",
            "2",
            "--latency-ms",
            str(args.latency_ms),
            "--clock",
            "real",
        ) as base,
        tempfile.TemporaryDirectory() as tmp,
    ):
        list_id, ids = list_and_ids(base)
        cfg = parse_import_config(
            {
                "in": {
                    "type": "klaviyo",
                    "data_source": "list_memberships",
                    "list_id": list_id,
                    "api_token": DEFAULT_API_KEY,
                    "base_url": base,
                }
            }
        )
        runs = []
        with open_warehouse(Path(tmp) / "w.duckdb") as wh:

            def one(label: str) -> None:
                t0 = time.perf_counter()
                result = asyncio.run(run_import(cfg, wh, "bench", "members", now=datetime.now(timezone.utc)))
                runs.append((label, time.perf_counter() - t0, result))

            one("first run")
            n = int(len(ids) * args.churn)
            leaving, joining = ids[:: max(1, len(ids) // n)][:n], outsiders(base, set(ids), n)
            churn(base, list_id, leaving, joining)
            one(f"after {n:,} left and {n:,} joined")
            one("nothing changed")
            history = wh.table_arrow("bench", "members")
            current = wh.table_arrow("bench", "members_current").num_rows
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"membership history of list {list_id}: {len(ids):,} members, emulator latency {args.latency_ms} ms, "
        f"spec rate limits on (get_profiles_for_list)"
    )
    ok = True
    for label, wall, r in runs:
        pages = r.pages
        bound = bound_seconds("get_profiles_for_list", pages, latency)
        print(
            f"  {label:<34} {wall:7.1f} s  {r.requests:>6,} requests ({pages:,} member pages)  "
            f"joined {r.joined:>7,}  left {r.left:>6,}  bound {bound:6.1f} s  ratio {wall / bound:4.2f}x"
        )
    expected = [(len(ids), 0), (n, n), (0, 0)]
    got = [(r.joined, r.left) for _, _, r in runs]
    ok = got == expected and history.num_rows == len(ids) + n and current == len(ids)
    print(
        f"  history rows {history.num_rows:,} (= members + joiners: {len(ids) + n:,}), current rows {current:,}; "
        f"counts {'as expected' if ok else f'WRONG: {got} != {expected}'}"
    )
    print(f"  importer peak RSS {rss:,.0f} MB")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
