"""Cursors commit with their data; run history and export results are kept per run."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from klaviyo_bridge.errors import StoreError
from klaviyo_bridge.store.state import create_state_tables

from .conftest import rows


class Crash(Exception):
    pass


@pytest.mark.parametrize("mode", ["append", "replace", "replace_on_new_data", "merge"])
def test_failure_between_write_and_commit_changes_neither_data_nor_cursor(wh, db, job, mode):
    wh.write(db, "e", pa.table({"id": ["a"], "n": [1]}), mode, cursors={job: "2024-01-01T00:00:00Z"})
    with pytest.raises(Crash):
        with wh.writer(db, "e", mode) as w:
            w.write(pa.table({"id": ["b"], "n": [2], "new_col": ["x"]}))
            raise Crash()
    assert rows(wh, db, "e") == [{"id": "a", "n": 1}]
    assert wh.state.cursor(job) == "2024-01-01T00:00:00Z"


def test_failure_during_commit_keeps_previous_cursor(wh, db, job):
    wh.write(db, "e", pa.table({"id": ["a"]}), cursors={job: "old"})
    with pytest.raises(StoreError):
        with wh.writer(db, "e") as w:
            w.write(pa.table({"id": ["b"]}))
            w.commit({job: 12345})  # not a string: fails after the rows were inserted
    assert [r["id"] for r in rows(wh, db, "e")] == ["a"]
    assert wh.state.cursor(job) == "old"


def test_cursor_advances_with_committed_data(wh, db, job):
    with wh.writer(db, "e", "merge") as w:
        w.write(pa.table({"id": ["a"]}))
        assert wh.state.cursor(job) is None  # not visible before commit
        w.commit({job: "2024-06-01T00:00:00Z", f"{job}/profiles": "2024-06-02T00:00:00Z"})
    assert wh.state.cursor(job) == "2024-06-01T00:00:00Z"
    assert wh.state.cursors()[f"{job}/profiles"] == "2024-06-02T00:00:00Z"


def test_writer_cannot_be_used_after_commit(wh, db):
    with wh.writer(db, "e") as w:
        w.write(pa.table({"id": ["a"]}))
        w.commit()
        with pytest.raises(StoreError, match="not open"):
            w.write(pa.table({"id": ["b"]}))


def test_runs_history(wh, job):
    first = wh.state.start_run(job, "import")
    wh.state.finish_run(first, "success", rows_read=10, rows_written=9, counts={"pages": 2, "retries": 1})
    second = wh.state.start_run(job, "import")
    wh.state.finish_run(second, "error", error="RateLimited: retries exhausted")
    running = wh.state.start_run(job, "export")
    runs = wh.state.runs(job)
    assert [r.run_id for r in runs] == [running, second, first]
    assert runs[0].status == "running" and runs[0].ended_at is None
    assert runs[1].error == "RateLimited: retries exhausted"
    assert (runs[2].rows_read, runs[2].rows_written, runs[2].counts) == (10, 9, {"pages": 2, "retries": 1})
    assert runs[2].ended_at >= runs[2].started_at
    assert wh.state.last_successful_run(job).run_id == first
    with pytest.raises(StoreError, match="kind"):
        wh.state.start_run(job, "sync")
    with pytest.raises(StoreError, match="no run"):
        wh.state.finish_run("missing", "success")


def test_export_batches_and_row_results(wh, job):
    run = wh.state.start_run(job, "export")
    wh.state.record_export_batch(f"{run}-1", run, "profile-bulk-import", "submitted", row_count=3)
    wh.state.record_export_batch(f"{run}-1", run, "profile-bulk-import", "complete", klaviyo_job_id="kj-1")
    [batch] = wh.state.export_batches(run)
    assert (batch.status, batch.klaviyo_job_id, batch.row_count) == ("complete", "kj-1", 3)
    results = pa.table(
        {"row_index": [0, 1, 2], "outcome": ["accepted", "rejected", "skipped"], "reason": [None, "invalid email", "duplicate"]}
    )
    assert wh.state.record_export_rows(f"{run}-1", run, results) == 3
    got = wh.state.export_rows(run_id=run).to_pylist()
    assert [(r["row_index"], r["outcome"], r["reason"]) for r in got] == [
        (0, "accepted", None),
        (1, "rejected", "invalid email"),
        (2, "skipped", "duplicate"),
    ]
    with pytest.raises(StoreError, match="outcomes"):
        wh.state.record_export_rows(f"{run}-1", run, pa.table({"row_index": [3], "outcome": ["maybe"]}))


def test_row_outcomes_are_stored_as_ranges_and_read_back_row_by_row(wh, job):
    """Consecutive rows with one outcome and reason share a stored range; gaps, changes of
    reason, nulls and an unsorted input all come back exactly, one row each."""
    run = wh.state.start_run(job, "export")
    index = [7, 3, 4, 5, 6, 10, 11, 12, 13, 20, 21]
    outcome = [
        "accepted",
        "accepted",
        "accepted",
        "rejected",
        "rejected",
        "accepted",
        "accepted",
        "skipped",
        "skipped",
        "submitted",
        "submitted",
    ]
    reason = [None, None, None, "bad", "bad", None, None, "dup", "other", "no job", "no job"]
    results = pa.table({"row_index": index, "outcome": outcome, "reason": reason})
    assert wh.state.record_export_rows(f"{run}-1", run, results) == 11
    stored = _select(
        wh,
        f"SELECT first_row, row_count, outcome, reason FROM _bridge.export_row_ranges WHERE run_id = '{run}' ORDER BY first_row",
    )
    assert stored == [
        (3, 2, "accepted", None),
        (5, 2, "rejected", "bad"),
        (7, 1, "accepted", None),
        (10, 2, "accepted", None),
        (12, 1, "skipped", "dup"),
        (13, 1, "skipped", "other"),
        (20, 2, "submitted", "no job"),
    ]
    got = wh.state.export_rows(run_id=run).to_pylist()
    assert [(r["row_index"], r["outcome"], r["reason"]) for r in got] == sorted(zip(index, outcome, reason))


def test_an_old_per_row_export_rows_table_moves_into_ranges(wh, job):
    """Warehouses from before row ranges have a table export_rows; opening them again keeps its rows."""
    run = wh.state.start_run(job, "export")
    # One transaction: the PostgreSQL state is shared by the tests running beside this one, which
    # must never see the old table (their own opening would migrate it under them).
    with wh.transaction() as s:
        s.execute("DROP VIEW _bridge.export_rows")
        s.execute(
            "CREATE TABLE _bridge.export_rows (batch_id VARCHAR NOT NULL, run_id VARCHAR NOT NULL, "
            "row_index BIGINT NOT NULL, outcome VARCHAR NOT NULL, reason VARCHAR)"
        )
        s.execute(
            f"INSERT INTO _bridge.export_rows VALUES ('{run}-1', '{run}', 0, 'accepted', NULL), "
            f"('{run}-1', '{run}', 1, 'rejected', 'bad email')"
        )
        create_state_tables(s)  # what opening the warehouse again runs
    got = wh.state.export_rows(run_id=run).to_pylist()
    assert [(r["row_index"], r["outcome"], r["reason"]) for r in got] == [(0, "accepted", None), (1, "rejected", "bad email")]
    assert _select(
        wh, "SELECT table_type FROM information_schema.tables WHERE table_schema = '_bridge' AND table_name = 'export_rows'"
    ) == [("VIEW",)]


def test_export_identifiers_are_stored_compressed_and_old_plain_ones_still_read(wh, job):
    """A chunk's identifiers are kept compressed (they sat in DuckDB's buffer pool for the whole
    run); short chunks, and chunks stored by older versions as plain JSON, read back the same."""
    run = wh.state.start_run(job, "export")
    many = [f"email:user{i}@example.com" if i % 7 else None for i in range(5_000)]
    wh.state.record_export_identifiers(run, 0, many)
    wh.state.record_export_identifiers(run, 5_000, ["phone:+442030000000"])
    with wh.transaction() as s:  # as an older version stored them
        s.execute(f"INSERT INTO _bridge.export_row_ids VALUES ('{run}', 5001, '[\"external_id:x-1\", null]')")
    stored = dict(_select(wh, f"SELECT first_row, identifiers FROM _bridge.export_row_ids WHERE run_id = '{run}'"))
    assert stored[0].startswith("zlib:")
    assert len(stored[0]) * 4 < len(json.dumps(many))
    assert stored[5_000] == '["phone:+442030000000"]'
    got = wh.state.export_identifiers(run)
    assert [got[i] for i in range(5_000)] == many
    assert (got[5_000], got[5_001], got[5_002]) == ("phone:+442030000000", "external_id:x-1", None)
    assert len(got) == 5_003
    wh.state.record_export_identifiers(run, 0, many[:3])  # a retried chunk replaces its row
    again = wh.state.export_identifiers(run)
    assert [again[i] for i in range(3)] == many[:3] and 3 not in again and again[5_001] == "external_id:x-1"


def test_export_identifiers_of_a_range_of_rows_come_from_the_chunks_that_hold_them(wh, job):
    """A batch's rows (a job's import errors name rows by email) are read from the chunks
    covering them: the one that starts before the range, and those that start inside it."""
    run = wh.state.start_run(job, "export")
    other = wh.state.start_run(job, "export")
    wh.state.record_export_identifiers(run, 0, [f"email:r{i}@example.com" for i in range(100)])
    wh.state.record_export_identifiers(run, 100, [f"email:r{i}@example.com" for i in range(100, 250)])
    wh.state.record_export_identifiers(run, 250, [f"phone:+4420300000{i:02d}" for i in range(50)])
    wh.state.record_export_identifiers(other, 0, ["email:other@example.com"] * 400)
    got = wh.state.export_identifiers(run, 90, 260)
    assert sorted(got) == list(range(90, 260))
    assert got[90] == "email:r90@example.com" and got[249] == "email:r249@example.com"
    assert got[250] == "phone:+442030000000" and got[259] == "phone:+442030000009"
    assert wh.state.export_identifiers(run, 120, 130) == {i: f"email:r{i}@example.com" for i in range(120, 130)}
    assert wh.state.export_identifiers(run, 300, 400) == {}


def _select(wh, sql: str) -> list[tuple]:
    with wh.transaction() as s:
        return s.fetch(sql)


def test_state_has_no_place_for_secrets(wh):
    columns = set()
    for table in ("cursors", "runs", "export_batches", "export_row_ranges", "export_rows"):
        columns |= {c.lower() for c in wh.table_columns("_bridge", table)}
    assert not {c for c in columns if "key" in c or "token" in c or "secret" in c}


def test_a_job_and_its_engine_share_one_record(wh, job):
    """``begin_job`` writes the run; the engine's ``start_run(begun=True)`` records on that row
    (no second record), and ``runs`` and ``jobs`` read the same record."""
    wh.state.begin_job(
        "r-" + job, job, "import", triggered_by="schedule", pid=42, host="here", database="klaviyo", table="events"
    )
    assert wh.state.start_run(job, "import", run_id="r-" + job, begun=True) == "r-" + job
    wh.state.finish_run("r-" + job, "success", rows_read=3, rows_written=3, counts={"pages": 1})
    [run] = wh.state.runs(job)
    assert run == wh.state.job("r-" + job) == wh.state.jobs(job=job)[0]
    assert (run.triggered_by, run.pid, run.database, run.rows_written, run.counts) == ("schedule", 42, "klaviyo", 3, {"pages": 1})
    with pytest.raises(StoreError, match="was begun"):
        wh.state.start_run(job, "import", run_id="never-begun-" + job, begun=True)
    with pytest.raises(StoreError, match="was begun"):
        wh.state.start_run(job, "export", run_id="r-" + job, begun=True)  # another kind's run
    assert len(wh.state.runs(job)) == 1


def test_a_run_carries_its_error_as_data(wh, job):
    run = wh.state.start_run(job, "export")
    detail = {"code": "invalid_email", "message": "not an email", "field": "email", "row": 7, "hint": "fix row 8"}
    wh.state.finish_run(run, "error", error="not an email", error_detail=detail)
    assert wh.state.job(run).error_detail == detail
    wh.state.end_job(run, "error", error="stopped", error_detail={"code": "killed", "message": "stopped"})
    assert wh.state.runs(job)[0].error_detail == {"code": "killed", "message": "stopped"}
    wh.state.reopen_run(run)
    assert wh.state.job(run).error_detail is None


OLD_RUNS = (
    "CREATE TABLE _bridge.runs (run_id VARCHAR PRIMARY KEY, job VARCHAR NOT NULL, kind VARCHAR NOT NULL, "
    "status VARCHAR NOT NULL, started_at TIMESTAMPTZ NOT NULL, ended_at TIMESTAMPTZ, rows_read BIGINT, "
    "rows_written BIGINT, counts {json}, error VARCHAR)"
)
OLD_ROW = (
    "INSERT INTO _bridge.runs VALUES ('old-1', 'klaviyo.events', 'import', 'succeeded', "
    "'2024-05-01 10:00:00+00', '2024-05-01 10:01:00+00', 5, 5, '{{\"pages\": 1}}', NULL)"
)


def _check_old_state_reads(url: str) -> None:
    from klaviyo_bridge.store.factory import open_warehouse

    with open_warehouse(url) as wh:  # opening migrates: job columns added, old status words renamed
        [run] = wh.state.runs("klaviyo.events")
        assert (run.run_id, run.status, run.rows_written, run.counts) == ("old-1", "success", 5, {"pages": 1})
        assert (run.schedule, run.triggered_by, run.cancel_requested, run.error_detail) == (None, None, False, None)
        assert wh.state.jobs() == [run]
        wh.state.end_job("old-1", "error", error="x", error_detail={"code": "c", "message": "x"})
        assert wh.state.job("old-1").error_detail == {"code": "c", "message": "x"}


def test_a_duckdb_state_of_an_older_shape_still_reads(tmp_path):
    """A warehouse whose ``runs`` has only the columns of the first versions (no job columns, no
    error_detail, old status words) opens, migrates and reads."""
    import duckdb

    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE SCHEMA _bridge")
    con.execute(OLD_RUNS.format(json="JSON"))
    con.execute(OLD_ROW.format())
    con.close()
    _check_old_state_reads(str(path))


def test_a_postgres_state_of_an_older_shape_still_reads():
    """The same on PostgreSQL, in a database of its own (the shared one's state is in use)."""
    import uuid

    import adbc_driver_postgresql.dbapi as pg

    from .conftest import PG_URL

    name = f"store18_old_{uuid.uuid4().hex[:8]}"
    base, _, _ = PG_URL.rpartition("/")
    with pg.connect(PG_URL, autocommit=True) as admin, admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        with pg.connect(f"{base}/{name}") as con, con.cursor() as cur:
            cur.execute("CREATE SCHEMA _bridge")
            cur.execute(OLD_RUNS.format(json="JSONB"))
            cur.execute(OLD_ROW.format())
            con.commit()
        _check_old_state_reads(f"{base}/{name}")
    finally:
        with pg.connect(PG_URL, autocommit=True) as admin, admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
