"""The SQL of ``klaviyo-bridge worker`` on the PostgreSQL state (``workers/`` says why).

Jobs run on procrastinate (its tables live beside ``_bridge`` in the same database; its schema
is applied here once, under an advisory lock). This module owns every statement the worker pool
runs itself, on a psycopg connection of its own:

* ``_bridge.workers``: who each procrastinate worker is (host, pid, name), for ``worker status``;
  procrastinate's own table only has an id and a heartbeat.
* ``_bridge.worker_runs``: which of our job records (``_bridge.runs``) each attempt of a
  procrastinate job wrote, so the attempt that takes over a stalled job closes the killed
  attempt's record truthfully.
* ``enqueue_transaction``: one transaction under the enqueuer's advisory lock in which a due
  slot's ``last_scheduled_for`` moves (compare-and-set) and its procrastinate job is inserted,
  so a slot is enqueued exactly once even with N enqueuers racing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from procrastinate.schema import SchemaManager

from ..errors import StoreError
from ..secrets import redact_url
from .identifiers import STATE_SCHEMA
from .pgconn import libpq_url

S = STATE_SCHEMA
ENQUEUER_LOCK = "klaviyo-bridge:worker:enqueuer"
#: Held (shared) by every ``klaviyo-bridge scheduler`` on a PostgreSQL state; workers refuse it.
SCHEDULER_LOCK = "klaviyo-bridge:scheduler"
_SCHEMA_LOCK = "klaviyo-bridge:worker:schema"

_OUR_TABLES = (
    f"CREATE SCHEMA IF NOT EXISTS {S}",
    f"""CREATE TABLE IF NOT EXISTS {S}.workers (
        worker_id BIGINT PRIMARY KEY, name TEXT NOT NULL, host TEXT NOT NULL, pid BIGINT NOT NULL,
        concurrency INTEGER NOT NULL, started_at TIMESTAMPTZ NOT NULL DEFAULT now())""",
    f"""CREATE TABLE IF NOT EXISTS {S}.worker_runs (
        run_id TEXT PRIMARY KEY, job_id BIGINT NOT NULL, worker_id BIGINT, attempt INTEGER NOT NULL,
        started_at TIMESTAMPTZ NOT NULL DEFAULT now())""",
    f"CREATE INDEX IF NOT EXISTS worker_runs_job ON {S}.worker_runs (job_id)",
    # The attempt that closed this one's record after its worker's heartbeat stopped (NULL: it
    # ended on its own, or still runs): a retried attempt skips a slot an earlier one finished.
    f"ALTER TABLE {S}.worker_runs ADD COLUMN IF NOT EXISTS closed_by_attempt INTEGER",
)


def connect(url: str) -> psycopg.Connection[Any]:
    """A psycopg connection to the state database (errors name the server, never a password)."""
    try:
        return psycopg.connect(libpq_url(url), autocommit=True)
    except psycopg.Error as exc:
        raise StoreError(f"cannot connect to {redact_url(url)}: {str(exc).strip()}") from None


def ensure_schema(conn: psycopg.Connection[Any]) -> None:
    """procrastinate's schema (once per database) and our two tables; safe to race."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [_SCHEMA_LOCK])
        row = conn.execute("SELECT to_regclass('procrastinate_jobs') IS NOT NULL").fetchone()
        if not (row and row[0]):
            conn.execute(SchemaManager.get_schema())
        for statement in _OUR_TABLES:
            conn.execute(statement)


# --- the enqueuer ------------------------------------------------------------------------------
class EnqueueSession:
    """Statements of one enqueue transaction (see ``enqueue_transaction``)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def pending_schedules(self, task_name: str) -> set[str]:
        """Schedules with a run queued or running: their next slot waits (missed slots run once)."""
        rows = self._conn.execute(
            "SELECT DISTINCT args->>'schedule' FROM procrastinate_jobs WHERE task_name = %s AND status IN ('todo', 'doing')",
            [task_name],
        ).fetchall()
        return {r[0] for r in rows if r[0]}

    def advance(self, schedule: str, old: datetime, new: datetime) -> bool:
        """Move ``last_scheduled_for`` from ``old`` to ``new``; False when someone moved it first."""
        cur = self._conn.execute(
            f"UPDATE {S}.schedules SET last_scheduled_for = %s WHERE name = %s AND last_scheduled_for = %s AND enabled",
            [new, schedule, old],
        )
        return cur.rowcount == 1

    def defer(self, *, queue: str, task_name: str, lock: str | None, queueing_lock: str | None, args: dict[str, Any]) -> int:
        row = self._conn.execute(
            "SELECT unnest(procrastinate_defer_jobs_v1(ARRAY[ROW(%s, %s, 0, %s, %s, %s::jsonb, NULL)"
            "::procrastinate_job_to_defer_v1]))",
            [queue, task_name, lock, queueing_lock, json.dumps(args)],
        ).fetchone()
        if row is None:  # pragma: no cover - the function always returns the id
            raise StoreError("procrastinate did not return a job id")
        return int(row[0])


@contextmanager
def enqueue_transaction(conn: psycopg.Connection[Any]) -> Iterator[EnqueueSession | None]:
    """One transaction holding the enqueuer's lock; yields None when another enqueuer holds it."""
    with conn.transaction():
        row = conn.execute("SELECT pg_try_advisory_xact_lock(hashtextextended(%s, 0))", [ENQUEUER_LOCK]).fetchone()
        yield EnqueueSession(conn) if row and row[0] else None


