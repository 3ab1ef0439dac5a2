"""Job state kept next to the data, in the reserved ``_bridge`` schema of the same warehouse.

Keeping cursors in the warehouse lets a writer commit a table's rows and the cursor that covers
them in one transaction (``TableWriter.commit``), so a crash can never move a cursor past data
that was not written. Runs, export batches and per-row export outcomes are the job history the
CLI and exports report from. No table here has a field for API keys: secrets never land in state.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from ..errors import StoreError
from .columns import Kind
from .engine import Session

if TYPE_CHECKING:
    from .warehouse import Warehouse

from .state_common import ROW_OUTCOMES, RUN_KINDS, RUN_STATUSES, S, RunRecord, _opt_int  # noqa: F401 (re-exported)


def _state_ddl(session: Session) -> list[str]:
    t = session.sql_type
    text, ts, big, js = t(Kind.TEXT), t(Kind.TIMESTAMP), t(Kind.INTEGER), t(Kind.JSON)
    outcomes = ", ".join(f"'{o}'" for o in ROW_OUTCOMES)
    return [
        f"CREATE SCHEMA IF NOT EXISTS {S}",
        f"""CREATE TABLE IF NOT EXISTS {S}.cursors (
            job {text} PRIMARY KEY, value {text} NOT NULL, updated_at {ts} NOT NULL)""",
        f"""CREATE TABLE IF NOT EXISTS {S}.runs (
            run_id {text} PRIMARY KEY, job {text} NOT NULL, kind {text} NOT NULL,
            status {text} NOT NULL, started_at {ts} NOT NULL, ended_at {ts},
            rows_read {big}, rows_written {big}, counts {js}, error {text})""",
        f"""CREATE TABLE IF NOT EXISTS {S}.export_batches (
            batch_id {text} PRIMARY KEY, run_id {text} NOT NULL, operation {text} NOT NULL,
            status {text} NOT NULL, klaviyo_job_id {text}, row_count {big},
            created_at {ts} NOT NULL, updated_at {ts} NOT NULL, error {text})""",
        f"""CREATE TABLE IF NOT EXISTS {S}.export_rows (
            batch_id {text} NOT NULL, run_id {text} NOT NULL, row_index {big} NOT NULL,
            outcome {text} NOT NULL CHECK (outcome IN ({outcomes})), reason {text})""",
    ]


def create_state_tables(session: Session) -> None:
    """Idempotent; runs once when a warehouse is opened."""
    for statement in _state_ddl(session):
        session.execute(statement)
    create_schedule_tables(session)


def save_cursors(session: Session, cursors: Mapping[str, str]) -> None:
    """Upsert cursors inside the caller's transaction."""
    for job, value in cursors.items():
        if not isinstance(value, str):
            raise StoreError(f"cursor for {job!r} must be a string (an ISO time), got {type(value).__name__}")
        session.execute(
            f"INSERT INTO {S}.cursors (job, value, updated_at) VALUES ($1, $2, now()) "
            "ON CONFLICT (job) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            [job, value],
        )


from .schedule_state import (  # noqa: E402, F401  (re-exported: callers import them from here)
    JobRecord,
    ScheduleRecord,
    _ScheduleStateMixin,
    create_schedule_tables,
)


@dataclass(frozen=True)
class ExportBatchRecord:
    batch_id: str
    run_id: str
    operation: str
    status: str
    klaviyo_job_id: str | None
    row_count: int | None
    created_at: datetime
    updated_at: datetime
    error: str | None


