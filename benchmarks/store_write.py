"""Rows/s and peak RSS for writing synthetic Klaviyo-like events into DuckDB and PostgreSQL.

Each case runs in its own process so peak RSS belongs to that case alone:
  append     one run of N rows into an empty table
  merge      one run of N rows into an empty table (staging + MERGE / INSERT ... ON CONFLICT)
  merge-2nd  a second run of N rows into that table, half updating existing ids, half new

    python benchmarks/store_write.py --rows 1000000 [--engine duckdb|postgres] [--mode ...]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
METRICS = np.array([f"M{i:05d}" for i in range(40)])


def event_batch(start: int, n: int, rng: np.random.Generator) -> pa.RecordBatch:
    ids = pc.binary_join_element_wise("ev", pc.cast(pa.array(np.arange(start, start + n)), pa.string()), "")
    value = np.round(rng.random(n) * 200, 2)
    props = pc.binary_join_element_wise(
        '{"$value": ',
        pc.cast(pa.array(value), pa.string()),
        ', "Campaign Name": "Spring sale", "items": [{"sku": "SKU-',
        pc.cast(pa.array(rng.integers(0, 999, n)), pa.string()),
        '", "qty": 1}], "$source": "web"}',
        "",
    )
    return pa.RecordBatch.from_pydict(
        {
            "id": ids,
            "datetime": pa.array(1_700_000_000_000_000 + np.arange(start, start + n) * 1_000_000, pa.timestamp("us", tz="UTC")),
            "metric_id": pa.array(METRICS[rng.integers(0, len(METRICS), n)]),
            "profile_id": pc.binary_join_element_wise("P", pc.cast(pa.array(rng.integers(0, n // 5 + 1, n)), pa.string()), ""),
            "value": pa.array(value),
            "quantity": pa.array(rng.integers(1, 5, n)),
            "is_test": pa.array(rng.random(n) < 0.01),
            "event_properties": pa.ExtensionArray.from_storage(pa.json_(), props),
        }
    )


def run_case(engine: str, mode: str, rows: int, batch_rows: int) -> dict:
    from klaviyo_bridge.store import open_warehouse
    from klaviyo_bridge.store.identifiers import quote

    rng = np.random.default_rng(7)
    tmp = tempfile.mkdtemp()
    wh = open_warehouse(Path(tmp) / "bench.duckdb" if engine == "duckdb" else PG_URL)
    database = f"bench_{uuid.uuid4().hex[:8]}"
    write_mode = "append" if mode == "append" else "merge"

    def one_run(offset: int) -> float:
        began = time.perf_counter()
        with wh.writer(database, "events", write_mode) as w:
            for start in range(0, rows, batch_rows):
                w.write(event_batch(offset + start, min(batch_rows, rows - start), rng))
            w.commit({f"bench/{database}": "2024-01-01T00:00:00Z"})
        return time.perf_counter() - began

    try:
        seconds = one_run(0)
        if mode == "merge-2nd":
            seconds = one_run(rows // 2)
        count = next(wh.query_arrow(f"SELECT count(*) AS n FROM {quote(database)}.events")).column(0)[0].as_py()
    finally:
        with wh.transaction() as session:
            session.execute(f"DROP SCHEMA IF EXISTS {quote(database)} CASCADE")
        wh.close()
    return {
        "engine": engine,
        "mode": mode,
        "rows": rows,
        "table_rows": count,
        "seconds": round(seconds, 2),
        "rows_per_s": round(rows / seconds),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-rows", type=int, default=100_000)
    parser.add_argument("--engine", choices=["duckdb", "postgres"], action="append")
    parser.add_argument("--mode", choices=["append", "merge", "merge-2nd"], action="append")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    engines, modes = args.engine or ["duckdb", "postgres"], args.mode or ["append", "merge", "merge-2nd"]
    if args.one:
        print(json.dumps(run_case(engines[0], modes[0], args.rows, args.batch_rows)))
        return
    print(f"{'engine':9} {'mode':10} {'rows':>9} {'seconds':>8} {'rows/s':>9} {'peak RSS MB':>12}")
    for engine in engines:
        for mode in modes:
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--one",
                    "--engine",
                    engine,
                    "--mode",
                    mode,
                    "--rows",
                    str(args.rows),
                    "--batch-rows",
                    str(args.batch_rows),
                ],
                capture_output=True,
                text=True,
            )
            if out.returncode:
                print(f"{engine:9} {mode:10} FAILED: {out.stderr.strip().splitlines()[-1]}")
                continue
            r = json.loads(out.stdout)
            print(f"{engine:9} {mode:10} {r['rows']:>9} {r['seconds']:>8} {r['rows_per_s']:>9} {r['peak_rss_mb']:>12}")


if __name__ == "__main__":
    main()