def stalled_jobs(conn: psycopg.Connection[Any], task_name: str, seconds_since_heartbeat: float) -> list[int]:
    """Ids of our jobs left ``doing`` by a worker whose heartbeat stopped (procrastinate's own rule)."""
    rows = conn.execute(
        "SELECT j.id FROM procrastinate_jobs j LEFT JOIN procrastinate_workers w ON w.id = j.worker_id "
        "WHERE j.status = 'doing' AND j.task_name = %s AND (j.worker_id IS NULL OR "
        "w.last_heartbeat < now() - make_interval(secs => %s))",
        [task_name, seconds_since_heartbeat],
    ).fetchall()
    return [int(r[0]) for r in rows]


# --- workers and attempts ----------------------------------------------------------------------
def register_worker(conn: psycopg.Connection[Any], worker_id: int, name: str, host: str, pid: int, concurrency: int) -> None:
    conn.execute(
        f"INSERT INTO {S}.workers (worker_id, name, host, pid, concurrency) VALUES (%s, %s, %s, %s, %s) "
        "ON CONFLICT (worker_id) DO UPDATE SET name = EXCLUDED.name, host = EXCLUDED.host, "
        "pid = EXCLUDED.pid, concurrency = EXCLUDED.concurrency",
        [worker_id, name, host, pid, concurrency],
    )


def unregister_worker(conn: psycopg.Connection[Any], worker_id: int) -> None:
    conn.execute(f"DELETE FROM {S}.workers WHERE worker_id = %s", [worker_id])


def link_attempt(conn: psycopg.Connection[Any], run_id: str, job_id: int, worker_id: int | None, attempt: int) -> None:
    conn.execute(
        f"INSERT INTO {S}.worker_runs (run_id, job_id, worker_id, attempt) VALUES (%s, %s, %s, %s)",
        [run_id, job_id, worker_id, attempt],
    )


def mark_taken_over(conn: psycopg.Connection[Any], run_id: str, by_attempt: int) -> None:
    """Record that attempt ``by_attempt`` closed ``run_id``'s record (its worker stopped)."""
    conn.execute(f"UPDATE {S}.worker_runs SET closed_by_attempt = %s WHERE run_id = %s", [by_attempt, run_id])


@dataclass(frozen=True)
class Attempt:
    run_id: str
    worker_id: int | None
    attempt: int
    status: str | None  # of our job record; None when the attempt died before writing it
    kind: str | None
    worker: str | None  # name@host (pid) of the worker that ran it, when still known
    heartbeat_age: float | None  # seconds since its worker's last heartbeat; None: the worker is gone
    closed_by_attempt: int | None = None  # the attempt that closed its record; None: it ended on its own

    @property
    def finished_on_its_own(self) -> bool:
        """Its record ended (success, error, killed) by itself, not closed by a takeover."""
        return self.status not in (None, "running") and self.closed_by_attempt is None


def attempts(conn: psycopg.Connection[Any], job_id: int) -> list[Attempt]:
    rows = conn.execute(
        f"SELECT a.run_id, a.worker_id, a.attempt, r.status, r.kind, "
        f"w.name || ' on ' || w.host || ' (pid ' || w.pid || ')', "
        f"extract(epoch FROM now() - p.last_heartbeat)::float8, a.closed_by_attempt "
        f"FROM {S}.worker_runs a LEFT JOIN {S}.runs r ON r.run_id = a.run_id "
        f"LEFT JOIN {S}.workers w ON w.worker_id = a.worker_id "
        f"LEFT JOIN procrastinate_workers p ON p.id = a.worker_id WHERE a.job_id = %s ORDER BY a.attempt, a.started_at",
        [job_id],
    ).fetchall()
    return [
        Attempt(
            r[0], r[1], int(r[2]), r[3], r[4], r[5], None if r[6] is None else float(r[6]), None if r[7] is None else int(r[7])
        )
        for r in rows
    ]