class StateStore(_ScheduleStateMixin):
    """Cursors, run history, export results, schedules and jobs; each call is its own short transaction."""

    def __init__(self, warehouse: "Warehouse") -> None:
        self._warehouse = warehouse

    def _transaction(self):
        return self._warehouse.transaction()

    # --- cursors -------------------------------------------------------------------------
    def cursor(self, job: str) -> str | None:
        with self._transaction() as s:
            rows = s.fetch(f"SELECT value FROM {S}.cursors WHERE job = $1", [job])
        return rows[0][0] if rows else None

    def cursors(self) -> dict[str, str]:
        with self._transaction() as s:
            return dict(s.fetch(f"SELECT job, value FROM {S}.cursors ORDER BY job"))

    def save_cursor(self, job: str, value: str) -> None:
        """Standalone cursor update; imports should pass cursors to ``TableWriter.commit``."""
        with self._transaction() as s:
            save_cursors(s, {job: value})

    # --- runs ----------------------------------------------------------------------------
    def start_run(self, job: str, kind: str, *, run_id: str | None = None) -> str:
        if kind not in RUN_KINDS:
            raise StoreError(f"run kind must be one of {RUN_KINDS}, got {kind!r}")
        run_id = run_id or uuid.uuid4().hex
        with self._transaction() as s:
            s.execute(f"INSERT INTO {S}.runs (run_id, job, kind, status, started_at) "
                      "VALUES ($1, $2, $3, 'running', now())", [run_id, job, kind])
        return run_id

    def finish_run(self, run_id: str, status: str, *, rows_read: int | None = None,
                   rows_written: int | None = None, counts: Mapping[str, Any] | None = None,
                   error: str | None = None) -> None:
        if status not in RUN_STATUSES[1:]:
            raise StoreError(f"a run finishes as one of {RUN_STATUSES[1:]}, got {status!r}")
        with self._transaction() as s:
            found = s.fetch(f"SELECT count(*) FROM {S}.runs WHERE run_id = $1", [run_id])
            if not found[0][0]:
                raise StoreError(f"no run {run_id!r} in the job history")
            s.execute(
                f"UPDATE {S}.runs SET status = $2, ended_at = now(), rows_read = CAST($3 AS BIGINT), "
                f"rows_written = CAST($4 AS BIGINT), counts = CAST($5 AS {s.sql_type(Kind.JSON)}), "
                "error = CAST($6 AS VARCHAR) WHERE run_id = $1",
                [run_id, status, _opt_int(rows_read), _opt_int(rows_written),
                 json.dumps(dict(counts or {})), error],
            )

    def reopen_run(self, run_id: str) -> RunRecord:
        """Mark a finished (or crashed) run as running again, for ``--resume``; returns it as it was."""
        before = next((r for r in self.runs(limit=100_000) if r.run_id == run_id), None)
        if before is None:
            raise StoreError(f"no run {run_id!r} in the job history")
        with self._transaction() as s:
            s.execute(f"UPDATE {S}.runs SET status = 'running', ended_at = NULL, error = NULL WHERE run_id = $1",
                      [run_id])
        return before

    def runs(self, job: str | None = None, *, limit: int = 50) -> list[RunRecord]:
        """Most recent first."""
        where, params = ("WHERE job = $1", [job]) if job is not None else ("", [])
        with self._transaction() as s:
            rows = s.fetch(
                f"SELECT run_id, job, kind, status, started_at, ended_at, rows_read, rows_written, "
                f"CAST(counts AS VARCHAR), error FROM {S}.runs {where} "
                f"ORDER BY started_at DESC, run_id LIMIT {int(limit)}", params)
        return [RunRecord(*row[:8], counts=json.loads(row[8]) if row[8] else {}, error=row[9]) for row in rows]

    def last_successful_run(self, job: str) -> RunRecord | None:
        return next((r for r in self.runs(job, limit=1000) if r.status == "succeeded"), None)

    # --- exports -------------------------------------------------------------------------
    def record_export_batch(self, batch_id: str, run_id: str, operation: str, status: str, *,
                            klaviyo_job_id: str | None = None, row_count: int | None = None,
                            error: str | None = None) -> None:
        """Insert or update one submitted batch (its status moves as the Klaviyo job runs)."""
        with self._transaction() as s:
            _upsert_export_batch(s, batch_id, run_id, operation, status, klaviyo_job_id, row_count, error)

    def finish_export_batch(self, batch_id: str, run_id: str, operation: str, status: str,
                            results: pa.Table | pa.RecordBatch, *, klaviyo_job_id: str | None = None,
                            error: str | None = None) -> int:
        """A batch's row outcomes and its final status in one transaction: a crash leaves both or neither."""
        table = _export_rows_table(batch_id, run_id, results)
        with self._transaction() as s:
            _insert_export_rows(s, table)
            _upsert_export_batch(s, batch_id, run_id, operation, status, klaviyo_job_id, None, error)
        return table.num_rows

    def export_batches(self, run_id: str) -> list[ExportBatchRecord]:
        with self._transaction() as s:
            rows = s.fetch(
                f"SELECT batch_id, run_id, operation, status, klaviyo_job_id, row_count, created_at, "
                f"updated_at, error FROM {S}.export_batches WHERE run_id = $1 ORDER BY created_at, batch_id",
                [run_id])
        return [ExportBatchRecord(*row) for row in rows]

    def record_export_rows(self, batch_id: str, run_id: str, results: pa.Table | pa.RecordBatch) -> int:
        """Bulk-store per-row outcomes; ``results`` has row_index, outcome and optional reason."""
        table = _export_rows_table(batch_id, run_id, results)
        with self._transaction() as s:
            _insert_export_rows(s, table)
        return table.num_rows

    def export_rows(self, *, batch_id: str | None = None, run_id: str | None = None) -> pa.Table:
        if (batch_id is None) == (run_id is None):
            raise StoreError("pass exactly one of batch_id or run_id")
        column, value = ("batch_id", batch_id) if batch_id is not None else ("run_id", run_id)
        batches = list(self._warehouse.query_arrow(
            f"SELECT batch_id, run_id, row_index, outcome, reason FROM {S}.export_rows "
            f"WHERE {column} = $1 ORDER BY batch_id, row_index", [value]))
        schema = pa.schema([("batch_id", pa.string()), ("run_id", pa.string()), ("row_index", pa.int64()),
                            ("outcome", pa.string()), ("reason", pa.string())])
        return pa.Table.from_batches(batches).cast(schema) if batches else schema.empty_table()


