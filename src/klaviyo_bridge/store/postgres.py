"""PostgreSQL engine, a full peer of DuckDB, over ADBC (Arrow in and out, binary COPY).

Each batch goes in with ADBC's bulk ingest (binary COPY) into a session-private landing table,
then one ``INSERT ... SELECT`` casts it into the destination (json -> jsonb, int -> double when
a column was widened). Reads come back as Arrow streams. One writer per table at a time is
enforced with a transaction-scoped advisory lock on (database, table).
"""

from __future__ import annotations

import functools
import hashlib
import threading
import time
from typing import Any, Callable, Concatenate, ParamSpec, Sequence, TypeVar

import adbc_driver_manager
import adbc_driver_postgresql.dbapi as adbc_pg
import pyarrow as pa

from ..errors import ConfigError, StoreError
from ..secrets import redact_url
from .columns import SEQUENCE_COLUMN, Kind
from .engine import Session, stage_columns_sql
from .identifiers import quote
from .locks import AdvisoryLock
from .pgconn import libpq_url
from .state import create_state_tables
from .warehouse import Warehouse

_P = ParamSpec("_P")
_T = TypeVar("_T")

_SQL_TYPES = {
    Kind.BOOLEAN: "BOOLEAN",
    Kind.INTEGER: "BIGINT",
    Kind.FLOAT: "DOUBLE PRECISION",
    Kind.TEXT: "TEXT",
    Kind.JSON: "JSONB",
    Kind.TIMESTAMP: "TIMESTAMPTZ",
    Kind.DATE: "DATE",
    Kind.BINARY: "BYTEA",
}
_KIND_OF_SQL = {
    "boolean": Kind.BOOLEAN,
    "smallint": Kind.INTEGER,
    "integer": Kind.INTEGER,
    "bigint": Kind.INTEGER,
    "real": Kind.FLOAT,
    "double precision": Kind.FLOAT,
    "numeric": Kind.FLOAT,
    "json": Kind.JSON,
    "jsonb": Kind.JSON,
    "timestamp with time zone": Kind.TIMESTAMP,
    "timestamp without time zone": Kind.TIMESTAMP,
    "date": Kind.DATE,
    "bytea": Kind.BINARY,
}
_LANDING = "_bridge_landing"
_STATE_INIT_LOCK = 0x6B6C62  # advisory lock id serialising CREATE ... IF NOT EXISTS of state tables


