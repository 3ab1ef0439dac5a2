"""Each seed write mode on both engines, with the edge cases runs actually hit."""

from __future__ import annotations

import pyarrow as pa
import pytest

from klaviyo_bridge.errors import ConfigError, StoreError

from .conftest import rows


def events(ids, values, **extra):
    return pa.table({"id": ids, "value": values, **extra})


def test_append_adds_rows_across_runs(wh, db):
    wh.write(db, "events", events(["a", "b"], [1, 2]), "append")
    wh.write(db, "events", [events(["c"], [3]).to_batches()[0], events(["a"], [4]).to_batches()[0]], "append")
    assert [(r["id"], r["value"]) for r in rows(wh, db, "events", "id, value")] == [("a", 1), ("a", 4), ("b", 2), ("c", 3)]


def test_replace_swaps_contents(wh, db):
    wh.write(db, "lists", events(["a", "b"], [1, 2]), "replace")
    wh.write(db, "lists", events(["c"], [3]), "replace")
    assert [r["id"] for r in rows(wh, db, "lists")] == ["c"]


def test_replace_with_zero_rows_empties_but_keeps_columns(wh, db):
    wh.write(db, "lists", events(["a"], [1], extra=["x"]), "replace")
    with wh.writer(db, "lists", "replace") as w:
        w.commit()
    assert rows(wh, db, "lists") == []
    assert list(wh.table_columns(db, "lists")) == ["id", "value", "extra"]


def test_replace_with_zero_rows_and_declared_schema_creates_empty_table(wh, db):
    schema = pa.schema([("id", pa.string()), ("updated", pa.timestamp("us", tz="UTC"))])
    with wh.writer(db, "lists", "replace", schema=schema) as w:
        w.write(schema.empty_table())
        w.commit()
    assert wh.table_arrow(db, "lists").num_rows == 0
    assert list(wh.table_columns(db, "lists")) == ["id", "updated"]


def test_replace_on_new_data_replaces_only_when_rows_arrived(wh, db):
    wh.write(db, "t", events(["a", "b"], [1, 2]), "replace_on_new_data")
    wh.write(db, "t", events([], []).cast(pa.schema([("id", pa.string()), ("value", pa.int64())])), "replace_on_new_data")
    assert [r["id"] for r in rows(wh, db, "t")] == ["a", "b"]
    wh.write(db, "t", events(["z"], [9]), "replace_on_new_data")
    assert [r["id"] for r in rows(wh, db, "t")] == ["z"]


def test_replace_readers_see_old_rows_until_commit(wh, db):
    wh.write(db, "t", events(["a", "b"], [1, 2]), "replace")
    with wh.writer(db, "t", "replace") as w:
        w.write(events(["c"], [3]))
        assert [r["id"] for r in rows(wh, db, "t")] == ["a", "b"]
        w.commit()
    assert [r["id"] for r in rows(wh, db, "t")] == ["c"]


def test_merge_last_duplicate_wins_within_and_across_batches(wh, db):
    wh.write(db, "p", events(["a", "b"], [1, 2]), "merge")
    with wh.writer(db, "p", "merge") as w:
        w.write(events(["b", "c", "b"], [20, 30, 21]))
        w.write(events(["c", "d"], [31, 40]))
        w.commit()
    assert [(r["id"], r["value"]) for r in rows(wh, db, "p")] == [("a", 1), ("b", 21), ("c", 31), ("d", 40)]


def test_merge_composite_key(wh, db):
    key = ["list_id", "profile_id"]
    first = pa.table({"list_id": ["L1", "L1", "L2"], "profile_id": ["p1", "p2", "p1"], "n": [1, 2, 3]})
    wh.write(db, "members", first, "merge", primary_key=key)
    second = pa.table({"list_id": ["L1", "L2", "L2"], "profile_id": ["p2", "p1", "p2"], "n": [20, 30, 40]})
    wh.write(db, "members", second, "merge", primary_key=key)
    got = [(r["list_id"], r["profile_id"], r["n"]) for r in rows(wh, db, "members", "list_id, profile_id")]
    assert got == [("L1", "p1", 1), ("L1", "p2", 20), ("L2", "p1", 30), ("L2", "p2", 40)]


