"""DuckDB engine: the zero-setup default warehouse, one file under the home folder.

DuckDB reads Arrow directly, so a batch is registered as a view and inserted with one
``INSERT ... SELECT``. One process holds the file at a time (DuckDB's own file lock); inside
that process a per-table lock keeps two writers of one table apart, because DuckDB would
otherwise fail the second one only at commit with a transaction conflict.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable, Concatenate, ParamSpec, Sequence, TypeVar

import duckdb
import pyarrow as pa

from ..errors import ConfigError, StoreError, disk_full_message, disk_full_reason
from ..home import make_private, private_files

log = logging.getLogger("klaviyo_bridge.store")
from .columns import SEQUENCE_COLUMN, Kind
from .engine import Session, stage_columns_sql
from .identifiers import quote
from .locks import FileLock
from .warehouse import Warehouse

_P = ParamSpec("_P")
_T = TypeVar("_T")

_SQL_TYPES = {
    Kind.BOOLEAN: "BOOLEAN",
    Kind.INTEGER: "BIGINT",
    Kind.FLOAT: "DOUBLE",
    Kind.TEXT: "VARCHAR",
    Kind.JSON: "JSON",
    Kind.TIMESTAMP: "TIMESTAMPTZ",
    Kind.DATE: "DATE",
    Kind.BINARY: "BLOB",
}
_INTEGER_TYPES = {
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "HUGEINT",
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
    "UBIGINT",
    "UHUGEINT",
}
_FLOAT_TYPES = {"FLOAT", "DOUBLE", "REAL"}

_table_locks: dict[tuple[str, str, str], threading.Lock] = {}
_table_locks_guard = threading.Lock()


def _kind_of_sql(type_name: str) -> Kind:
    t = type_name.upper()
    if t == "BOOLEAN":
        return Kind.BOOLEAN
    if t in _INTEGER_TYPES:
        return Kind.INTEGER
    if t in _FLOAT_TYPES or t.startswith("DECIMAL"):
        return Kind.FLOAT
    if t == "JSON":
        return Kind.JSON
    if t.startswith("TIMESTAMP"):
        return Kind.TIMESTAMP
    if t == "DATE":
        return Kind.DATE
    if t == "BLOB":
        return Kind.BINARY
    return Kind.TEXT


def _store_error(path: Any, exc: BaseException) -> StoreError:
    """A DuckDB error in our words; a full disk (the WAL or a checkpoint that cannot be written)
    says so plainly: DuckDB rolled the transaction back, nothing of it is in the file."""
    reason = disk_full_reason(str(exc))
    if reason:
        return StoreError(disk_full_message(path, reason))
    return StoreError(f"DuckDB {path}: {exc}")


def _converting_errors(
    method: Callable[Concatenate["DuckDBSession", _P], _T],
) -> Callable[Concatenate["DuckDBSession", _P], _T]:
    """The one boundary where duckdb exceptions become StoreError."""

    @functools.wraps(method)
    def wrapper(self: "DuckDBSession", /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return method(self, *args, **kwargs)
        except duckdb.InterruptException:
            raise KeyboardInterrupt from None  # Ctrl-C landed inside DuckDB: it is still the user's Ctrl-C
        except duckdb.Error as exc:
            raise _store_error(self.path, exc) from exc
        except RuntimeError as exc:
            if "interrupted" in str(exc).lower():  # the same, from DuckDB's result fetching
                raise KeyboardInterrupt from None
            raise

    return wrapper


class DuckDBSession(Session):
    replaces_in_place = True

    def __init__(self, connection: duckdb.DuckDBPyConnection, path: Path, memory: "_MemoryLimit | None" = None) -> None:
        self.path = path
        self._con = connection
        self._lock: threading.Lock | None = None
        self._in_transaction = False
        self._memory = memory
        self._lean = False
        self._closed = False
        self.execute("SET TimeZone = 'UTC'")
        if memory is not None:
            memory.opened(self)

    @_converting_errors
    def begin(self) -> None:
        self._con.execute("BEGIN TRANSACTION")
        self._in_transaction = True

    @_converting_errors
    def commit(self) -> None:
        self._con.execute("COMMIT")
        self._in_transaction = False
        # DuckDB makes the log with the process umask, after the file was opened private
        make_private(Path(f"{self.path}.wal"), "warehouse write-ahead log", notice=False)

    def rollback(self) -> None:
        if self._in_transaction:
            self._in_transaction = False
            try:
                self._con.execute("ROLLBACK")
            except duckdb.Error:
                pass  # a failed statement may already have aborted it

    def close(self) -> None:
        self.release_locks()
        if not self._closed and self._memory is not None:
            self._memory.closed(self)
        self._closed = True
        self._con.close()

    def appending(self, only: bool = True) -> None:
        if self._memory is not None and only != self._lean:
            self._lean = only
            self._memory.lean(self, only)

    def lock_table(self, database: str, table: str, timeout: float) -> None:
        key = (str(self.path), database.casefold(), table.casefold())
        with _table_locks_guard:
            lock = _table_locks.setdefault(key, threading.Lock())
        acquired = lock.acquire(timeout=timeout) if timeout > 0 else lock.acquire(blocking=False)
        if not acquired:
            raise StoreError(f"table {database}.{table} is being written by another run in this process")
        self._lock = lock

    def release_locks(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def use_schema(self, database: str) -> None:
        found = self.fetch(
            "SELECT count(*) FROM duckdb_schemas() WHERE database_name = $1 AND schema_name = $2", [CATALOG, database]
        )
        if not found[0][0]:
            raise ConfigError(f"database {database!r} does not exist in the warehouse", key="database")
        self.execute(f"USE {CATALOG}.{quote(database)}")

    @_converting_errors
    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._con.execute(sql, list(params) or None)

    @_converting_errors
    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        # via Arrow: DuckDB's Python rows would need pytz for TIMESTAMPTZ
        table = self._con.sql(sql, params=list(params) or None).to_arrow_table()
        columns = [column.to_pylist() for column in table.columns]
        return list(zip(*columns)) if columns else []

    @_converting_errors
    def stream(self, sql: str, params: Sequence[Any] = (), batch_size: int = 65_536) -> pa.RecordBatchReader:
        relation = self._con.sql(sql, params=list(params) or None)
        return _ConvertingReader(relation.to_arrow_reader(batch_size), self.path)

    @_converting_errors
    def table_columns(self, database: str, table: str) -> dict[str, Kind] | None:
        rows = self._con.execute(
            "SELECT column_name, data_type FROM duckdb_columns() "
            "WHERE database_name = current_database() AND lower(schema_name) = lower($1) "
            "AND lower(table_name) = lower($2) ORDER BY column_index",
            [database, table],
        ).fetchall()
        if not rows:
            # fetchall, not fetchone: a result left unfinished refuses the session's next query
            exists = self._con.execute(
                "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
                "AND lower(schema_name) = lower($1) AND lower(table_name) = lower($2)",
                [database, table],
            ).fetchall()
            return {} if exists and exists[0][0] else None
        return {name: _kind_of_sql(type_name) for name, type_name in rows}

    def sql_type(self, kind: Kind) -> str:
        return _SQL_TYPES[kind]

    @_converting_errors
    def insert_batch(self, dest: str, batch: pa.RecordBatch | pa.Table, columns: dict[str, str], kinds: dict[str, Kind]) -> None:
        """Insert through DuckDB's replacement scan of a local variable, not ``register``: a view
        registered and dropped inside a transaction keeps its Arrow data alive until the commit,
        so a 1M-event import held every batch (~0.5 GB per million rows) until the end.

        The data goes in as one chunk: DuckDB scans a many-chunk table (an import's pages) on
        several threads and leaves a part-filled row group per thread, which the next checkpoint
        rewrites (1.5 s for 900k events, and a file of 245 MB instead of 138 MB)."""
        _bridge_arrow_batch = (
            batch.combine_chunks()
            if isinstance(batch, pa.Table)  # noqa: F841
            else pa.Table.from_batches([batch])
        )
        targets = ", ".join(quote(columns[n]) for n in batch.schema.names)
        values = ", ".join(self.cast(quote(n), kinds[columns[n]]) for n in batch.schema.names)
        self._con.execute(f"INSERT INTO {dest} ({targets}) SELECT {values} FROM _bridge_arrow_batch")

    @_converting_errors
    def create_stage(self, name: str, columns: dict[str, Kind], with_sequence: bool) -> str:
        stage = f"temp.main.{quote(name)}"
        self._con.execute(f"CREATE OR REPLACE TEMP TABLE {quote(name)} ({stage_columns_sql(self, columns, with_sequence)})")
        return stage

    @_converting_errors
    def replace_contents(self, target: str, stage: str, columns: list[str]) -> None:
        cols = ", ".join(quote(c) for c in columns)
        self._con.execute(f"DELETE FROM {target}")
        self._con.execute(f"INSERT INTO {target} ({cols}) SELECT {cols} FROM {stage}")

    @_converting_errors
    def clear_table(self, target: str) -> None:
        self._con.execute(f"DELETE FROM {target}")

    @_converting_errors
    def merge(self, target: str, stage: str, columns: list[str], keys: list[str], update_columns: list[str]) -> None:
        cols = ", ".join(quote(c) for c in columns)
        partition = ", ".join(quote(k) for k in keys)
        latest = (
            f"SELECT {cols} FROM {stage} QUALIFY row_number() OVER "
            f"(PARTITION BY {partition} ORDER BY {quote(SEQUENCE_COLUMN)} DESC) = 1"
        )
        on = " AND ".join(f"t.{quote(k)} = s.{quote(k)}" for k in keys)
        sql = f"MERGE INTO {target} AS t USING ({latest}) AS s ON ({on}) "
        if update_columns:
            sets = ", ".join(f"{quote(c)} = s.{quote(c)}" for c in update_columns)
            sql += f"WHEN MATCHED THEN UPDATE SET {sets} "
        values = ", ".join(f"s.{quote(c)}" for c in columns)
        sql += f"WHEN NOT MATCHED THEN INSERT ({cols}) VALUES ({values})"
        self._con.execute(sql)


class _ConvertingReader:
    """Wraps DuckDB's reader so errors while streaming also arrive as StoreError."""

    def __init__(self, reader: pa.RecordBatchReader, path: Path) -> None:
        self._reader = reader
        self._path = path
        self.schema = reader.schema

    def read_next_batch(self) -> pa.RecordBatch:
        try:
            return self._reader.read_next_batch()
        except duckdb.Error as exc:
            raise _store_error(self._path, exc) from exc

    def read_all(self) -> pa.Table:
        try:
            return self._reader.read_all()
        except duckdb.Error as exc:
            raise _store_error(self._path, exc) from exc


#: The warehouse file is attached under this catalog name. Opened directly, DuckDB names the
#: catalog after the file, and a schema with the file's name (``klaviyo`` in ``klaviyo.duckdb``)
#: then makes every reference ambiguous; a fixed, reserved name avoids that.
CATALOG = "_bridge_warehouse"


#: DuckDB's buffer pool defaults to 80% of RAM and keeps every written page cached, so a
#: 1M-event import peaked near 1 GB; a bridge process should stay small. Override with
#: KLAVIYO_BRIDGE_DUCKDB_MEMORY (any DuckDB size, e.g. "2GB").
DEFAULT_MEMORY_MB = 512
DEFAULT_MEMORY_LIMIT = f"{DEFAULT_MEMORY_MB}MB"
#: While every open session of a warehouse only appends (an import in append mode; see
#: ``Session.appending``), the pool is held to this much per DuckDB thread (at least 64 MB) for
#: each such session, up to the whole limit: an append's row groups are written to the file as
#: they fill, and caching them all cost a 1M-event import ~150 MB of its peak for nothing
#: (docs/benchmarks.md); below 64 MB it spilled to its temporary file. A merge, a stage or a query
#: opening beside it gets the whole limit back at once. Not when the user set
#: KLAVIYO_BRIDGE_DUCKDB_MEMORY: their limit is kept throughout.
APPEND_MEMORY_PER_THREAD_MB = 32
MEMORY_SETTING = "KLAVIYO_BRIDGE_DUCKDB_MEMORY"


def user_memory_limit() -> str | None:
    """The DuckDB memory limit the user set (``KLAVIYO_BRIDGE_DUCKDB_MEMORY``), or None."""
    return os.environ.get(MEMORY_SETTING) or None


def memory_limit() -> str:
    """The limit a new DuckDB instance of ours starts with: the user's, else ``DEFAULT_MEMORY_LIMIT``."""
    return user_memory_limit() or DEFAULT_MEMORY_LIMIT


class _MemoryLimit:
    """One warehouse's DuckDB memory limit: lowered while only appending sessions are open."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._con = con.cursor()  # its own: the warehouse's connection may be busy in another thread
        self._full = memory_limit()
        self._per_session_mb: int | None = None  # None: never lowered (the user chose the limit)
        if user_memory_limit() is None:
            ((threads,),) = self._con.execute("SELECT current_setting('threads')").fetchall()
            self._per_session_mb = max(64, APPEND_MEMORY_PER_THREAD_MB * int(threads))
        self._open: set[int] = set()
        self._lean: set[int] = set()
        self._guard = threading.Lock()
        self._set = self._full

    def opened(self, session: DuckDBSession) -> None:
        with self._guard:
            self._open.add(id(session))
            self._apply()

    def lean(self, session: DuckDBSession, only: bool) -> None:
        with self._guard:
            (self._lean.add if only else self._lean.discard)(id(session))
            self._apply()

    def closed(self, session: DuckDBSession) -> None:
        with self._guard:
            self._open.discard(id(session))
            self._lean.discard(id(session))
            self._apply()

    def _apply(self) -> None:
        limit = self._full
        if self._per_session_mb is not None and self._lean and self._lean == self._open:
            limit = f"{min(DEFAULT_MEMORY_MB, self._per_session_mb * len(self._lean))}MB"
        if limit != self._set:
            try:
                self._con.execute(f"SET memory_limit = '{limit}'")
            except duckdb.Error:
                return  # the warehouse was closed first (a stream closed late): no pool to size
            self._set = limit


def _attach(path: Path) -> duckdb.DuckDBPyConnection:
    limit = memory_limit()
    # What does not fit spills next to the warehouse (private, like it), not into ./.tmp.
    con = duckdb.connect(":memory:", config={"memory_limit": limit, "temp_directory": f"{path}.tmp"})
    try:
        with private_files():  # a new warehouse file is created 0600, never readable by others for a moment
            con.execute(f"ATTACH '{str(path).replace(chr(39), chr(39) * 2)}' AS {CATALOG}")
        con.execute(f"USE {CATALOG}")
    except BaseException:
        con.close()
        raise
    return con


#: Seconds between two "waiting for the warehouse" lines.
LOCK_NOTICE_EVERY = 10.0


def _holder(pid: int) -> str:
    """``(pid N) COMMAND`` of the process holding the file, as far as this host shows it."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return f"(pid {pid})"
    words = [w.decode(errors="replace") for w in raw.split(b"\0") if w]
    # "python -m klaviyo_bridge ..." / ".../bin/klaviyo-bridge ..." read as the command a user typed
    for i, word in enumerate(words):
        if word.endswith("klaviyo-bridge") or word == "klaviyo_bridge":
            words = ["klaviyo-bridge", *words[i + 1 :]]
            break
    else:
        words[:1] = [os.path.basename(words[0])] if words else []
    command = " ".join(words)
    return f"(pid {pid}) {command[:200]}{'…' if len(command) > 200 else ''}" if command else f"(pid {pid})"


class DuckDBWarehouse(Warehouse):
    """A DuckDB file; this object holds DuckDB's file lock until ``close``."""

    def __init__(self, path: Path, *, lock_timeout: float = 0.0) -> None:
        self.path = path.expanduser().resolve()
        self.url = f"duckdb:///{self.path}"
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        for file, what in ((self.path, "warehouse"), (Path(f"{self.path}.wal"), "warehouse write-ahead log")):
            make_private(file, what)  # an older one made 0644: tightened, with a notice
        self._con: duckdb.DuckDBPyConnection | None = self._connect(lock_timeout)
        self._memory = _MemoryLimit(self._con)
        self._init_state()

    def _connect(self, lock_timeout: float) -> duckdb.DuckDBPyConnection:
        started = time.monotonic()
        deadline = started + lock_timeout
        said = None  # when the user was last told what we wait for
        while True:
            try:
                con = _attach(self.path)
                if said is not None:
                    log.warning("warehouse %s is free now, after %.1fs", self.path, time.monotonic() - started)
                return con
            except duckdb.IOException as exc:
                holder = re.search(r"PID (\d+)", str(exc))
                if holder is None:
                    raise StoreError(f"cannot open DuckDB warehouse {self.path}: {exc}") from exc
                who = _holder(int(holder.group(1)))
                now = time.monotonic()
                if now >= deadline:
                    raise StoreError(
                        f"warehouse {self.path} is in use by another run {who}; gave up after "
                        f"{lock_timeout:.0f}s. Wait for it to finish, or use PostgreSQL (--warehouse "
                        "postgresql://...) to run commands side by side"
                    ) from exc
                if said is None or now - said >= LOCK_NOTICE_EVERY:
                    # Only one process can open a DuckDB file: say what we wait for, not nothing.
                    log.warning(
                        "waiting for the DuckDB warehouse %s: it is in use by another run %s (%.0fs waited, giving up "
                        "after %.0fs)",
                        self.path,
                        who,
                        now - started,
                        lock_timeout,
                    )
                    said = now
                time.sleep(0.1)
            except duckdb.Error as exc:
                raise StoreError(f"cannot open DuckDB warehouse {self.path}: {exc}") from exc

    def _open_session(self) -> Session:
        if self._con is None:
            raise StoreError(f"warehouse {self.path} is closed")
        cursor = self._con.cursor()
        cursor.execute(f"USE {CATALOG}")
        return DuckDBSession(cursor, self.path, self._memory)

    def named_lock(self, name: str) -> FileLock:
        return FileLock(self.path.parent / (self.path.name + ".locks"), name)

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None