def _converting_errors(
    method: Callable[Concatenate["PostgresSession", _P], _T],
) -> Callable[Concatenate["PostgresSession", _P], _T]:
    """The one boundary where ADBC/PostgreSQL exceptions become StoreError."""

    @functools.wraps(method)
    def wrapper(self: "PostgresSession", /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return method(self, *args, **kwargs)
        except adbc_driver_manager.Error as exc:
            raise StoreError(f"PostgreSQL {self.where}: {exc}") from exc

    return wrapper


class PostgresSession(Session):
    def __init__(self, url: str, where: str) -> None:
        self.where = where
        try:
            self._con = adbc_pg.connect(url)
        except adbc_driver_manager.Error as exc:
            raise StoreError(f"cannot connect to PostgreSQL {where}: {exc}") from exc
        self._cur = self._con.cursor()
        #: The session holds state beyond its transaction (temporary tables: the landing table,
        #: stages; a search path): ``scrub`` before anyone else may have this connection.
        self.dirty = False
        self.execute("SET TIME ZONE 'UTC'")
        self.commit()

    def begin(self) -> None:
        """ADBC opens a transaction implicitly (autocommit is off)."""

    def scrub(self) -> bool:
        """Leave nothing of this session's use behind (temporary tables, settings, session locks),
        so the next state call or writer can have the connection as if new; False when that could
        not be done (then close it)."""
        try:
            self._con.rollback()
            for statement in ("DISCARD TEMP", "RESET ALL", "SET TIME ZONE 'UTC'", "SELECT pg_advisory_unlock_all()"):
                self._cur.execute(statement)
            self._con.commit()
        except adbc_driver_manager.Error:
            return False
        self.dirty = False
        return True

    def alive(self) -> bool:
        """Whether the server still answers on this connection (it may have closed it: a restart,
        a failover, ``idle_session_timeout``)."""
        try:
            self._cur.execute("SELECT 1")
            self._cur.fetchall()
            self._con.commit()
        except adbc_driver_manager.Error:
            return False
        return True

    @_converting_errors
    def commit(self) -> None:
        self._con.commit()

    def rollback(self) -> None:
        try:
            self._con.rollback()
        except adbc_driver_manager.Error:
            pass  # the connection is gone; the server rolled back already

    def close(self) -> None:
        try:
            self._cur.close()
            self._con.close()
        except adbc_driver_manager.Error:
            pass

    @_converting_errors
    def lock_table(self, database: str, table: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self._cur.execute("SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))", [f"klaviyo-bridge:{database}.{table}"])
            if self._cur.fetchone()[0]:
                return
            if time.monotonic() >= deadline:
                raise StoreError(
                    f"table {database}.{table} is being written by another run (PostgreSQL advisory lock held on {self.where})"
                )
            time.sleep(0.05)

    def create_schema(self, database: str) -> None:
        """CREATE SCHEMA IF NOT EXISTS is not safe under concurrency on PostgreSQL: sessions creating
        one new schema at the same moment (a worker pool's first slots) fail with a duplicate key on
        pg_namespace, all but one (and ADBC cannot roll back to a savepoint after an error). So
        creators of one schema take turns under a transaction-scoped advisory lock: the next one's
        statement then sees the schema the first committed. Callers commit right after (the write
        session does), so the lock is held for a moment, and only when the schema is missing."""
        if self.fetch("SELECT count(*) FROM pg_namespace WHERE nspname = $1", [database])[0][0]:
            return
        self.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", [f"klaviyo-bridge:schema:{database}"])
        self.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(database)}")

    def use_schema(self, database: str) -> None:
        self.dirty = True
        found = self.fetch("SELECT count(*) FROM information_schema.schemata WHERE schema_name = $1", [database])
        if not found[0][0]:
            raise ConfigError(f"database {database!r} does not exist in the warehouse", key="database")
        self.execute(f"SET search_path TO {quote(database)}, public")

    @_converting_errors
    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        if params:
            self._cur.execute(sql, list(params))
        else:
            self._cur.execute(sql)

    @_converting_errors
    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self.execute(sql, params)
        rows: list[tuple[Any, ...]] = self._cur.fetchall()  # (the ADBC driver is untyped)
        return rows

    @_converting_errors
    def stream(self, sql: str, params: Sequence[Any] = (), batch_size: int = 65_536) -> pa.RecordBatchReader:
        self.execute(sql, params)
        return self._cur.fetch_record_batch()

    @_converting_errors
    def table_columns(self, database: str, table: str) -> dict[str, Kind] | None:
        rows = self.fetch(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
            [database, table],
        )
        if not rows:
            exists = self.fetch(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1 AND table_name = $2", [database, table]
            )
            return {} if exists[0][0] else None
        return {name: _KIND_OF_SQL.get(type_name, Kind.TEXT) for name, type_name in rows}

    def sql_type(self, kind: Kind) -> str:
        return _SQL_TYPES[kind]

    @_converting_errors
    def insert_batch(self, dest: str, batch: pa.RecordBatch | pa.Table, columns: dict[str, str], kinds: dict[str, Kind]) -> None:
        self.dirty = True
        if batch.num_columns == 0:
            return
        self._cur.adbc_ingest(_LANDING, batch, mode="replace", temporary=True)
        targets = ", ".join(quote(columns[n]) for n in batch.schema.names)
        values = ", ".join(self.cast(quote(n), kinds[columns[n]]) for n in batch.schema.names)
        self._cur.execute(f"INSERT INTO {dest} ({targets}) SELECT {values} FROM pg_temp.{quote(_LANDING)}")

    @_converting_errors
    def create_stage(self, name: str, columns: dict[str, Kind], with_sequence: bool) -> str:
        self.dirty = True
        self._cur.execute(f"DROP TABLE IF EXISTS pg_temp.{quote(name)}")
        self._cur.execute(f"CREATE TEMP TABLE {quote(name)} ({stage_columns_sql(self, columns, with_sequence)})")
        return f"pg_temp.{quote(name)}"

    @_converting_errors
    def replace_contents(self, target: str, stage: str, columns: list[str]) -> None:
        # TRUNCATE is transactional here: other readers keep the old rows until COMMIT.
        cols = ", ".join(quote(c) for c in columns)
        self._cur.execute(f"TRUNCATE {target}")
        self._cur.execute(f"INSERT INTO {target} ({cols}) SELECT {cols} FROM {stage}")

    @_converting_errors
    def clear_table(self, target: str) -> None:
        self._cur.execute(f"TRUNCATE {target}")

    @_converting_errors
    def lookup_index(self, database: str, table: str, columns: list[str]) -> None:
        digest = hashlib.sha1("\x00".join(columns).encode()).hexdigest()[:8]
        cols = ", ".join(quote(c) for c in columns)
        self._cur.execute(
            f"CREATE INDEX IF NOT EXISTS {quote(f'{table[:40]}__ix_{digest}')} ON {quote(database)}.{quote(table)} ({cols})"
        )

    @_converting_errors
    def prepare_merge(self, database: str, table: str, keys: list[str]) -> None:
        """ON CONFLICT needs a unique index on the key; create it once, named after the key."""
        digest = hashlib.sha1("\x00".join(keys).encode()).hexdigest()[:8]
        index = f"{table[:40]}__key_{digest}"
        cols = ", ".join(quote(k) for k in keys)
        try:
            self._cur.execute(f"CREATE UNIQUE INDEX IF NOT EXISTS {quote(index)} ON {quote(database)}.{quote(table)} ({cols})")
        except adbc_driver_manager.Error as exc:
            raise StoreError(
                f"cannot merge into {database}.{table} on ({', '.join(keys)}): the table already "
                f"holds duplicate keys, so no unique index can be built ({exc})"
            ) from exc

    @_converting_errors
    def merge(self, target: str, stage: str, columns: list[str], keys: list[str], update_columns: list[str]) -> None:
        cols = ", ".join(quote(c) for c in columns)
        key_cols = ", ".join(quote(k) for k in keys)
        sql = (
            f"INSERT INTO {target} ({cols}) SELECT DISTINCT ON ({key_cols}) {cols} FROM {stage} "
            f"ORDER BY {key_cols}, {quote(SEQUENCE_COLUMN)} DESC ON CONFLICT ({key_cols}) "
        )
        if update_columns:
            sql += "DO UPDATE SET " + ", ".join(f"{quote(c)} = EXCLUDED.{quote(c)}" for c in update_columns)
        else:
            sql += "DO NOTHING"
        self._cur.execute(sql)


#: Connections a warehouse keeps for its next state calls and writers (ADBC's connect costs ~30 ms,
#: ~23 of them CPU: 4-7 per import run were a third of a small run's time)...
IDLE_SESSIONS = 4
#: ...for at most this many seconds unused...
IDLE_SECONDS = 10.0
#: ...and one unused for longer than this is asked ``SELECT 1`` before it is handed on (the server may
#: have closed it: then every kept one is dropped and a new connection made).
CHECK_AFTER_SECONDS = 1.0


class PostgresWarehouse(Warehouse):
    """A PostgreSQL database; each writer, stream or lock gets a connection of its own, and a state
    call (``transaction``) or writer one that an earlier state call or writer committed on, if one
    is kept.

    Only connections whose transaction committed are kept, those that held more than a transaction
    (temporary tables, a search path) once ``PostgresSession.scrub`` has reset them; a query
    stream's and a lock's never are, nor one that failed, nor any after ``close``."""

    #: the clock idle connections are aged by (a test gives a fake one)
    clock: Callable[[], float] = staticmethod(time.monotonic)

    def __init__(self, url: str) -> None:
        self.url = redact_url(url.replace("postgres://", "postgresql://", 1))
        self._dsn = libpq_url(url)
        #: kept connections, oldest first, with the time each was put back
        self._idle: list[tuple[float, PostgresSession]] = []
        self._idle_lock = threading.Lock()
        self._closed = False
        # Fails loudly now if the server is unreachable; the lock serialises concurrent first runs.
        with self.transaction() as session:
            session.execute(f"SELECT pg_advisory_xact_lock({_STATE_INIT_LOCK})")

            create_state_tables(session)

    def _open_session(self) -> Session:
        with self._idle_lock:
            drop = self._expired()
            since, kept = self._idle.pop() if self._idle else (0.0, None)
        try:
            if kept is not None and self.clock() - since > CHECK_AFTER_SECONDS and not kept.alive():
                drop.append(kept)
                kept = None
                with self._idle_lock:  # the server dropped it: the others are likely gone too
                    drop += [session for _, session in self._idle]
                    self._idle.clear()
        except BaseException:  # interrupted while asking: close it too
            if kept is not None:
                drop.append(kept)
            raise
        finally:
            for session in drop:
                session.close()
        return kept if kept is not None else PostgresSession(self._dsn, self.url)

    def _finished(self, session: Session) -> None:
        if not isinstance(session, PostgresSession) or (session.dirty and not session.scrub()):
            session.close()
            return
        with self._idle_lock:
            drop = self._expired()
            keep = not self._closed and len(self._idle) < IDLE_SESSIONS
            if keep:
                self._idle.append((self.clock(), session))
        for stale in drop if keep else [*drop, session]:
            stale.close()

    def _failed(self, session: Session) -> None:
        """Close it; if the server no longer answers on it, drop the kept ones too (a restart or a
        failover cut them all: the next calls get new connections instead of failing in turn). A
        statement that failed (bad SQL, a constraint) leaves the connection answering."""
        try:
            session.rollback()  # a failed statement leaves the transaction aborted, not the connection
            if isinstance(session, PostgresSession) and not session.alive():
                with self._idle_lock:
                    idle, self._idle = self._idle, []
                for _, kept in idle:
                    kept.close()
        finally:
            session.close()

    def _expired(self) -> list[PostgresSession]:
        """Take the kept connections unused for more than IDLE_SECONDS out (under the lock)."""
        cutoff = self.clock() - IDLE_SECONDS
        n = next((i for i, (since, _) in enumerate(self._idle) if since >= cutoff), len(self._idle))
        expired = [session for _, session in self._idle[:n]]
        del self._idle[:n]
        return expired

    def close(self) -> None:
        """Close the kept connections; later calls still work, on connections closed after use."""
        with self._idle_lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for _, session in idle:
            session.close()

    def named_lock(self, name: str) -> AdvisoryLock:
        return AdvisoryLock(self._open_session, name)