def test_merge_keeps_columns_the_run_did_not_send(wh, db):
    wh.write(db, "p", events(["a"], [1], email=["a@x.io"]), "merge")
    wh.write(db, "p", events(["a", "b"], [2, 3]), "merge")
    assert rows(wh, db, "p") == [{"id": "a", "value": 2, "email": "a@x.io"}, {"id": "b", "value": 3, "email": None}]


def test_merge_rejects_missing_or_null_keys(wh, db):
    with pytest.raises(StoreError, match="merge key column 'id' is missing"):
        wh.write(db, "p", pa.table({"value": [1]}), "merge")
    with pytest.raises(StoreError, match="null values"):
        wh.write(db, "p", events(["a", None], [1, 2]), "merge")
    assert wh.table_columns(db, "p") is None


def test_unknown_mode_is_a_config_error(wh, db):
    with pytest.raises(ConfigError, match="unknown write mode 'upsert'"):
        wh.writer(db, "p", "upsert")


@pytest.mark.parametrize("mode", ["append", "merge", "replace"])
def test_a_table_of_many_chunks_writes_like_its_batches(wh, db, mode):
    """A table's chunks go in as one insert: same rows, and in merge the last duplicate still wins."""
    first = events(["a", "b"], [1, 2], note=["x", "y"]).to_batches()[0]
    nulls = pa.RecordBatch.from_pydict({"id": ["c"], "value": [3], "note": pa.nulls(1, pa.string())})
    again = events(["a", "d"], [5, 6], note=["z", None]).to_batches()[0]
    chunks = [first, first.slice(1), nulls, again]
    wh.write(db, "many", pa.Table.from_batches(chunks), mode, primary_key="id")
    wh.write(db, "one_by_one", chunks, mode, primary_key="id")
    got = rows(wh, db, "many", "id, value, note")
    assert got == rows(wh, db, "one_by_one", "id, value, note")
    if mode == "merge":
        assert [(r["id"], r["value"]) for r in got] == [("a", 5), ("b", 2), ("c", 3), ("d", 6)]
    else:
        assert len(got) == 6


def test_written_batches_are_not_held_until_commit(wh, db):
    """A long run writes many batches in one transaction: once written, a batch's Arrow memory
    must be free again (DuckDB views registered inside a transaction kept it until commit)."""
    import gc

    with wh.writer(db, "events", "append") as writer:
        baseline = pa.total_allocated_bytes()
        for start in range(0, 60_000, 20_000):
            batch = events([f"evt-{i:09d}-{'x' * 40}" for i in range(start, start + 20_000)], list(range(start, start + 20_000)))
            writer.write(batch)
            del batch
        gc.collect()
        held = pa.total_allocated_bytes() - baseline
        writer.commit()
    assert held < 1_000_000, f"{held:,} bytes of written batches still held before commit"
    assert len(rows(wh, db, "events")) == 60_000


def test_duckdb_row_groups_stay_whole_for_inserts_of_many_chunks(tmp_path):
    """An insert made of many small chunks (an import's pages) fills whole row groups, so the
    next checkpoint has nothing to rewrite."""
    from klaviyo_bridge.store import open_warehouse

    group = 122_880
    data = pa.table({"id": [f"evt-{i:09d}" for i in range(2 * group)], "value": list(range(2 * group))})
    with open_warehouse(tmp_path / "w.duckdb") as wh:
        with wh.writer("db", "events", "append") as writer:
            writer.write(pa.Table.from_batches(data.slice(0, group).to_batches(max_chunksize=1000)))
            writer.write(pa.Table.from_batches(data.slice(group).to_batches(max_chunksize=1000)))
            writer.commit()
        counts = pa.Table.from_batches(
            list(wh.query_arrow("SELECT row_group_id, max(count) AS n FROM pragma_storage_info('db.events') GROUP BY ALL"))
        )
    assert counts.column("n").to_pylist() == [group, group]


