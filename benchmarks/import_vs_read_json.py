#!/usr/bin/env python3
"""Importing events vs DuckDB's own ``read_json`` loading the same page bytes from disk.

    python benchmarks/import_vs_read_json.py [--events 1000000] [--runs 3] [--keep-pages DIR]

Issue 21's goal for the CPU path: importing 1M events (limits off) takes at most 1.0x the time
DuckDB's ``read_json`` takes to load the same pages from disk, with at most 300 MB peak RSS.

What is compared, each side in its own fresh subprocess (so each peak RSS is its own):

- **bound: DuckDB read_json.** Before anything is timed, the emulator's answers to the import's
  own request (``GET /api/events`` with ``include=metric,profile``, the sparse fields the import
  asks for, pages of 1,000 events) are walked once and each page body is saved to a file, as it
  came over the wire. Timed: a new DuckDB file; ``read_json`` over those files with the JSON:API
  shape declared (``data`` and ``included`` arrays of structs: no inference), each ``data``
  element unnested and flattened into exactly our table's 11 columns and types (id, datetime
  TIMESTAMPTZ, event_properties JSON, timestamp BIGINT, uuid, metric_id, profile_id, and the
  included metric's name and profile's email, phone_number, external_id looked up by
  (type, id) within the same page), written with ``CREATE TABLE ... AS`` and committed. DuckDB's
  default settings (all cores, its default memory limit).
- **ours: the import.** ``run_import`` of ``data_source: events`` with the related objects, out
  mode append, into a new DuckDB file, 16 concurrent windows, from the emulator over HTTP on
  127.0.0.1 with rate limits off and no added latency. This side also does the HTTP requests,
  the time-window planning and the cursor/job records; the emulator serving the pages runs on
  the same two cores (its CPU-seconds are printed). The tables are compared: same row count.

Printed per run: both wall times and their ratio (import / read_json, goal <= 1.0), both
processes' CPU-seconds and their ratio (the figure that moves least with the machine's other
load), each side's peak RSS (``ru_maxrss``; goal <= 300 MB for the import), and the emulator's
CPU-seconds. The sides alternate, ``--runs`` times.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import klaviyo_bridge  # noqa: F401  # first, as in the klaviyo-bridge command: httpx then loads without its CLI

# isort: split
import httpx
from _emulator_process import PIDS, cpu_seconds, emulator_process

from klaviyo_emulator.settings import DEFAULT_API_KEY

REVISION = "2026-07-15"
#: The import's own request (see Fetcher._query for events with their related objects).
REQUEST = "/api/events?page[size]=1000&fields[metric]=name&fields[profile]=email,phone_number,external_id&include=metric,profile"
RSS_GOAL_MB = 300.0

_REF = "STRUCT(type VARCHAR, id VARCHAR)"
PAGE_COLUMNS = (
    "{data: 'STRUCT(id VARCHAR, attributes STRUCT(datetime TIMESTAMPTZ, event_properties JSON, "
    f'"timestamp" BIGINT, uuid VARCHAR), relationships STRUCT(metric STRUCT(data {_REF}), '
    f"profile STRUCT(data {_REF})))[]', "
    "included: 'STRUCT(type VARCHAR, id VARCHAR, attributes STRUCT(name VARCHAR, email VARCHAR, "
    "phone_number VARCHAR, external_id VARCHAR))[]'}"
)
LOAD_SQL = f"""
CREATE TABLE events AS
WITH pages AS (
    SELECT filename AS page, data, included
    FROM read_json('{{pages}}/*.json', format = 'auto', filename = true, maximum_object_size = 1073741824,
                   columns = {PAGE_COLUMNS})
), rows AS (SELECT page, unnest(data) AS r FROM pages
), inc AS (SELECT page, unnest(included) AS i FROM pages)
SELECT r.id AS id, r.attributes.datetime AS datetime, r.attributes.event_properties AS event_properties,
       r.attributes."timestamp" AS "timestamp", r.attributes.uuid AS uuid,
       r.relationships.metric.data.id AS metric_id, r.relationships.profile.data.id AS profile_id,
       m.i.attributes.name AS metric_name, p.i.attributes.email AS profile_email,
       p.i.attributes.phone_number AS profile_phone_number, p.i.attributes.external_id AS profile_external_id