_EXPORT_ROW_KINDS = {"batch_id": Kind.TEXT, "run_id": Kind.TEXT, "row_index": Kind.INTEGER,
                     "outcome": Kind.TEXT, "reason": Kind.TEXT}


def _export_rows_table(batch_id: str, run_id: str, results: pa.Table | pa.RecordBatch) -> pa.Table:
    if isinstance(results, pa.RecordBatch):
        results = pa.Table.from_batches([results])
    names = set(results.schema.names)
    if not {"row_index", "outcome"} <= names:
        raise StoreError("export row results need 'row_index' and 'outcome' columns")
    n = results.num_rows
    reason = results.column("reason").cast(pa.string()) if "reason" in names else pa.nulls(n, pa.string())
    table = pa.table({
        "batch_id": pa.array([batch_id] * n, pa.string()),
        "run_id": pa.array([run_id] * n, pa.string()),
        "row_index": results.column("row_index").cast(pa.int64()),
        "outcome": results.column("outcome").cast(pa.string()),
        "reason": reason,
    })
    bad = set(table.column("outcome").unique().to_pylist()) - set(ROW_OUTCOMES)
    if bad:
        raise StoreError(f"export row outcomes must be one of {ROW_OUTCOMES}, got {sorted(map(str, bad))}")
    return table


def _insert_export_rows(s, table: pa.Table) -> None:
    for batch in table.combine_chunks().to_batches():
        s.insert_batch(f"{S}.export_rows", batch, {c: c for c in _EXPORT_ROW_KINDS}, _EXPORT_ROW_KINDS)


def _upsert_export_batch(s, batch_id: str, run_id: str, operation: str, status: str, klaviyo_job_id: str | None,
                         row_count: int | None, error: str | None) -> None:
    s.execute(
        f"INSERT INTO {S}.export_batches (batch_id, run_id, operation, status, klaviyo_job_id, "
        "row_count, created_at, updated_at, error) VALUES ($1, $2, $3, $4, CAST($5 AS VARCHAR), "
        "CAST($6 AS BIGINT), now(), now(), CAST($7 AS VARCHAR)) ON CONFLICT (batch_id) DO UPDATE SET "
        "status = excluded.status, klaviyo_job_id = coalesce(excluded.klaviyo_job_id, "
        f"{S}.export_batches.klaviyo_job_id), row_count = coalesce(excluded.row_count, "
        f"{S}.export_batches.row_count), updated_at = excluded.updated_at, error = excluded.error",
        [batch_id, run_id, operation, status, klaviyo_job_id, _opt_int(row_count), error],
    )
