"""What each engine must provide to the shared writer: one connection, one transaction at a time.

A ``Session`` is one connection used by one writer or one state call. The write logic
(modes, staging, schema evolution, cursors) lives once in ``warehouse.py`` and speaks to the
engines only through these methods, so DuckDB and PostgreSQL behave the same by construction.
SQL here uses ``$1`` parameters, which both engines accept.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Sequence

import pyarrow as pa

from .columns import SEQUENCE_COLUMN, Kind
from .identifiers import quote


class Session(ABC):
    """One engine connection; every foreign exception leaves it as a StoreError."""

    # --- transactions and locks -------------------------------------------------------
    @abstractmethod
    def begin(self) -> None: ...

    @abstractmethod
    def commit(self) -> None: ...

    @abstractmethod
    def rollback(self) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def lock_table(self, database: str, table: str, timeout: float) -> None:
        """Take the one-writer-per-table lock for this transaction (wait up to ``timeout`` s)."""

    def release_locks(self) -> None:
        """Drop locks not tied to the transaction (PostgreSQL's go away at commit/rollback)."""

    #: Whether a replace may empty the table inside the run's transaction and write the new rows
    #: straight into it: readers keep seeing the old rows until the commit (DuckDB's MVCC), and no
    #: stage holds the run. PostgreSQL empties with TRUNCATE, which would block readers for the
    #: whole run: it stages, and swaps at the commit.
    replaces_in_place: bool = False

    def appending(self, only: bool = True) -> None:
        """``only``: from now on this session only appends rows to a table (no stage, no merge,
        no query) until it closes or says otherwise. An engine that caches every page it writes
        may keep fewer of them meanwhile (DuckDB: ``store/duckdb.py``, ``APPEND_MEMORY_PER_THREAD_MB``)."""

    # --- statements ----------------------------------------------------------------------
    @abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> None: ...

    @abstractmethod
    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    @abstractmethod
    def stream(self, sql: str, params: Sequence[Any] = (), batch_size: int = 65_536) -> pa.RecordBatchReader:
        """Run a query and return its rows as Arrow batches, produced as they are read."""

    @abstractmethod
    def use_schema(self, database: str) -> None:
        """Make ``database`` the default schema of what this session runs next (a user's query
        with ``-d``); ConfigError when the warehouse has no such database."""

    # --- catalogue and types -------------------------------------------------------------
    @abstractmethod
    def table_columns(self, database: str, table: str) -> dict[str, Kind] | None:
        """Columns of an existing table in order, or None when the table does not exist."""

    @abstractmethod
    def sql_type(self, kind: Kind) -> str: ...

    def cast(self, expression: str, kind: Kind) -> str:
        return f"CAST({expression} AS {self.sql_type(kind)})"

    # --- bulk data -----------------------------------------------------------------------
    @abstractmethod
    def insert_batch(self, dest: str, batch: pa.RecordBatch | pa.Table, columns: dict[str, str], kinds: dict[str, Kind]) -> None:
        """Bulk-insert ``batch`` (or a table of same-schema chunks) into table ``dest``;
        ``columns`` maps batch names to dest names."""

    @abstractmethod
    def create_stage(self, name: str, columns: dict[str, Kind], with_sequence: bool) -> str:
        """Create a session-private staging table; returns its quoted name."""

    @abstractmethod
    def replace_contents(self, target: str, stage: str, columns: list[str]) -> None:
        """Inside the open transaction, make ``target`` hold exactly the rows of ``stage``."""

    @abstractmethod
    def clear_table(self, target: str) -> None: ...

    def lookup_index(self, database: str, table: str, columns: list[str]) -> None:
        """An index for joins on ``columns`` where the engine needs one (PostgreSQL)."""

    def prepare_merge(self, database: str, table: str, keys: list[str]) -> None:
        """Anything the merge statement needs on the target (PostgreSQL: a unique index)."""

    @abstractmethod
    def merge(self, target: str, stage: str, columns: list[str], keys: list[str], update_columns: list[str]) -> None:
        """Upsert the stage's rows into ``target`` on ``keys``; the last duplicate of a key wins."""

    # --- DDL both engines spell the same way ---------------------------------------------
    def create_schema(self, database: str) -> None:
        self.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(database)}")

    def create_table(self, target: str, columns: dict[str, Kind]) -> None:
        body = ", ".join(f"{quote(n)} {self.sql_type(k)}" for n, k in columns.items())
        self.execute(f"CREATE TABLE {target} ({body})")

    def add_column(self, target: str, name: str, kind: Kind) -> None:
        self.execute(f"ALTER TABLE {target} ADD COLUMN {quote(name)} {self.sql_type(kind)}")

    def widen_column(self, target: str, name: str, kind: Kind) -> None:
        col = quote(name)
        self.execute(f"ALTER TABLE {target} ALTER COLUMN {col} TYPE {self.sql_type(kind)} USING {self.cast(col, kind)}")


def stage_columns_sql(session: Session, columns: dict[str, Kind], with_sequence: bool) -> str:
    parts = [f"{quote(n)} {session.sql_type(k)}" for n, k in columns.items()]
    if with_sequence:
        parts.append(f"{quote(SEQUENCE_COLUMN)} BIGINT")
    return ", ".join(parts)
