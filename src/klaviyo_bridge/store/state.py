"""Job state kept next to the data, in the reserved ``_bridge`` schema of the same warehouse.

Keeping cursors in the warehouse lets a writer commit a table's rows and the cursor that covers
them in one transaction (``TableWriter.commit``), so a crash can never move a cursor past data
that was not written. Runs, export batches and per-row export outcomes are the job history the
CLI and exports report from. No table here has a field for API keys: secrets never land in state.
"""

from __future__ import annotations

import base64
import json
import uuid
import zlib
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from ..errors import StoreError
from .columns import Kind
from .engine import Session
from .identifiers import STATE_SCHEMA

if TYPE_CHECKING:
    from .warehouse import Warehouse

from .state_common import (  # re-exported ("X as X"): callers import them from here
    OLD_STATUS_WORDS as OLD_STATUS_WORDS,
)
from .state_common import (
    ROW_OUTCOMES as ROW_OUTCOMES,
)
from .state_common import (
    RUN_KINDS as RUN_KINDS,
)
from .state_common import (
    RUN_STATUSES as RUN_STATUSES,
)
from .state_common import (
    JobRecord as JobRecord,
)
from .state_common import (
    S as S,
)
from .state_common import (
    _opt_int as _opt_int,
)

#: Marks ``export_row_ids.identifiers`` text that ``pack_identifiers`` compressed.
PACKED_PREFIX = "zlib:"


def pack_identifiers(identifiers: list[str | None]) -> str:
    """A chunk's identifiers as stored: ``zlib:`` and the base64 of their JSON array compressed.

    DuckDB holds the strings a run writes in its buffer pool: a 1M-row export's identifiers, as
    plain JSON, were ~30 MB of the process's peak (docs/benchmarks.md). Compressed, e-mail-like
    identifiers take 2.5-9x less, at ~5 ms of CPU per 20,000 rows. Short chunks stay plain JSON.
    """
    text = json.dumps(identifiers)
    if len(text) < 1024:
        return text
    packed = PACKED_PREFIX + base64.b64encode(zlib.compress(text.encode(), 1)).decode("ascii")
    return packed if len(packed) < len(text) else text


def unpack_identifiers(text: str) -> list[str | None]:
    """The identifiers ``pack_identifiers`` stored (plain JSON, as older versions stored them, too)."""
    if text.startswith(PACKED_PREFIX):
        text = zlib.decompress(base64.b64decode(text[len(PACKED_PREFIX) :])).decode()
    ids: list[str | None] = json.loads(text)
    return ids


#: What a list snapshot keeps of each member.
SNAPSHOT_COLUMNS = ("profile_id", "email", "phone_number", "external_id")


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
        # Row outcomes as runs of consecutive input rows with one outcome and reason: a 10,000-row
        # batch that Klaviyo accepted is one row here, not 10,000 (storing a 1M-row export's
        # outcomes went from ~1.9 to ~0.9 CPU-s, what is left being the 100 transactions
        # themselves). ``export_rows`` shows them one row each.
        f"""CREATE TABLE IF NOT EXISTS {S}.export_row_ranges (
            batch_id {text} NOT NULL, run_id {text} NOT NULL, first_row {big} NOT NULL,
            row_count {big} NOT NULL CHECK (row_count > 0),
            outcome {text} NOT NULL CHECK (outcome IN ({outcomes})), reason {text})""",
        # What a resume must find unchanged: query text, operation, destination, settings (no key).
        f"""CREATE TABLE IF NOT EXISTS {S}.export_runs (
            run_id {text} PRIMARY KEY, fingerprint {text} NOT NULL)""",
        # Which person each input row is about ("email:ann@example.com"), one JSON array per chunk
        # of consecutive rows: outcomes stay ranges, and a row's identifier is still at hand.
        # Stored compressed (``pack_identifiers``).
        f"""CREATE TABLE IF NOT EXISTS {S}.export_row_ids (
            run_id {text} NOT NULL, first_row {big} NOT NULL, identifiers {text} NOT NULL)""",
        # What an export run decided before sending and a --resume must reuse (a mirror's removals).
        f"""CREATE TABLE IF NOT EXISTS {S}.export_plans (
            run_id {text} NOT NULL, name {text} NOT NULL, body {text} NOT NULL)""",
        # A list's members as a mirror export last knew them (profile id and the key it matched on),
        # and when it read them: the next run reads only what joined since, when the count agrees.
        f"""CREATE TABLE IF NOT EXISTS {S}.list_snapshots (
            destination {text} NOT NULL, profile_id {text} NOT NULL, email {text}, phone_number {text},
            external_id {text})""",
        f"""CREATE TABLE IF NOT EXISTS {S}.list_snapshot_meta (
            destination {text} PRIMARY KEY, newest_joined {text}, members {big} NOT NULL, run_id {text},
            saved_at {ts} NOT NULL)""",
    ]