def test_duckdb_inserts_of_part_row_groups_fill_whole_row_groups(tmp_path):
    """The importer inserts an eighth of a row group at a time (imports/runner.py WRITE_ROWS): the
    inserts of one run fill the open row group instead of each leaving a part-filled one."""
    from klaviyo_bridge.imports.runner import WRITE_ROWS
    from klaviyo_bridge.store import open_warehouse

    group = 122_880
    data = pa.table({"id": [f"evt-{i:09d}" for i in range(2 * group)], "value": list(range(2 * group))})
    with open_warehouse(tmp_path / "w.duckdb") as wh:
        with wh.writer("db", "events", "append") as writer:
            for start in range(0, 2 * group, WRITE_ROWS):
                writer.write(pa.Table.from_batches(data.slice(start, WRITE_ROWS).to_batches(max_chunksize=1000)))
            writer.commit()
        counts = pa.Table.from_batches(
            list(
                wh.query_arrow(
                    "SELECT row_group_id, max(count) AS n FROM pragma_storage_info('db.events') GROUP BY ALL ORDER BY 1"
                )
            )
        )
    assert counts.column("n").to_pylist() == [group, group]


def test_duckdb_replace_writes_into_the_table_not_a_stage_in_memory(tmp_path):
    """A replace run's rows go straight into the table (the old rows deleted in the run's
    transaction), so DuckDB writes them to the file as row groups fill instead of holding the
    whole run in an in-memory stage (150k profiles: 504 -> 283 MB peak); readers see the old rows
    until the commit, and the replace is still all or nothing."""
    from klaviyo_bridge.store import open_warehouse

    def in_memory_tables(wh) -> int:
        got = pa.Table.from_batches(
            list(wh.query_arrow("SELECT memory_usage_bytes FROM duckdb_memory() WHERE tag = 'IN_MEMORY_TABLE'"))
        )
        return sum(got.column(0).to_pylist())

    def chunk(start: int, n: int) -> pa.Table:
        return events([f"row-{i:09d}-{'x' * 80}" for i in range(start, start + n)], list(range(start, start + n)))

    with open_warehouse(tmp_path / "w.duckdb") as wh:
        wh.write("db", "t", events(["old"], [0]), "replace")
        with wh.writer("db", "t", "replace") as writer:
            for start in range(0, 600_000, 60_000):  # ~60 MB of rows
                writer.write(chunk(start, 60_000))
            held = in_memory_tables(wh)
            assert [r["id"] for r in rows(wh, "db", "t")] == ["old"]
            writer.commit()
        assert held < 20 * 2**20, f"{held:,} bytes of the run held in memory before the commit"
        assert len(rows(wh, "db", "t", "id")) == 600_000
        with pytest.raises(RuntimeError), wh.writer("db", "t", "replace") as writer:
            writer.write(chunk(0, 10))
            raise RuntimeError("the run fails before its commit")
        assert len(rows(wh, "db", "t", "id")) == 600_000  # rolled back: the old rows are all there


def test_replace_on_new_data_without_rows_leaves_the_table_as_it_was(wh, db):
    """No rows: the table keeps its rows and its columns, even when the (empty) batches declared
    new columns or wider types."""
    wh.write(db, "t", events(["a"], [1]), "replace_on_new_data")
    before = wh.table_columns(db, "t")
    empty = pa.table({"id": pa.array([], pa.string()), "value": pa.array([], pa.float64()), "new": pa.array([], pa.string())})
    wh.write(db, "t", empty, "replace_on_new_data")
    assert wh.table_columns(db, "t") == before
    assert [(r["id"], r["value"]) for r in rows(wh, db, "t")] == [("a", 1)]


def test_duckdb_replace_of_a_table_with_an_index(tmp_path):
    """A user's index on the table makes emptying it need memory: the delete runs under the
    warehouse's whole memory limit (only the appends after it run under the lower one)."""
    import duckdb

    from klaviyo_bridge.store import open_warehouse

    path = tmp_path / "w.duckdb"
    con = duckdb.connect(str(path))
    # 200k keys of 300 characters: emptying it under the appending limit (64 MB) ran out of memory
    con.execute(
        "CREATE SCHEMA db; CREATE TABLE db.t AS SELECT 'row-' || i || repeat('x', 300) AS id, i AS value FROM range(200000) r(i)"
    )
    con.execute("CREATE UNIQUE INDEX t_id ON db.t (id)")
    con.close()
    with open_warehouse(path) as wh:
        wh.write("db", "t", events(["new"], [1]), "replace")
        assert [(r["id"], r["value"]) for r in rows(wh, "db", "t")] == [("new", 1)]