def batches_sent(conn: psycopg.Connection[Any], run_id: str) -> int:
    """Export batches a run recorded (sent or about to be): a resume must not resend them blind."""
    row = conn.execute(f"SELECT count(*) FROM {S}.export_batches WHERE run_id = %s", [run_id]).fetchone()
    return int(row[0]) if row else 0


# --- the scheduler and the workers never share a state ----------------------------------------
def hold_scheduler_lock(conn: psycopg.Connection[Any]) -> None:
    """Say a scheduler runs on this state, for as long as ``conn`` stays open (a shared lock:
    several schedulers may hold it; a worker only looks at it)."""
    conn.execute("SELECT pg_advisory_lock_shared(hashtextextended(%s, 0))", [SCHEDULER_LOCK])


def scheduler_holders(conn: psycopg.Connection[Any]) -> list[tuple[int, str | None, str | None]]:
    """PostgreSQL backend pid, client address and application of each scheduler holding the state."""
    rows = conn.execute(
        "SELECT l.pid, host(a.client_addr), a.application_name FROM pg_locks l "
        "LEFT JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted AND "
        "l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) AND "
        "((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended(%s, 0)",
        [SCHEDULER_LOCK],
    ).fetchall()
    return [(int(r[0]), r[1], r[2]) for r in rows]


def live_workers(conn: psycopg.Connection[Any], stalled_seconds: float) -> list["WorkerRow"]:
    """Workers registered on this state whose heartbeat is younger than ``stalled_seconds``."""
    row = conn.execute("SELECT to_regclass('procrastinate_workers') IS NOT NULL").fetchone()
    if not (row and row[0]):
        return []
    return [w for w in worker_rows(conn) if w.heartbeat_age < stalled_seconds]


# --- worker status -----------------------------------------------------------------------------
@dataclass(frozen=True)
class WorkerRow:
    worker_id: int
    name: str | None
    host: str | None
    pid: int | None
    concurrency: int | None
    started_at: datetime | None
    last_heartbeat: datetime
    heartbeat_age: float


@dataclass(frozen=True)
class JobRow:
    job_id: int
    status: str
    schedule: str | None
    scheduled_for: str | None
    lock: str | None
    attempts: int
    worker_id: int | None
    run_id: str | None


def worker_rows(conn: psycopg.Connection[Any]) -> list[WorkerRow]:
    rows = conn.execute(
        f"SELECT p.id, w.name, w.host, w.pid, w.concurrency, w.started_at, p.last_heartbeat, "
        f"extract(epoch FROM now() - p.last_heartbeat)::float8 FROM procrastinate_workers p "
        f"LEFT JOIN {S}.workers w ON w.worker_id = p.id ORDER BY p.id"
    ).fetchall()
    return [
        WorkerRow(
            int(r[0]),
            r[1],
            r[2],
            None if r[3] is None else int(r[3]),
            None if r[4] is None else int(r[4]),
            r[5],
            r[6],
            float(r[7]),
        )
        for r in rows
    ]


def job_rows(conn: psycopg.Connection[Any], task_name: str, statuses: tuple[str, ...]) -> list[JobRow]:
    rows = conn.execute(
        f"SELECT j.id, j.status::text, j.args->>'schedule', j.args->>'scheduled_for', j.lock, j.attempts, "
        f"j.worker_id, (SELECT a.run_id FROM {S}.worker_runs a WHERE a.job_id = j.id "
        f"ORDER BY a.attempt DESC, a.started_at DESC LIMIT 1) "
        f"FROM procrastinate_jobs j WHERE j.task_name = %s AND j.status::text = ANY(%s) ORDER BY j.id",
        [task_name, list(statuses)],
    ).fetchall()
    return [JobRow(int(r[0]), r[1], r[2], r[3], r[4], int(r[5]), None if r[6] is None else int(r[6]), r[7]) for r in rows]


def job_counts(conn: psycopg.Connection[Any], task_name: str) -> dict[str, int]:
    rows = conn.execute(
        "SELECT status::text, count(*) FROM procrastinate_jobs WHERE task_name = %s GROUP BY 1", [task_name]
    ).fetchall()
    return {r[0]: int(r[1]) for r in rows}
