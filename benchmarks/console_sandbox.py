"""What the console's query sandbox costs: a console query (``store.sandbox``: its own read-only
DuckDB instance, external access off, configuration locked; PostgreSQL: a READ ONLY transaction with
a statement_timeout on a connection of its own) against the same query on the warehouse's normal
connection (what the CLI's ``sql`` runs), measured in the same run.

  preview   the first 100 rows of an ordered query (the export page's "Run query")
  full      every row of the query (what an export reads)

    python benchmarks/console_sandbox.py --rows 1000000 [--engine duckdb|postgres] [--repeat 5]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


def people(n: int) -> pa.Table:
    ids = np.arange(n)
    return pa.table(
        {
            "email": pa.array([f"person{i}@example.com" for i in ids]),
            "first_name": pa.array([f"P{i % 997}" for i in ids]),
            "score": pa.array(np.random.default_rng(3).random(n)),
        }
    )


def direct(wh, sql: str, database: str, max_rows: int | None) -> int:
    from klaviyo_bridge.exports.source import query_source

    schema, stream = query_source(wh, sql, database)()
    rows = 0
    try:
        for batch in stream:
            rows += batch.num_rows
            if max_rows is not None and rows >= max_rows:
                break
    finally:
        stream.close()
    return min(rows, max_rows) if max_rows is not None else rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--engine", choices=["duckdb", "postgres"], default="duckdb")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    from klaviyo_bridge.store import open_warehouse
    from klaviyo_bridge.store.sandbox import read_duckdb, read_postgres

    target = str(Path(tempfile.mkdtemp()) / "bench.duckdb") if args.engine == "duckdb" else PG_URL
    database = f"bench_{uuid.uuid4().hex[:8]}"
    with open_warehouse(target) as wh:
        wh.write(database, "people", people(args.rows))
    sql = "SELECT email, first_name, score FROM people ORDER BY score DESC"
    print(f"{args.engine}: {args.rows:,} rows; query: {sql}")
    for case, max_rows in (("preview", 100), ("full", None)):
        plain, boxed = [], []
        for _ in range(args.repeat):
            started = time.perf_counter()
            with open_warehouse(target) as wh:  # the CLI opens the warehouse per command too
                n_plain = direct(wh, sql, database, max_rows)
            plain.append(time.perf_counter() - started)
            started = time.perf_counter()
            if args.engine == "duckdb":
                table = read_duckdb(Path(target), sql, database, max_rows=max_rows, timeout=600)
            else:
                with open_warehouse(target) as wh:
                    table = read_postgres(wh._dsn, wh.url, sql, database, max_rows=max_rows, timeout=600)
            boxed.append(time.perf_counter() - started)
            assert table.num_rows == n_plain, (table.num_rows, n_plain)
        p, b = statistics.median(plain), statistics.median(boxed)
        print(
            f"  {case:8s} rows {n_plain:>9,}  normal connection {p * 1000:8.1f} ms  sandbox {b * 1000:8.1f} ms  "
            f"ratio {b / p:5.2f}  (median of {args.repeat})"
        )
    if args.engine == "postgres":
        with open_warehouse(PG_URL) as wh:
            with wh.transaction() as session:
                session.execute(f'DROP SCHEMA "{database}" CASCADE')
    print(f"  peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
