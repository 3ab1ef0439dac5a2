#!/usr/bin/env python3
"""What checking list membership costs a list unsubscribe, at Klaviyo's rate limits.

    python benchmarks/export_unsubscribe.py [--rows 100000] [--latency-ms 150]

N rows (half members of the list, half not, interleaved) are unsubscribed from a list twice,
each time against a fresh emulator in its own process (spec rate limits on, ``--latency-ms``
added per request):

* checked: the default; before each batch of 100 the engine reads which of its profiles are
  members (``get_profiles_for_list``) and sends only those;
* sending alone: the same export with ``unsubscribe_non_members_globally: true``, which sends
  every row and reads nothing (what the engine did before it checked).

Prints both times, their ratio (the issue's bound: checked <= 1.3x sending alone), the requests
of each kind, the rate-limit bound of each run, and that the checked run unsubscribed nobody
globally while the unchecked one did.
"""

from __future__ import annotations

import argparse
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _emulator_process import emulator_process
from client_rate_limit import bound_seconds

from klaviyo_bridge.exports.job import export_query
from klaviyo_bridge.exports.settings import parse_export_settings
from klaviyo_bridge.memory import use_lean_arrow_pool
from klaviyo_bridge.store.factory import open_warehouse
from klaviyo_emulator.app import create_app
from klaviyo_emulator.settings import DEFAULT_API_KEY, EmulatorSettings

SEED = 5


def rows_for(profiles: int, rows: int) -> tuple[str, list[str], int]:
    """(list id, emails: members and non-members interleaved, member count), from the same seeded
    account the emulator process builds."""
    app = create_app(EmulatorSettings(seed=SEED, profiles=profiles, events=0, lists=3, rate_limits=False))
    emu = app.state.emulator
    best = max(emu.account.records["list"], key=lambda rec: len(emu.account.list_members[rec.id].profiles))
    member_rows = set(int(r) for r in emu.account.list_members[best.id].profiles)
    members = [emu.state.base.email(r) for r in sorted(member_rows)][: rows // 2]
    others = [emu.state.base.email(r) for r in range(emu.state.base.count) if r not in member_rows][: rows - len(members)]
    emails = [e for pair in zip(members, others) for e in pair] + members[len(others) :] + others[len(members) :]
    return best.id, emails, len(members)


def run(base: str, db: Path, list_id: str, globally: bool) -> tuple[float, object]:
    settings = parse_export_settings(
        {
            "type": "klaviyo",
            "api_token": DEFAULT_API_KEY,
            "base_url": base,
            "operation": "batch_consent",
            "consent_type": "unsubscribed",
            "subscription_type": "email_marketing_only",
            "list_value": list_id,
            "skip_invalid_records": True,
            "unsubscribe_non_members_globally": globally,
        }
    )
    with open_warehouse(db) as wh:
        t0 = time.perf_counter()
        result = export_query(wh, "SELECT email FROM rows ORDER BY n", settings, database="bench")
        return time.perf_counter() - t0, result


def unsubscribed(base: str, emails: list[str]) -> int:
    """How many of ``emails`` (the first 1,000) Klaviyo shows unsubscribed from all email marketing."""
    headers = {"Authorization": f"Klaviyo-API-Key {DEFAULT_API_KEY}", "revision": "2026-07-15"}
    found = 0
    with httpx.Client(base_url=base, headers=headers, timeout=30) as c:
        for start in range(0, min(len(emails), 1000), 100):
            part = ",".join(f"'{e}'" for e in emails[start : start + 100])
            r = c.get(
                "/api/profiles",
                params={"filter": f"any(email,[{part}])", "page[size]": "100", "additional-fields[profile]": "subscriptions"},
            )
            while r.status_code == 429:
                time.sleep(1)
                r = c.get(r.request.url)
            found += sum(
                1 for p in r.json()["data"] if p["attributes"]["subscriptions"]["email"]["marketing"]["consent"] == "UNSUBSCRIBED"
            )
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--latency-ms", type=int, default=150)
    args = ap.parse_args()
    use_lean_arrow_pool()  # as the klaviyo-bridge command does: the process chooses Arrow's allocator
    profiles = max(2 * args.rows, 10_000) * 2
    list_id, emails, n_members = rows_for(profiles, args.rows)
    n = len(emails)
    others = [e for i, e in enumerate(emails) if i % 2 == 1][:1000]
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "w.duckdb"
        code = (
            "import duckdb, sys, json; con = duckdb.connect(sys.argv[1]); con.execute('CREATE SCHEMA bench');"
            "emails = json.load(open(sys.argv[2])); con.execute('CREATE TABLE bench.rows (n BIGINT, email VARCHAR)');"
            "con.executemany('INSERT INTO bench.rows VALUES (?, ?)', list(enumerate(emails))); con.close()"
        )
        (Path(tmp) / "e.json").write_text(__import__("json").dumps(emails))
        subprocess.run([sys.executable, "-c", code, str(db), str(Path(tmp) / "e.json")], check=True)
        figures = {}
        for name, globally in (("checked", False), ("sending alone", True)):
            with emulator_process(
                "--seed",
                str(SEED),
                "--profiles",
                str(profiles),
                "--events",
                "0",
                "--lists",
                "3",
                "--latency-ms",
                str(args.latency_ms),
            ) as base:
                before = unsubscribed(base, others)
                wall, result = run(base, db, list_id, globally)
                harmed = unsubscribed(base, others) - before
            figures[name] = (wall, result, harmed)
    latency = args.latency_ms / 1000
    checked, alone = figures["checked"], figures["sending alone"]
    posts_checked = math.ceil(n_members / 100)
    reads = math.ceil(n / 100)
    bound_checked = max(
        bound_seconds("bulk_unsubscribe_profiles", posts_checked, latency), bound_seconds("get_profiles_for_list", reads, latency)
    )
    bound_alone = bound_seconds("bulk_unsubscribe_profiles", math.ceil(n / 100), latency)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"unsubscribe {n:,} rows from list {list_id} ({n_members:,} members, {n - n_members:,} not); "
        f"emulator latency {args.latency_ms} ms, spec rate limits on"
    )
    for name, (wall, result, harmed) in figures.items():
        bound = bound_checked if name == "checked" else bound_alone
        print(
            f"  {name:<14} {wall:6.1f}s  {result.summary.line()}  requests {result.requests}  "
            f"bound {bound:.1f}s (ratio {wall / bound:.2f})  non-members globally unsubscribed "
            f"(first 1,000 checked): {harmed}"
        )
    print(f"checked / sending alone: {checked[0] / alone[0]:.2f} (goal <= 1.30)  peak RSS {rss:,.0f} MB")


if __name__ == "__main__":
    main()