def create_state_tables(session: Session) -> None:
    """Idempotent; runs once when a warehouse is opened."""
    for statement in _state_ddl(session):
        session.execute(statement)
    have = session.table_columns(STATE_SCHEMA, "export_batches") or {}
    if "fingerprint" not in have:
        session.execute(f"ALTER TABLE {S}.export_batches ADD COLUMN fingerprint {session.sql_type(Kind.TEXT)}")
    _widen_outcomes(session)
    _create_export_rows_view(session)
    create_schedule_tables(session)
    _migrate_status_words(session)


def _widen_outcomes(session: Session) -> None:
    """Warehouses made before ``unconfirmed`` existed check outcomes against the older list: rebuild
    that check (PostgreSQL: swap the constraint; DuckDB cannot alter one: copy the table)."""
    if session.sql_type(Kind.JSON).upper() == "JSONB":
        rows = session.fetch(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE contype = 'c' AND conrelid = to_regclass($1)",
            [f"{STATE_SCHEMA}.export_row_ranges"],
        )
        for name, definition in rows:
            if "outcome" in definition and "unconfirmed" not in definition:
                outcomes = ", ".join(f"'{o}'" for o in ROW_OUTCOMES)
                session.execute(f'ALTER TABLE {S}.export_row_ranges DROP CONSTRAINT "{name}"')
                session.execute(f"ALTER TABLE {S}.export_row_ranges ADD CONSTRAINT {name} CHECK (outcome IN ({outcomes}))")
        return
    rows = session.fetch(
        "SELECT sql FROM duckdb_tables() WHERE schema_name = $1 AND table_name = 'export_row_ranges'", [STATE_SCHEMA]
    )
    if not rows or "unconfirmed" in (rows[0][0] or ""):
        return
    session.execute(f"DROP VIEW IF EXISTS {S}.export_rows")
    session.execute(f"ALTER TABLE {S}.export_row_ranges RENAME TO export_row_ranges_old")
    for statement in _state_ddl(session):
        if "export_row_ranges (" in statement:
            session.execute(statement)
    session.execute(f"INSERT INTO {S}.export_row_ranges SELECT * FROM {S}.export_row_ranges_old")
    session.execute(f"DROP TABLE {S}.export_row_ranges_old")


def _migrate_status_words(session: Session) -> None:
    """Runs recorded with the old status words (succeeded / failed / cancelled) take the seeds' words."""
    old = list(OLD_STATUS_WORDS)
    found = session.fetch(f"SELECT count(*) FROM {S}.runs WHERE status IN ($1, $2, $3)", old)
    if found[0][0]:
        for before, after in OLD_STATUS_WORDS.items():
            session.execute(f"UPDATE {S}.runs SET status = $2 WHERE status = $1", [before, after])


def _create_export_rows_view(session: Session) -> None:
    """The ``export_rows`` view, made once. Warehouses written before row ranges have a table of
    that name (one row per input row): its rows move into ``export_row_ranges`` first."""
    found = session.fetch(
        "SELECT table_type FROM information_schema.tables WHERE table_schema = $1 AND table_name = 'export_rows'", [STATE_SCHEMA]
    )
    kind = found[0][0] if found else None
    if kind == "VIEW":
        return
    if kind is not None:
        session.execute(
            f"INSERT INTO {S}.export_row_ranges (batch_id, run_id, first_row, row_count, outcome, "
            f"reason) SELECT batch_id, run_id, row_index, 1, outcome, reason FROM {S}.export_rows"
        )
        session.execute(f"DROP TABLE {S}.export_rows")
    session.execute(
        f"CREATE VIEW {S}.export_rows AS SELECT r.batch_id, r.run_id, g.row_index, r.outcome, r.reason "
        f"FROM {S}.export_row_ranges r, "
        "generate_series(r.first_row, r.first_row + r.row_count - 1) AS g(row_index)"
    )


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


