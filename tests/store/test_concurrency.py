"""Two runs writing one table: the second waits or fails clearly; nothing is corrupted."""

from __future__ import annotations

import subprocess
import sys
import threading

import pyarrow as pa
import pytest

from klaviyo_bridge.errors import StoreError
from klaviyo_bridge.store import open_warehouse

from .conftest import rows


def test_second_writer_of_a_table_fails_clearly(wh, db):
    with wh.writer(db, "e") as first:
        first.write(pa.table({"id": ["a"]}))
        with pytest.raises(StoreError, match=f"{db}.e is being written by another run"):
            with wh.writer(db, "e"):
                pass
        first.commit()
    assert [r["id"] for r in rows(wh, db, "e")] == ["a"]


def test_second_writer_waits_for_the_first(wh, db):
    """Proved by order of effects, not durations: while the first run holds the table the second
    neither finishes nor fails; it writes only after the first committed, so its row wins."""
    first_wrote, release_first, second_done = threading.Event(), threading.Event(), threading.Event()
    effects: list[str] = []
    errors: list[BaseException] = []

    def first_run():
        with wh.writer(db, "e", "merge") as w:
            w.write(pa.table({"id": ["a"], "n": [1]}))
            first_wrote.set()
            release_first.wait(30)
            w.commit()
            effects.append("first committed")  # still holding the table: the second cannot be done yet

    def second_run():
        try:
            wh.write(db, "e", pa.table({"id": ["a"], "n": [2]}), "merge", lock_timeout=60)
            effects.append("second written")
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread below
            errors.append(exc)
        finally:
            second_done.set()

    first = threading.Thread(target=first_run)
    first.start()
    assert first_wrote.wait(30)
    second = threading.Thread(target=second_run)
    second.start()
    # A bounded poll for a state that must NOT come: a writer that did not wait would be done here.
    assert not second_done.wait(0.5), (effects, errors)
    release_first.set()
    first.join(30)
    assert second_done.wait(60)
    second.join(30)
    assert errors == []
    assert effects == ["first committed", "second written"]
    assert rows(wh, db, "e") == [{"id": "a", "n": 2}]


def test_writers_of_different_tables_do_not_block(wh, db):
    with wh.writer(db, "a") as a, wh.writer(db, "b") as b:
        a.write(pa.table({"id": ["1"]}))
        b.write(pa.table({"id": ["2"]}))
        b.commit()
        a.commit()
    assert rows(wh, db, "a") == [{"id": "1"}] and rows(wh, db, "b") == [{"id": "2"}]


def test_duckdb_file_held_by_another_process_is_a_clear_error(tmp_path):
    path = tmp_path / "busy.duckdb"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('ready', flush=True); time.sleep(30)",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(StoreError, match=rf"is in use by another run \(pid {holder.pid}\)"):
            open_warehouse(path)
    finally:
        holder.kill()
        holder.wait()
    open_warehouse(path).close()  # free again once the other run is gone


def test_first_runs_into_a_new_database_at_once_all_succeed(engine, warehouse_url, db):
    """Twelve runs creating one new schema at the same moment (a worker pool's first slot): on
    PostgreSQL a bare CREATE SCHEMA IF NOT EXISTS fails with a duplicate key on pg_namespace for
    all but one of them; every run must succeed and write its table."""
    if engine != "postgres":
        pytest.skip("DuckDB has one writer process")
    runs = 12
    barrier = threading.Barrier(runs)
    failures: list[BaseException] = []
    warehouses = [open_warehouse(warehouse_url) for _ in range(runs)]

    def run(i: int) -> None:
        try:
            with warehouses[i].transaction() as session:  # connected: the barrier lines up the statements
                barrier.wait(10)
                session.create_schema(db)
            warehouses[i].write(db, f"t{i}", pa.table({"id": [str(i)]}))
        except BaseException as exc:  # reported below, with the others
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(runs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert failures == []
        assert all([r["id"] for r in rows(warehouses[0], db, f"t{i}")] == [str(i)] for i in range(runs))
    finally:
        for w in warehouses:
            w.close()