FROM rows
LEFT JOIN inc AS m ON m.page = rows.page AND m.i.type = 'metric' AND m.i.id = r.relationships.metric.data.id
LEFT JOIN inc AS p ON p.page = rows.page AND p.i.type = 'profile' AND p.i.id = r.relationships.profile.data.id
"""


def save_pages(base: str, folder: Path) -> tuple[int, int]:
    """Walk the import's request to its end; each page body to its own file. (pages, bytes)"""
    headers = {"Authorization": f"Klaviyo-API-Key {DEFAULT_API_KEY}", "revision": REVISION}
    url: str | None = base + REQUEST
    pages = size = 0
    with httpx.Client(headers=headers, timeout=120) as client:
        while url:
            response = client.get(url)
            response.raise_for_status()
            (folder / f"{pages:06d}.json").write_bytes(response.content)
            pages += 1
            size += len(response.content)
            url = response.json()["links"].get("next")
    return pages, size


# --- the two sides, each run as `python this.py --side NAME ...` in a fresh process ---------------


def _own() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def side_read_json(pages: str, db: str) -> dict:
    import duckdb

    cpu0, _ = _own()
    t0 = time.perf_counter()
    con = duckdb.connect(db)
    con.execute("SET TimeZone = 'UTC'")
    con.execute(LOAD_SQL.replace("{pages}", pages.replace("'", "''")))
    con.close()
    wall = time.perf_counter() - t0
    cpu, rss = _own()
    rows = duckdb.connect(db, read_only=True).execute("SELECT count(*) FROM events").fetchone()[0]
    return {"wall": wall, "cpu": cpu - cpu0, "rss": rss, "rows": rows}


def side_import(base: str, db: str) -> dict:
    from klaviyo_bridge import aio
    from klaviyo_bridge.config import parse_import_config
    from klaviyo_bridge.imports.runner import run_import
    from klaviyo_bridge.memory import use_lean_arrow_pool
    from klaviyo_bridge.store.factory import open_warehouse

    use_lean_arrow_pool()  # as the klaviyo-bridge command does: the process chooses its allocators
    config = parse_import_config(
        {
            "in": {"data_source": "events", "api_token": DEFAULT_API_KEY, "base_url": base, "skip_related_object": False},
            "out": {"mode": "append"},
        }
    )
    cpu0, _ = _own()
    t0 = time.perf_counter()
    with open_warehouse(Path(db)) as wh:
        result = aio.run(run_import(config, wh, "bench", "events", concurrency=16))
    wall = time.perf_counter() - t0
    cpu, rss = _own()
    return {"wall": wall, "cpu": cpu - cpu0, "rss": rss, "rows": result.rows, "pages": result.pages}


def run_side(*args: str, emulator_pid: int | None = None) -> dict:
    emu0 = cpu_seconds(emulator_pid) if emulator_pid else 0.0
    out = subprocess.run([sys.executable, __file__, "--side", *args], check=True, capture_output=True, text=True)
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    if emulator_pid:
        figures["emulator_cpu"] = cpu_seconds(emulator_pid) - emu0
    return figures