from .schedule_state import (  # noqa: E402  re-exported ("X as X"): callers import them from here
    _JOB_COLUMNS as _JOB_COLUMNS,
)
from .schedule_state import (
    ScheduleRecord as ScheduleRecord,
)
from .schedule_state import (
    _detail_json as _detail_json,
)
from .schedule_state import (
    _job_from_row as _job_from_row,
)
from .schedule_state import (
    _ScheduleStateMixin as _ScheduleStateMixin,
)
from .schedule_state import (
    create_schedule_tables as create_schedule_tables,
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
    fingerprint: str | None = None


class StateStore(_ScheduleStateMixin):
    """Cursors, run history, export results, schedules and jobs; each call is its own short transaction."""

    def __init__(self, warehouse: "Warehouse") -> None:
        self._warehouse = warehouse

    def _transaction(self) -> AbstractContextManager[Session]:
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
    # One record per run (``JobRecord``, a row of ``runs``), whoever starts it: ``begin_job`` writes
    # it (with the schedule's bookkeeping), the engine fills in its outcome (``finish_run``) and
    # ``end_job`` closes a job run by ``jobs.execute_job``.
    def start_run(self, job: str, kind: str, *, run_id: str | None = None, begun: bool = False) -> str:
        """The id of the run an engine records on: a new one, or with ``begun`` the row ``run_id``
        that ``begin_job`` already wrote (a job run by ``execute_job``: one record, not two)."""
        if kind not in RUN_KINDS:
            raise StoreError(f"run kind must be one of {RUN_KINDS}, got {kind!r}")
        if begun:
            if run_id is None:
                raise StoreError("a run begun elsewhere needs its run id")
            with self._transaction() as s:
                found = s.fetch(f"SELECT kind FROM {S}.runs WHERE run_id = $1", [run_id])
            if not found or found[0][0] != kind:
                raise StoreError(f"no {kind} run {run_id!r} was begun in the job history")
            return run_id
        run_id = run_id or uuid.uuid4().hex
        self.begin_job(run_id, job, kind, triggered_by=None)
        return run_id

    def finish_run(
        self,
        run_id: str,
        status: str,
        *,
        rows_read: int | None = None,
        rows_written: int | None = None,
        counts: Mapping[str, Any] | None = None,
        error: str | None = None,
        error_detail: Mapping[str, Any] | None = None,
    ) -> None:
        """The engine's account of its run: status, counts and error (as text, and as data in
        ``error_detail``: code, message, field, row, hint)."""
        if status not in RUN_STATUSES[1:]:
            raise StoreError(f"a run finishes as one of {RUN_STATUSES[1:]}, got {status!r}")
        with self._transaction() as s:
            found = s.fetch(f"SELECT count(*) FROM {S}.runs WHERE run_id = $1", [run_id])
            if not found[0][0]:
                raise StoreError(f"no run {run_id!r} in the job history")
            js = s.sql_type(Kind.JSON)
            s.execute(
                f"UPDATE {S}.runs SET status = $2, ended_at = now(), rows_read = CAST($3 AS BIGINT), "
                f"rows_written = CAST($4 AS BIGINT), counts = CAST($5 AS {js}), "
                f"error = CAST($6 AS VARCHAR), error_detail = CAST($7 AS {js}) WHERE run_id = $1",
                [
                    run_id,
                    status,
                    _opt_int(rows_read),
                    _opt_int(rows_written),
                    json.dumps(dict(counts or {})),
                    error,
                    _detail_json(error_detail),
                ],
            )

    def reopen_run(self, run_id: str) -> JobRecord:
        """Mark a finished (or crashed) run as running again, for ``--resume``; returns it as it was."""
        before = self._run(run_id)
        if before is None:
            raise StoreError(f"no run {run_id!r} in the job history")
        with self._transaction() as s:
            s.execute(
                f"UPDATE {S}.runs SET status = 'running', ended_at = NULL, error = NULL, error_detail = NULL WHERE run_id = $1",
                [run_id],
            )
        return before

    def _run(self, run_id: str) -> JobRecord | None:
        """One run by its exact id (``job`` also takes a unique prefix)."""
        with self._transaction() as s:
            rows = s.fetch(f"SELECT {_JOB_COLUMNS} FROM {S}.runs WHERE run_id = $1", [run_id])
        return _job_from_row(rows[0]) if rows else None

    def has_run(self, run_id: str) -> bool:
        return self._run(run_id) is not None

    def runs(self, job: str | None = None, *, limit: int = 50) -> list[JobRecord]:
        """Most recent first (``jobs`` filtered on the history label)."""
        return self.jobs(job=job, limit=limit)

    def last_successful_run(self, job: str) -> JobRecord | None:
        found = self.jobs(job=job, status="success", limit=1)
        return found[0] if found else None

    # --- exports -------------------------------------------------------------------------
    def record_export_batch(
        self,
        batch_id: str,
        run_id: str,
        operation: str,
        status: str,
        *,
        klaviyo_job_id: str | None = None,
        row_count: int | None = None,
        error: str | None = None,
        fingerprint: str | None = None,
    ) -> None:
        """Insert or update one submitted batch (its status moves as the Klaviyo job runs)."""
        with self._transaction() as s:
            _upsert_export_batch(s, batch_id, run_id, operation, status, klaviyo_job_id, row_count, error, fingerprint)

    def save_export_fingerprint(self, run_id: str, fingerprint: Mapping[str, Any]) -> None:
        """What a ``--resume`` of this run must find unchanged (never a key)."""
        with self._transaction() as s:
            s.execute(f"DELETE FROM {S}.export_runs WHERE run_id = $1", [run_id])
            s.execute(
                f"INSERT INTO {S}.export_runs (run_id, fingerprint) VALUES ($1, $2)",
                [run_id, json.dumps(dict(fingerprint), sort_keys=True)],
            )

    def export_fingerprint(self, run_id: str) -> dict[str, Any] | None:
        with self._transaction() as s:
            rows = s.fetch(f"SELECT fingerprint FROM {S}.export_runs WHERE run_id = $1", [run_id])
        return json.loads(rows[0][0]) if rows else None

    def record_export_identifiers(self, run_id: str, first_row: int, identifiers: list[str | None]) -> None:
        """The identifiers of input rows ``first_row ...`` (replacing what an earlier attempt stored)."""
        with self._transaction() as s:
            s.execute(
                f"DELETE FROM {S}.export_row_ids WHERE run_id = $1 AND first_row = CAST($2 AS BIGINT)", [run_id, int(first_row)]
            )
            s.execute(
                f"INSERT INTO {S}.export_row_ids (run_id, first_row, identifiers) VALUES ($1, CAST($2 AS BIGINT), $3)",
                [run_id, int(first_row), pack_identifiers(identifiers)],
            )

    def export_identifiers(self, run_id: str, first_row: int = 0, end_row: int | None = None) -> dict[int, str | None]:
        """Row index -> identifier for every row of the run whose identifiers were stored, or of
        rows ``first_row ..< end_row`` (read from the chunks that hold them)."""
        with self._transaction() as s:
            if end_row is None and first_row == 0:
                rows = s.fetch(f"SELECT first_row, identifiers FROM {S}.export_row_ids WHERE run_id = $1", [run_id])
            else:
                # the chunk that starts at or before first_row, and every chunk starting before end_row
                rows = s.fetch(
                    f"""SELECT first_row, identifiers FROM {S}.export_row_ids
                        WHERE run_id = $1 AND first_row < CAST($3 AS BIGINT) AND first_row >= COALESCE(
                            (SELECT max(first_row) FROM {S}.export_row_ids
                             WHERE run_id = $1 AND first_row <= CAST($2 AS BIGINT)), 0)""",
                    [run_id, int(first_row), int(end_row) if end_row is not None else 2**62],
                )
        end = 2**62 if end_row is None else end_row
        out: dict[int, str | None] = {}
        for first, text in rows:
            for i, ident in enumerate(unpack_identifiers(text)):
                if first_row <= int(first) + i < end:
                    out[int(first) + i] = ident
        return out

    def export_outcome_counts(self, run_id: str, first_row: int = 0, end_row: int | None = None) -> dict[str, int]:
        """Rows per outcome among rows ``first_row ..< end_row`` of a run (ranges never straddle a batch)."""
        sql = f"SELECT outcome, sum(row_count) FROM {S}.export_row_ranges WHERE run_id = $1 AND first_row >= CAST($2 AS BIGINT)"
        params: list[Any] = [run_id, int(first_row)]
        if end_row is not None:
            sql += " AND first_row < CAST($3 AS BIGINT)"
            params.append(int(end_row))
        with self._transaction() as s:
            rows = s.fetch(sql + " GROUP BY outcome", params)
        return {o: int(n) for o, n in rows}

    def export_batch_counts(self, run_id: str) -> dict[str, int]:
        """Batches of a run per status."""
        with self._transaction() as s:
            rows = s.fetch(f"SELECT status, count(*) FROM {S}.export_batches WHERE run_id = $1 GROUP BY status", [run_id])
        return {status: int(n) for status, n in rows}

    def export_top_reasons(self, run_id: str, limit: int = 5) -> list[tuple[str, str, int]]:
        """The most frequent (outcome, reason, rows) among a run's rejected, skipped and unconfirmed rows."""
        with self._transaction() as s:
            rows = s.fetch(
                f"SELECT outcome, reason, sum(row_count) AS n FROM {S}.export_row_ranges WHERE run_id = $1 "
                "AND reason IS NOT NULL AND outcome IN ('rejected', 'skipped', 'unconfirmed') "
                f"GROUP BY outcome, reason ORDER BY n DESC, reason LIMIT {int(limit)}",
                [run_id],
            )
        return [(outcome, reason, int(n)) for outcome, reason, n in rows]

    def forget_export_rows(self, batch_id: str) -> None:
        """Drop the row outcomes stored for a batch (a killed run's, never marked final: a resume
        records them again, and each input row must have exactly one outcome)."""
        with self._transaction() as s:
            s.execute(f"DELETE FROM {S}.export_row_ranges WHERE batch_id = $1", [batch_id])

    def save_export_plan(self, run_id: str, name: str, body: Any) -> None:
        """What a run decided before sending (JSON), for a --resume of it to reuse."""
        with self._transaction() as s:
            s.execute(f"DELETE FROM {S}.export_plans WHERE run_id = $1 AND name = $2", [run_id, name])
            s.execute(f"INSERT INTO {S}.export_plans (run_id, name, body) VALUES ($1, $2, $3)", [run_id, name, json.dumps(body)])

    def export_plan(self, run_id: str, name: str) -> Any:
        with self._transaction() as s:
            rows = s.fetch(f"SELECT body FROM {S}.export_plans WHERE run_id = $1 AND name = $2", [run_id, name])
        return json.loads(rows[0][0]) if rows else None

    def save_list_snapshot(self, destination: str, members: pa.Table, newest_joined: str | None, run_id: str | None) -> None:
        """Replace the stored members of ``destination`` (profile_id, email, phone_number, external_id)
        in one transaction: a reader sees the old snapshot or the new one."""
        kinds = {c: Kind.TEXT for c in SNAPSHOT_COLUMNS}
        table = members.select(list(SNAPSHOT_COLUMNS)).cast(pa.schema([(c, pa.string()) for c in SNAPSHOT_COLUMNS]))
        table = table.add_column(0, "destination", pa.array([destination] * table.num_rows, pa.string()))
        kinds = {"destination": Kind.TEXT, **kinds}
        with self._transaction() as s:
            s.execute(f"DELETE FROM {S}.list_snapshots WHERE destination = $1", [destination])
            s.execute(f"DELETE FROM {S}.list_snapshot_meta WHERE destination = $1", [destination])
            for batch in table.to_batches(max_chunksize=100_000):
                s.insert_batch(f"{S}.list_snapshots", batch, {c: c for c in kinds}, kinds)
            s.execute(
                f"INSERT INTO {S}.list_snapshot_meta (destination, newest_joined, members, run_id, saved_at) "
                "VALUES ($1, $2, CAST($3 AS BIGINT), $4, now())",
                [destination, newest_joined, table.num_rows, run_id],
            )

    def list_snapshot(self, destination: str) -> tuple[dict[str, Any], pa.Table] | None:
        """(meta: newest_joined, members, run_id; the members), or None when none is stored."""
        with self._transaction() as s:
            meta = s.fetch(
                f"SELECT newest_joined, members, run_id FROM {S}.list_snapshot_meta WHERE destination = $1", [destination]
            )
        if not meta:
            return None
        cols = ", ".join(SNAPSHOT_COLUMNS)
        batches = list(
            self._warehouse.query_arrow(f"SELECT {cols} FROM {S}.list_snapshots WHERE destination = $1", [destination])
        )
        schema = pa.schema([(c, pa.string()) for c in SNAPSHOT_COLUMNS])
        table = pa.Table.from_batches(batches).cast(schema) if batches and batches[0].num_columns else schema.empty_table()
        newest, members, run_id = meta[0]
        return {"newest_joined": newest, "members": int(members), "run_id": run_id}, table

    def finish_export_batch(
        self,
        batch_id: str,
        run_id: str,
        operation: str,
        status: str,
        results: pa.Table | pa.RecordBatch,
        *,
        klaviyo_job_id: str | None = None,
        error: str | None = None,
        fingerprint: str | None = None,
        row_count: int | None = None,
    ) -> int:
        """A batch's row outcomes and its final status in one transaction: a crash leaves both or neither."""
        table = _export_rows_table(batch_id, run_id, results)
        with self._transaction() as s:
            _insert_export_rows(s, table)
            _upsert_export_batch(s, batch_id, run_id, operation, status, klaviyo_job_id, row_count, error, fingerprint)
        return int(results.num_rows)

    def export_batches(self, run_id: str) -> list[ExportBatchRecord]:
        with self._transaction() as s:
            rows = s.fetch(
                f"SELECT batch_id, run_id, operation, status, klaviyo_job_id, row_count, created_at, "
                f"updated_at, error, fingerprint FROM {S}.export_batches WHERE run_id = $1 "
                "ORDER BY created_at, batch_id",
                [run_id],
            )
        return [ExportBatchRecord(*row) for row in rows]

    def record_export_rows(self, batch_id: str, run_id: str, results: pa.Table | pa.RecordBatch) -> int:
        """Bulk-store per-row outcomes; ``results`` has row_index, outcome and optional reason."""
        table = _export_rows_table(batch_id, run_id, results)
        with self._transaction() as s:
            _insert_export_rows(s, table)
        return int(results.num_rows)

    def export_rows(self, *, batch_id: str | None = None, run_id: str | None = None) -> pa.Table:
        if (batch_id is None) == (run_id is None):
            raise StoreError("pass exactly one of batch_id or run_id")
        column, value = ("batch_id", batch_id) if batch_id is not None else ("run_id", run_id)
        batches = list(
            self._warehouse.query_arrow(
                f"SELECT batch_id, run_id, row_index, outcome, reason FROM {S}.export_rows "
                f"WHERE {column} = $1 ORDER BY batch_id, row_index",
                [value],
            )
        )
        schema = pa.schema(
            [
                ("batch_id", pa.string()),
                ("run_id", pa.string()),
                ("row_index", pa.int64()),
                ("outcome", pa.string()),
                ("reason", pa.string()),
            ]
        )
        table = pa.Table.from_batches(batches).cast(schema) if batches else schema.empty_table()
        runs: set[str] = set(table.column("run_id").to_pylist()) if batch_id is not None else {str(run_id)}
        names: dict[tuple[str, int], str | None] = {}
        for run in runs:
            names.update({(run, i): ident for i, ident in self.export_identifiers(run).items()})
        identifiers = [
            names.get((r, i)) for r, i in zip(table.column("run_id").to_pylist(), table.column("row_index").to_pylist())
        ]
        return table.append_column("identifier", pa.array(identifiers, pa.string()))


_RANGE_KINDS = {
    "batch_id": Kind.TEXT,
    "run_id": Kind.TEXT,
    "first_row": Kind.INTEGER,
    "row_count": Kind.INTEGER,
    "outcome": Kind.TEXT,
    "reason": Kind.TEXT,
}


def _export_rows_table(batch_id: str, run_id: str, results: pa.Table | pa.RecordBatch) -> pa.Table:
    """The results (row_index, outcome, optional reason) as ranges of consecutive rows that share
    an outcome and a reason, ready for ``export_row_ranges``."""
    if isinstance(results, pa.RecordBatch):
        results = pa.Table.from_batches([results])
    names = set(results.schema.names)
    if not {"row_index", "outcome"} <= names:
        raise StoreError("export row results need 'row_index' and 'outcome' columns")
    n = results.num_rows
    outcome = results.column("outcome").cast(pa.string()).combine_chunks()
    bad = set(outcome.unique().to_pylist()) - set(ROW_OUTCOMES)
    if bad:
        raise StoreError(f"export row outcomes must be one of {ROW_OUTCOMES}, got {sorted(map(str, bad))}")
    reason = results.column("reason").cast(pa.string()).combine_chunks() if "reason" in names else pa.nulls(n, pa.string())
    index = results.column("row_index").cast(pa.int64()).to_numpy()
    order = np.argsort(index, kind="stable")
    index = index[order]
    outcome_code, reason_code = _codes(outcome)[order], _codes(reason)[order]
    changes = (np.diff(index) != 1) | (np.diff(outcome_code) != 0) | (np.diff(reason_code) != 0)
    starts = np.flatnonzero(np.concatenate([[True], changes])) if n else np.zeros(0, np.int64)
    firsts = pa.array(order[starts], pa.int64())
    return pa.table(
        {
            "batch_id": pa.array([batch_id] * len(starts), pa.string()),
            "run_id": pa.array([run_id] * len(starts), pa.string()),
            "first_row": pa.array(index[starts], pa.int64()),
            "row_count": pa.array(np.diff(np.append(starts, n)), pa.int64()),
            "outcome": outcome.take(firsts),
            "reason": reason.take(firsts),
        }
    )


def _codes(values: pa.Array) -> np.ndarray:
    """An integer per value, equal where the values are equal (null is its own code)."""
    codes = values.dictionary_encode().indices.fill_null(-1)
    out: np.ndarray = codes.to_numpy(zero_copy_only=False).astype(np.int64)
    return out


def _insert_export_rows(s: Session, table: pa.Table) -> None:
    for batch in table.combine_chunks().to_batches():
        s.insert_batch(f"{S}.export_row_ranges", batch, {c: c for c in _RANGE_KINDS}, _RANGE_KINDS)


def _upsert_export_batch(
    s: Session,
    batch_id: str,
    run_id: str,
    operation: str,
    status: str,
    klaviyo_job_id: str | None,
    row_count: int | None,
    error: str | None,
    fingerprint: str | None = None,
) -> None:
    """An UPDATE, or an INSERT when the batch is new: in DuckDB either costs a third of an
    INSERT .. ON CONFLICT, and every batch of an export is written three times."""
    updated = s.fetch(
        f"UPDATE {S}.export_batches SET status = $2, klaviyo_job_id = coalesce(CAST($3 AS VARCHAR), klaviyo_job_id), "
        "row_count = coalesce(CAST($4 AS BIGINT), row_count), updated_at = now(), error = CAST($5 AS VARCHAR), "
        "fingerprint = coalesce(CAST($6 AS VARCHAR), fingerprint) WHERE batch_id = $1 RETURNING batch_id",
        [batch_id, status, klaviyo_job_id, _opt_int(row_count), error, fingerprint],
    )
    if updated:
        return
    s.execute(
        f"INSERT INTO {S}.export_batches (batch_id, run_id, operation, status, klaviyo_job_id, "
        "row_count, created_at, updated_at, error, fingerprint) VALUES ($1, $2, $3, $4, CAST($5 AS VARCHAR), "
        "CAST($6 AS BIGINT), now(), now(), CAST($7 AS VARCHAR), CAST($8 AS VARCHAR))",
        [batch_id, run_id, operation, status, klaviyo_job_id, _opt_int(row_count), error, fingerprint],
    )
