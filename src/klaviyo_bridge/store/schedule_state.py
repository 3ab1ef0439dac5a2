"""Schedules and the job view of runs, in the ``_bridge`` state schema (split from state.py).

``runs`` gains nullable columns that say who asked for a run and where it runs; they are
added when missing, so warehouses created before them keep working. ``schedules`` holds the
saved import, export and workflow schedules. No column holds a secret: a schedule's config
names a saved authentication (``connection: ...``) instead of carrying a key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..errors import StoreError, error_from_text
from .columns import Kind
from .engine import Session
from .identifiers import STATE_SCHEMA
from .state_common import RUN_KINDS, JobRecord, S, _opt_int

JOB_STATUSES = ("running", "success", "error", "killed")


def _job_columns(session: Session) -> dict[str, str]:
    t = session.sql_type
    return {
        "schedule": t(Kind.TEXT),
        "scheduled_for": t(Kind.TIMESTAMP),
        "pid": t(Kind.INTEGER),
        "host": t(Kind.TEXT),
        "triggered_by": t(Kind.TEXT),
        "target_database": t(Kind.TEXT),
        "target_table": t(Kind.TEXT),
        "cancel_requested": t(Kind.BOOLEAN),
        "note": t(Kind.TEXT),
        "error_detail": t(Kind.JSON),
    }


def _schedule_ddl(session: Session) -> str:
    t = session.sql_type
    text, ts, big, boolean = t(Kind.TEXT), t(Kind.TIMESTAMP), t(Kind.INTEGER), t(Kind.BOOLEAN)
    return f"""CREATE TABLE IF NOT EXISTS {S}.schedules (
        name {text} PRIMARY KEY, kind {text} NOT NULL, cron {text} NOT NULL, timezone {text} NOT NULL,
        delay_seconds {big} NOT NULL, target_database {text}, target_table {text}, config {text} NOT NULL,
        enabled {boolean} NOT NULL, disabled_reason {text}, disabled_at {ts},
        consecutive_failures {big} NOT NULL, last_scheduled_for {ts} NOT NULL, last_run_id {text},
        created_at {ts} NOT NULL, updated_at {ts} NOT NULL)"""


def create_schedule_tables(session: Session) -> None:
    """Idempotent: the schedules table and the job columns of ``runs`` (added only when missing)."""
    session.execute(_schedule_ddl(session))
    have = session.table_columns(STATE_SCHEMA, "runs") or {}
    for name, sql_type in _job_columns(session).items():
        if name not in have:
            session.execute(f"ALTER TABLE {S}.runs ADD COLUMN {name} {sql_type}")


@dataclass(frozen=True)
class ScheduleRecord:
    name: str
    kind: str
    cron: str
    timezone: str
    delay_seconds: int
    database: str | None
    table: str | None
    config: dict[str, Any]
    enabled: bool = True
    disabled_reason: str | None = None
    disabled_at: datetime | None = None
    consecutive_failures: int = 0
    last_scheduled_for: datetime | None = None
    last_run_id: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def status(self) -> str:
        return "enabled" if self.enabled else f"disabled: {self.disabled_reason or 'by hand'}"


_SCHEDULE_COLUMNS = (
    "name, kind, cron, timezone, delay_seconds, target_database, target_table, config, enabled, "
    "disabled_reason, disabled_at, consecutive_failures, last_scheduled_for, last_run_id, "
    "created_at, updated_at"
)
_JOB_COLUMNS = (
    "run_id, job, kind, status, started_at, ended_at, rows_read, rows_written, CAST(counts AS VARCHAR), "
    "error, schedule, scheduled_for, pid, host, triggered_by, target_database, target_table, "
    "cancel_requested, note, CAST(error_detail AS VARCHAR)"
)
_SCHEDULE_FIELDS = {
    "cron": Kind.TEXT,
    "timezone": Kind.TEXT,
    "delay_seconds": Kind.INTEGER,
    "target_database": Kind.TEXT,
    "target_table": Kind.TEXT,
    "config": Kind.TEXT,
    "enabled": Kind.BOOLEAN,
    "disabled_reason": Kind.TEXT,
    "disabled_at": Kind.TIMESTAMP,
    "consecutive_failures": Kind.INTEGER,
    "last_scheduled_for": Kind.TIMESTAMP,
}


def _schedule_from_row(row: tuple[Any, ...]) -> ScheduleRecord:
    (
        name,
        kind,
        cron,
        tz,
        delay,
        database,
        table,
        config,
        enabled,
        reason,
        disabled_at,
        failures,
        last,
        last_run,
        created,
        updated,
    ) = row
    return ScheduleRecord(
        name,
        kind,
        cron,
        tz,
        int(delay),
        database,
        table,
        json.loads(config),
        bool(enabled),
        reason,
        disabled_at,
        int(failures),
        last,
        last_run,
        created,
        updated,
    )


def _job_from_row(row: tuple[Any, ...]) -> JobRecord:
    return JobRecord(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        row[5],
        row[6],
        row[7],
        counts=json.loads(row[8]) if row[8] else {},
        error=row[9],
        schedule=row[10],
        scheduled_for=row[11],
        pid=None if row[12] is None else int(row[12]),
        host=row[13],
        triggered_by=row[14],
        database=row[15],
        table=row[16],
        cancel_requested=bool(row[17]),
        note=row[18],
        error_detail=_detail_of(row[19], row[9], row[3]),
    )


def _detail_of(stored: str | None, error: str | None, status: str) -> dict[str, Any] | None:
    """The record's error as data: as stored, or (a record written before ``error_detail``
    existed, or ended with a sentence only) read from its text."""
    if stored:
        detail: dict[str, Any] = json.loads(stored)
        return detail
    return error_from_text(error, status=status) if error else None


def _schedule_update(name: str, changes: Mapping[str, Any]) -> tuple[str, list[Any]] | None:
    """The UPDATE of schedule ``name`` setting ``changes`` (column -> value), or None for no change."""
    sets: list[str] = []
    params: list[Any] = [name]
    for column, value in changes.items():
        kind = _SCHEDULE_FIELDS[column]
        if column == "config":
            value = json.dumps(value, sort_keys=True)
        elif kind is Kind.TIMESTAMP:
            value = _iso(value)
        params.append(value)
        cast = {Kind.TEXT: "VARCHAR", Kind.INTEGER: "BIGINT", Kind.BOOLEAN: "BOOLEAN", Kind.TIMESTAMP: "TIMESTAMPTZ"}[kind]
        sets.append(f"{column} = CAST(${len(params)} AS {cast})")
    if not sets:
        return None
    return f"UPDATE {S}.schedules SET {', '.join(sets)}, updated_at = now() WHERE name = $1", params


def _detail_json(detail: Mapping[str, Any] | None) -> str | None:
    """``error_detail`` as stored; None without one (a record's text error is read as data by
    ``_detail_of``, so old records and sentence-only ends read the same)."""
    return None if detail is None else json.dumps(dict(detail), sort_keys=True, default=str)


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        raise StoreError("schedule times must be timezone-aware")
    return value.isoformat()


class _ScheduleStateMixin:
    """Schedules and jobs; mixed into ``StateStore`` below."""

    def _transaction(self) -> AbstractContextManager[Session]:
        raise NotImplementedError

    # --- schedules ---------------------------------------------------------------------
    def create_schedule(self, record: ScheduleRecord) -> None:
        """Insert a new schedule; ``record.last_scheduled_for`` is where its slots start (exclusive)."""
        if record.last_scheduled_for is None:
            raise StoreError("a new schedule needs last_scheduled_for (slots start after it)")
        with self._transaction() as s:
            if s.fetch(f"SELECT count(*) FROM {S}.schedules WHERE name = $1", [record.name])[0][0]:
                raise StoreError(f"schedule {record.name!r} already exists")
            s.execute(
                f"INSERT INTO {S}.schedules ({_SCHEDULE_COLUMNS}) VALUES ($1, $2, $3, $4, CAST($5 AS BIGINT), "
                "CAST($6 AS VARCHAR), CAST($7 AS VARCHAR), $8, CAST($9 AS BOOLEAN), CAST($10 AS VARCHAR), "
                "CAST($11 AS TIMESTAMPTZ), CAST($12 AS BIGINT), CAST($13 AS TIMESTAMPTZ), CAST(NULL AS VARCHAR), "
                "now(), now())",
                [
                    record.name,
                    record.kind,
                    record.cron,
                    record.timezone,
                    int(record.delay_seconds),
                    record.database,
                    record.table,
                    json.dumps(record.config, sort_keys=True),
                    bool(record.enabled),
                    record.disabled_reason,
                    _iso(record.disabled_at),
                    int(record.consecutive_failures),
                    _iso(record.last_scheduled_for),
                ],
            )

    def schedule(self, name: str) -> ScheduleRecord | None:
        with self._transaction() as s:
            rows = s.fetch(f"SELECT {_SCHEDULE_COLUMNS} FROM {S}.schedules WHERE name = $1", [name])
        return _schedule_from_row(rows[0]) if rows else None

    def schedules(self, kind: str | None = None) -> list[ScheduleRecord]:
        where, params = ("WHERE kind = $1", [kind]) if kind else ("", [])
        with self._transaction() as s:
            rows = s.fetch(f"SELECT {_SCHEDULE_COLUMNS} FROM {S}.schedules {where} ORDER BY name", params)
        return [_schedule_from_row(r) for r in rows]

    def update_schedule(self, name: str, **changes: Any) -> ScheduleRecord:
        """Change columns by name (cron, timezone, delay_seconds, config, enabled, ...)."""
        unknown = set(changes) - set(_SCHEDULE_FIELDS)
        if unknown:
            raise StoreError(f"cannot update schedule field(s) {sorted(unknown)}")
        update = _schedule_update(name, changes)
        with self._transaction() as s:
            if not s.fetch(f"SELECT count(*) FROM {S}.schedules WHERE name = $1", [name])[0][0]:
                raise StoreError(f"no schedule named {name!r}")
            if update is not None:
                s.execute(*update)
        record = self.schedule(name)
        assert record is not None
        return record

    def delete_schedule(self, name: str) -> bool:
        with self._transaction() as s:
            found = s.fetch(f"SELECT count(*) FROM {S}.schedules WHERE name = $1", [name])[0][0]
            s.execute(f"DELETE FROM {S}.schedules WHERE name = $1", [name])
        return bool(found)

    # --- jobs ----------------------------------------------------------------------------
    def begin_job(
        self,
        run_id: str,
        job: str,
        kind: str,
        *,
        schedule: str | None = None,
        scheduled_for: datetime | None = None,
        triggered_by: str | None = "manual",
        pid: int | None = None,
        host: str | None = None,
        database: str | None = None,
        table: str | None = None,
    ) -> None:
        """Record a starting run; for a scheduled run also move the schedule's ``last_scheduled_for``,
        in the SAME transaction, so a crash can neither lose the record nor run the slot twice.

        Refuses (StoreError) when the schedule already has a running job: the same schedule never
        runs twice at once, even when two processes try.
        """
        if kind not in RUN_KINDS:
            raise StoreError(f"run kind must be one of {RUN_KINDS}, got {kind!r}")
        with self._transaction() as s:
            if schedule is not None:
                busy = s.fetch(f"SELECT run_id FROM {S}.runs WHERE schedule = $1 AND status = 'running'", [schedule])
                if busy:
                    raise StoreError(f"schedule {schedule!r} is already running (job {busy[0][0]})")
            s.execute(
                f"INSERT INTO {S}.runs (run_id, job, kind, status, started_at, schedule, scheduled_for, pid, host, "
                "triggered_by, target_database, target_table, cancel_requested) VALUES ($1, $2, $3, 'running', now(), "
                "CAST($4 AS VARCHAR), CAST($5 AS TIMESTAMPTZ), CAST($6 AS BIGINT), CAST($7 AS VARCHAR), CAST($8 AS VARCHAR), "
                "CAST($9 AS VARCHAR), CAST($10 AS VARCHAR), false)",
                [run_id, job, kind, schedule, _iso(scheduled_for), pid, host, triggered_by, database, table],
            )
            if schedule is not None and triggered_by != "manual" and scheduled_for is not None:
                s.execute(
                    f"UPDATE {S}.schedules SET last_scheduled_for = CAST($2 AS TIMESTAMPTZ), last_run_id = $3 WHERE name = $1",
                    [schedule, _iso(scheduled_for), run_id],
                )
            elif schedule is not None:
                s.execute(f"UPDATE {S}.schedules SET last_run_id = $2 WHERE name = $1", [schedule, run_id])

    def end_job(
        self,
        run_id: str,
        status: str,
        *,
        error: str | None = None,
        note: str | None = None,
        rows_read: int | None = None,
        rows_written: int | None = None,
        schedule_changes: Mapping[str, Any] | None = None,
        schedule: str | None = None,
        error_detail: Mapping[str, Any] | None = None,
    ) -> None:
        """Close a job (whatever the engine already recorded) and update its schedule, atomically.

        ``error_detail``: the failure as data (code, message, field, row, hint), beside ``error``."""
        if status not in JOB_STATUSES[1:]:
            raise StoreError(f"a job ends as one of {JOB_STATUSES[1:]}, got {status!r}")
        with self._transaction() as s:
            s.execute(
                f"UPDATE {S}.runs SET status = $2, ended_at = coalesce(ended_at, now()), error = CAST($3 AS VARCHAR), "
                "note = CAST($4 AS VARCHAR), rows_read = coalesce(CAST($5 AS BIGINT), rows_read), "
                "rows_written = coalesce(CAST($6 AS BIGINT), rows_written), "
                f"error_detail = CAST($7 AS {s.sql_type(Kind.JSON)}) WHERE run_id = $1",
                [run_id, status, error, note, _opt_int(rows_read), _opt_int(rows_written), _detail_json(error_detail)],
            )
            if schedule is not None and schedule_changes:
                update = _schedule_update(schedule, schedule_changes)
                if update is not None:
                    s.execute(*update)

    def job(self, run_id: str) -> JobRecord | None:
        """One job by id or by a unique id prefix (at least 6 characters)."""
        with self._transaction() as s:
            rows = s.fetch(f"SELECT {_JOB_COLUMNS} FROM {S}.runs WHERE run_id = $1", [run_id])
            if not rows and len(run_id) >= 6:
                rows = s.fetch(f"SELECT {_JOB_COLUMNS} FROM {S}.runs WHERE starts_with(run_id, $1) LIMIT 2", [run_id])
                if len(rows) > 1:
                    raise StoreError(f"job id prefix {run_id!r} is ambiguous; give more characters")
        return _job_from_row(rows[0]) if rows else None

    def jobs(
        self, *, job: str | None = None, schedule: str | None = None, status: str | None = None, limit: int = 50
    ) -> list[JobRecord]:
        """Most recent first; ``job`` is the history label (``klaviyo.events``), ``schedule`` a schedule's name."""
        conditions, params = [], []
        for column, value in (("job", job), ("schedule", schedule), ("status", status)):
            if value is not None:
                params.append(value)
                conditions.append(f"{column} = ${len(params)}")
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        with self._transaction() as s:
            rows = s.fetch(
                f"SELECT {_JOB_COLUMNS} FROM {S}.runs {where} ORDER BY started_at DESC, run_id LIMIT {int(limit)}", params
            )
        return [_job_from_row(r) for r in rows]

    def request_cancel(self, run_id: str) -> bool:
        """Flag a running job to stop; False when it is not running."""
        with self._transaction() as s:
            running = s.fetch(f"SELECT count(*) FROM {S}.runs WHERE run_id = $1 AND status = 'running'", [run_id])
            s.execute(f"UPDATE {S}.runs SET cancel_requested = true WHERE run_id = $1 AND status = 'running'", [run_id])
        return bool(running[0][0])

    def cancel_requested(self, run_id: str) -> bool:
        with self._transaction() as s:
            rows = s.fetch(f"SELECT cancel_requested FROM {S}.runs WHERE run_id = $1", [run_id])
        return bool(rows and rows[0][0])