def differing_rows(db_rj: Path, db_imp: Path) -> int:
    """Rows in one table and not the other (values as stored, JSON compared as text); 0 when equal."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"ATTACH '{db_rj}' AS rj (READ_ONLY)")
    con.execute(f"ATTACH '{db_imp}' AS imp (READ_ONLY)")
    cols = ", ".join(
        f'"{c}"::VARCHAR'
        for c in (
            "id",
            "datetime",
            "event_properties",
            "timestamp",
            "uuid",
            "metric_id",
            "profile_id",
            "metric_name",
            "profile_email",
            "profile_phone_number",
            "profile_external_id",
        )
    )
    a, b = f"SELECT {cols} FROM rj.events", f"SELECT {cols} FROM imp.bench.events"
    (count,) = con.execute(f"SELECT count(*) FROM (({a} EXCEPT ALL {b}) UNION ALL ({b} EXCEPT ALL {a}))").fetchone()
    con.close()
    return int(count)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--profiles", type=int, default=None, help="default: events/10 (at least 1000)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--keep-pages", help="save the pages here and keep them (default: a temporary folder)")
    ap.add_argument("--side", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        name, *rest = args.side
        sides = {
            "read_json": side_read_json,
            "import": side_import,
            "compare": lambda a, b: {"differing": differing_rows(Path(a), Path(b))},
        }
        figures = sides[name](*rest)
        print(json.dumps(figures))
        return
    profiles = args.profiles or max(1000, args.events // 10)
    with (
        tempfile.TemporaryDirectory() as tmp,
        emulator_process(
            "--events", str(args.events), "--profiles", str(profiles), "--no-rate-limits", "--clock", "fixed:2026-12-01T00:00:00Z"
        ) as base,
    ):
        pages_dir = Path(args.keep_pages) if args.keep_pages else Path(tmp) / "pages"
        pages_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        pages, size = save_pages(base, pages_dir)
        load = os.getloadavg()
        print(
            f"{args.events:,} events: {pages:,} pages, {size / 1e6:,.0f} MB saved in {time.perf_counter() - t0:.1f}s "
            f"(not timed); load average {load[0]:.1f} {load[1]:.1f}; {os.cpu_count()} cores"
        )
        print(
            f"{'run':>3} {'read_json s':>11} {'import s':>9} {'ratio':>6} {'rj CPU-s':>9} {'imp CPU-s':>9} "
            f"{'CPU ratio':>9} {'rj RSS MB':>9} {'imp RSS MB':>10} {'RSS/goal':>8} {'emu CPU-s':>9}"
        )
        for run in range(1, args.runs + 1):
            db_rj, db_imp = Path(tmp) / f"rj{run}.duckdb", Path(tmp) / f"imp{run}.duckdb"
            rj = run_side("read_json", str(pages_dir), str(db_rj))
            imp = run_side("import", base, str(db_imp), emulator_pid=PIDS[base])
            mismatch = (
                ""
                if rj["rows"] == imp["rows"] == args.events
                else (f"  MISMATCH: read_json {rj['rows']:,} rows, import {imp['rows']:,}, expected {args.events:,}")
            )
            print(
                f"{run:>3} {rj['wall']:>11.2f} {imp['wall']:>9.2f} {imp['wall'] / rj['wall']:>6.2f} "
                f"{rj['cpu']:>9.1f} {imp['cpu']:>9.1f} {imp['cpu'] / rj['cpu']:>9.2f} {rj['rss']:>9,.0f} "
                f"{imp['rss']:>10,.0f} {imp['rss'] / RSS_GOAL_MB:>8.2f} {imp['emulator_cpu']:>9.1f}{mismatch}",
                flush=True,
            )
            if run == 1:
                # in a subprocess too: this process's peak would become its children's ru_maxrss
                differing = run_side("compare", str(db_rj), str(db_imp))["differing"]
                print(f"    rows that differ between the two tables: {differing:,}", flush=True)
            for db in (db_rj, db_imp):
                for file in (db, Path(f"{db}.wal")):
                    file.unlink(missing_ok=True)
        print(
            "ratio = import wall / read_json wall (goal <= 1.0); CPU ratio = import process CPU / read_json "
            f"process CPU; RSS/goal = import peak RSS / {RSS_GOAL_MB:.0f} MB (goal <= 1.0)"
        )
        if not args.keep_pages:
            shutil.rmtree(pages_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
