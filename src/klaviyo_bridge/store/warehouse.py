"""The sink interface: open a warehouse, write a run's Arrow batches with a mode, read back.

A run writes many batches, so writing is a session::

    with wh.writer("klaviyo", "events", "merge", primary_key=["id"]) as w:
        for batch in batches:
            w.write(batch)
        w.commit({"events": "2024-06-01T00:00:00Z"})

Everything between ``writer`` and ``commit`` happens in ONE transaction, cursor updates
included, so a crash mid-run leaves the previous table and cursor as they were. ``append``
inserts straight into the table; the other modes stage rows in a session-private table and
apply the mode at commit, so readers keep seeing the old rows until the new ones are in.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Self

import numpy as np
import pyarrow as pa

from ..errors import ConfigError, StoreError
from . import state as state_tables
from .columns import SEQUENCE_COLUMN, Kind, NormalisedBatch, normalise, plan_evolution, resolve_names, schema_kinds
from .engine import Session
from .identifiers import STATE_SCHEMA, check_object_name, check_user_database, qualified, quote
from .locks import NamedLock


class WriteMode(str, enum.Enum):
    """The seed's ``out.mode`` values."""

    APPEND = "append"
    REPLACE = "replace"
    REPLACE_ON_NEW_DATA = "replace_on_new_data"
    MERGE = "merge"

    @classmethod
    def parse(cls, value: "WriteMode | str") -> "WriteMode":
        try:
            return cls(value)
        except ValueError:
            choices = ", ".join(m.value for m in cls)
            raise ConfigError(f"unknown write mode {value!r} (choose one of: {choices})", key="mode") from None


class Warehouse(ABC):
    """A DuckDB file or a PostgreSQL database holding user tables and the ``_bridge`` state."""

    url: str

    @abstractmethod
    def _open_session(self) -> Session: ...

    def close(self) -> None:
        """Release the connection (and for DuckDB the file lock)."""

    def __enter__(self) -> "Warehouse":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One session in one transaction: committed on success, rolled back on any error."""
        session = self._open_session()
        try:
            session.begin()
            yield session
            session.commit()
        except BaseException:
            try:
                session.rollback()
            finally:
                self._failed(session)
            raise
        self._finished(session)

    def _finished(self, session: Session) -> None:
        """``session`` ended a transaction cleanly (committed): close it, or keep it for the next
        state call or writer."""
        session.close()

    def _failed(self, session: Session) -> None:
        """``session``'s transaction failed (and was rolled back): close it."""
        session.close()

    def named_lock(self, name: str) -> "NamedLock":
        """A lock every user of this state store sees (see ``store/locks.py``)."""
        raise NotImplementedError

    def _init_state(self) -> None:
        with self.transaction() as session:
            state_tables.create_state_tables(session)

    # --- writing -------------------------------------------------------------------------
    def writer(
        self,
        database: str,
        table: str,
        mode: WriteMode | str = WriteMode.APPEND,
        *,
        primary_key: str | Sequence[str] = "id",
        schema: pa.Schema | None = None,
        lock_timeout: float = 0.0,
        skip_existing: bool = False,
    ) -> "TableWriter":
        """Start a write session; the second writer of a table waits ``lock_timeout`` s, then fails.

        ``skip_existing`` (append only): rows whose ``primary_key`` the table already holds are
        left out, the rows already there untouched (event imports re-reading a lookback window)."""
        return TableWriter(
            self,
            database,
            table,
            WriteMode.parse(mode),
            primary_key=primary_key,
            schema=schema,
            lock_timeout=lock_timeout,
            skip_existing=skip_existing,
        )

    def write(
        self,
        database: str,
        table: str,
        data: pa.Table | pa.RecordBatch | Iterable[pa.RecordBatch],
        mode: WriteMode | str = WriteMode.APPEND,
        *,
        cursors: Mapping[str, str] | None = None,
        **options: Any,
    ) -> int:
        """One-shot convenience: a whole run in one call; returns rows written."""
        with self.writer(database, table, mode, **options) as w:
            if isinstance(data, (pa.Table, pa.RecordBatch)):
                w.write(data)
            else:
                for batch in data:
                    w.write(batch)
            w.commit(cursors)
        return w.rows

    # --- reading -------------------------------------------------------------------------
    def query_arrow(self, sql: str, params: Sequence[Any] = (), *, batch_size: int = 65_536) -> Iterator[pa.RecordBatch]:
        """Stream a query's rows as Arrow batches (the connection closes when the iterator ends).

        An empty result still yields one zero-row batch, so callers always learn the columns.
        """
        session = self._open_session()
        try:
            reader = session.stream(sql, params, batch_size)
            yielded = False
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    break
                yielded = True
                yield batch
            if not yielded:
                yield pa.RecordBatch.from_pylist([], schema=reader.schema)
        except Exception:
            self._failed(session)
            raise
        except BaseException:  # GeneratorExit: the reader stopped early; or an interrupt
            session.close()
            raise
        session.close()

    def stream_query(self, sql: str, database: str | None = None, *, batch_size: int = 65_536) -> "QueryStream":
        """Run a user's query (``database`` as its default schema) and stream its Arrow batches;
        the session closes when the stream ends, on ``close()``, or when the stream is dropped."""
        if database:
            check_object_name(database, "database")
        session = self._open_session()
        try:
            if database:
                session.use_schema(database)
            reader = session.stream(sql, (), batch_size)
        except BaseException:
            self._failed(session)
            raise
        return QueryStream(session, reader)

    def table_arrow(self, database: str, table: str) -> pa.Table:
        """A whole table as one Arrow table (for small tables and tests; exports stream)."""
        check_object_name(database, "database")
        check_object_name(table, "table")
        if self.table_columns(database, table) is None:
            raise StoreError(f"table {database}.{table} does not exist")
        return pa.Table.from_batches(list(self.query_arrow(f"SELECT * FROM {qualified(database, table)}")))

    def user_tables(self) -> list[tuple[str, str, int, int]]:
        """(database, table, columns, rows) of every user table, sorted; ``_bridge`` and the
        engines' own schemas are left out (the ``tables`` verb, the console's table list)."""
        session = self._open_session()
        try:
            rows = session.fetch(
                "SELECT t.table_schema, t.table_name, (SELECT count(*) FROM information_schema.columns c "
                "WHERE c.table_catalog = t.table_catalog AND c.table_schema = t.table_schema "
                "AND c.table_name = t.table_name) FROM information_schema.tables t "
                "WHERE t.table_catalog = current_database() AND t.table_type = 'BASE TABLE' "
                "AND t.table_schema NOT IN ('information_schema', 'pg_catalog', 'pg_toast', $1) "
                "AND t.table_schema NOT LIKE 'pg_temp%' ORDER BY 1, 2",
                [STATE_SCHEMA],
            )
            counted = [
                (db, table, int(ncols), int(session.fetch(f"SELECT count(*) FROM {qualified(db, table)}")[0][0]))
                for db, table, ncols in rows
            ]
        except BaseException:
            self._failed(session)
            raise
        session.close()
        return counted

    def table_names(self) -> list[tuple[str, str]]:
        """(database, table) of every table and view a user's query may read, sorted; the catalogues
        and ``_bridge`` left out (the console's table picker). Cheap: no row counts."""
        excluded = ", ".join(f"'{s}'" for s in ("information_schema", "pg_catalog", "pg_toast", STATE_SCHEMA))
        out: list[tuple[str, str]] = []
        for batch in self.query_arrow(
            f"SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema NOT IN ({excluded}) ORDER BY 1, 2"
        ):
            out += list(zip(batch.column(0).to_pylist(), batch.column(1).to_pylist()))
        return out

    def table_columns(self, database: str, table: str) -> dict[str, Kind] | None:
        session = self._open_session()
        try:
            columns = session.table_columns(database, table)
        except BaseException:
            self._failed(session)
            raise
        session.close()
        return columns

    @property
    def state(self) -> "state_tables.StateStore":
        return state_tables.StateStore(self)


class QueryStream:
    """A query's Arrow batches; closes its session at the end, on ``close()``, or when dropped.

    (A generator would only close the session once iterated: a run refused before reading,
    e.g. for a missing column, kept the DuckDB file attached in a long-lived scheduler.)
    """

    def __init__(self, session: Session, reader: pa.RecordBatchReader) -> None:
        self._session: Session | None = session
        self._reader: pa.RecordBatchReader | None = reader
        self.schema: pa.Schema = reader.schema

    def __iter__(self) -> "QueryStream":
        return self

    def __next__(self) -> pa.RecordBatch:
        if self._session is None or self._reader is None:
            raise StopIteration
        try:
            batch: pa.RecordBatch = self._reader.read_next_batch()
        except StopIteration:
            self.close()
            raise
        return batch

    def close(self) -> None:
        self._reader = None  # the reader pins DuckDB's result (and so the database file) too
        if self._session is not None:
            session, self._session = self._session, None
            session.close()

    def __del__(self) -> None:
        self.close()


class WriteSession:
    """What every writer of user tables shares: one session, its table's lock, all or nothing.

    Entering opens the session, creates the schema in its own short transaction (two runs
    creating tables in one new schema would otherwise conflict on it until one of them
    committed), begins the run's transaction and takes the one-writer-per-table lock; then
    ``_prepare`` does the writer's own setup. Any failure, at entry or at commit, rolls back,
    releases the lock and closes the session; leaving the ``with`` block without ``commit`` too.
    """

    def __init__(self, warehouse: Warehouse, database: str, table: str, *, lock_timeout: float) -> None:
        self.database = check_user_database(database)
        self.table = check_object_name(table, "table")
        self._warehouse = warehouse
        self._lock_timeout = lock_timeout
        self._label = f"{database}.{table}"
        self._session: Session | None = None
        self._done = False

    def __enter__(self) -> Self:
        session = self._session = self._warehouse._open_session()
        try:
            session.begin()
            session.create_schema(self.database)
            session.commit()
            session.begin()
            session.lock_table(self.database, self.table, self._lock_timeout)
            self._prepare(session)
        except BaseException:
            self._abort()
            raise
        return self

    def _prepare(self, session: Session) -> None:
        """The writer's own setup, inside the run's transaction and under the table lock."""

    def __exit__(self, *exc: object) -> None:
        if not self._done:
            self._abort()

    def _abort(self) -> None:
        self._done = True
        if self._session is None:
            return
        try:
            self._session.rollback()
        finally:
            self._session.release_locks()
            self._warehouse._failed(self._session)

    @property
    def session(self) -> Session:
        if self._session is None or self._done:
            raise StoreError(f"writer for {self._label} is not open (use it in a with block, once)")
        return self._session

    @contextmanager
    def _committing(self, cursors: Mapping[str, str] | None) -> Iterator[Session]:
        """The body applies the run; then ``cursors`` are stored and all of it commits at once.
        A failure anywhere rolls everything back."""
        session = self.session
        try:
            yield session
            if cursors:
                state_tables.save_cursors(session, cursors)
            session.commit()
        except BaseException:
            self._abort()
            raise
        self._done = True
        session.release_locks()
        self._warehouse._finished(session)


class TableWriter(WriteSession):
    """One run's writes to one table, applied atomically (with cursor updates) at ``commit``."""

    def __init__(
        self,
        warehouse: Warehouse,
        database: str,
        table: str,
        mode: WriteMode,
        *,
        primary_key: str | Sequence[str],
        schema: pa.Schema | None,
        lock_timeout: float,
        skip_existing: bool = False,
    ) -> None:
        super().__init__(warehouse, database, table, lock_timeout=lock_timeout)
        self.mode = mode
        self.primary_key = [primary_key] if isinstance(primary_key, str) else list(primary_key)
        if mode is WriteMode.MERGE and not self.primary_key:
            raise ConfigError("merge mode needs a primary key", key="primary_key")
        self.rows = 0
        self._declared = schema
        self._target = qualified(database, table)
        self._target_columns: dict[str, Kind] | None = None  # as the table is now
        self._columns: dict[str, Kind] = {}  # as the table must be at commit
        self._present: set[str] = set()  # columns this run actually sent
        self._stage: str | None = None
        self._absent: tuple[str, pa.Array, str, str, datetime] | None = None  # see mark_absent
        self.marked_absent = 0
        self._skip_existing = skip_existing and mode is WriteMode.APPEND
        self._insert_only = False  # an append that leaves out keys the table has (merge, no updates)
        #: A replace written straight into the table (``Session.replaces_in_place``), and whether
        #: the old rows are deleted yet (at the first rows, in the run's transaction).
        self._in_place = False
        self._cleared = False

    # --- session lifecycle ---------------------------------------------------------------
    def _prepare(self, session: Session) -> None:
        self._target_columns = session.table_columns(self.database, self.table)
        self._columns = dict(self._target_columns or {})
        if self._skip_existing and self._target_columns is not None and session.fetch(f"SELECT 1 FROM {self._target} LIMIT 1"):
            # Into an empty or new table every row is new: a plain insert. Otherwise rows are
            # staged and only keys the table lacks go in at commit.
            self.mode, self._insert_only = WriteMode.MERGE, True
        if self._declared is not None:
            self._evolve(schema_kinds(self._declared, table=self._label))
        replace = self.mode in (WriteMode.REPLACE, WriteMode.REPLACE_ON_NEW_DATA)
        self._in_place = replace and session.replaces_in_place
        if self.mode is WriteMode.APPEND:
            session.appending()  # straight into the table: the engine need not cache what it wrote

    # --- writing -------------------------------------------------------------------------
    def write(self, data: pa.RecordBatch | pa.Table) -> None:
        """Add rows to this run; they become visible to others only at commit.

        A table's chunks go in as one insert per run of chunks with the same columns: an insert
        has a fixed cost, and combining the chunks first would copy every value once more.
        """
        batches = data.to_batches() if isinstance(data, pa.Table) else [data]
        if isinstance(data, pa.Table) and not batches:
            batches = [pa.RecordBatch.from_pylist([], schema=data.schema)]
        run: list[NormalisedBatch] = []
        for batch in batches:
            normalised = normalise(batch, table=self._label)
            if run and normalised.batch.schema != run[0].batch.schema:
                self._write_run(run)
                run = []
            run.append(normalised)
        self._write_run(run)

    def _write_run(self, run: list[NormalisedBatch]) -> None:
        """Insert normalised batches that share one schema, as one statement."""
        session = self.session
        if self.mode is WriteMode.MERGE:
            for normalised in run:
                self._check_keys(normalised.batch)
        self._evolve(run[0].kinds)
        data: pa.RecordBatch | pa.Table = run[0].batch if len(run) == 1 else pa.Table.from_batches([n.batch for n in run])
        if data.num_rows == 0:
            return
        names = resolve_names(self._columns, list(run[0].kinds))
        self._present.update(names.values())
        if self._in_place and not self._cleared:
            self._clear()  # the first rows of a replace: the old ones go (seen by others until the commit)
        if self.mode is WriteMode.APPEND or self._in_place:
            session.insert_batch(self._target, data, names, self._columns)
        else:
            if self.mode is WriteMode.MERGE:
                sequence = pa.array(np.arange(self.rows, self.rows + data.num_rows, dtype=np.int64))
                data = data.append_column(SEQUENCE_COLUMN, sequence)
                names = {**names, SEQUENCE_COLUMN: SEQUENCE_COLUMN}
            session.insert_batch(self._ensure_stage(), data, names, {**self._columns, SEQUENCE_COLUMN: Kind.INTEGER})
        self.rows += data.num_rows

    def _check_keys(self, batch: pa.RecordBatch) -> None:
        folded = {n.casefold(): n for n in batch.schema.names}
        for key in self.primary_key:
            name = folded.get(key.casefold())
            if name is None:
                raise StoreError(f"{self._label}: merge key column {key!r} is missing from a batch")
            if batch.column(name).null_count:
                raise StoreError(f"{self._label}: merge key column {key!r} has null values")

    def _evolve(self, incoming: dict[str, Kind]) -> None:
        evolution = plan_evolution(self._columns, incoming, table=self._label)
        if not evolution:
            return
        self._columns.update(evolution.widened)
        self._columns.update(evolution.added)
        if self.mode is WriteMode.APPEND or (self._in_place and self._cleared):
            self._sync_target()
        elif self._stage is not None:
            for name, kind in evolution.added.items():
                self.session.add_column(self._stage, name, kind)
            for name, kind in evolution.widened.items():
                self.session.widen_column(self._stage, name, kind)

    def _sync_target(self) -> None:
        """Create or alter the real table so it has ``self._columns`` (inside the transaction)."""
        session = self.session
        if not self._columns:
            return
        if self._target_columns is None:
            session.create_table(self._target, self._columns)
        else:
            evolution = plan_evolution(self._target_columns, self._columns, table=self._label)
            for name, kind in evolution.added.items():
                session.add_column(self._target, name, kind)
            for name, kind in evolution.widened.items():
                session.widen_column(self._target, name, kind)
        self._target_columns = dict(self._columns)

    def _clear(self) -> None:
        """A replace in place: empty the table (when it exists), then give it the run's columns
        (altering an empty table rewrites no rows). Only then does the session only append: the
        delete may need the engine's whole memory (DuckDB, a table with an index of 1M rows)."""
        session = self.session
        if self._target_columns is not None:
            session.clear_table(self._target)
        self._sync_target()
        self._cleared = True
        if self._absent is None:
            session.appending()

    def _ensure_stage(self) -> str:
        if self._stage is None:
            self._stage = self.session.create_stage("_bridge_stage", self._columns, self.mode is WriteMode.MERGE)
        return self._stage

    def mark_absent(self, key: str, present: pa.Array, flag: str, at_column: str, at: datetime) -> None:
        """At commit, rows whose ``key`` is not in ``present`` get ``flag`` = TRUE and
        ``at_column`` = ``at`` (once: rows already flagged keep their time). For profiles
        deleted in Klaviyo, which the API shows only as absences."""
        self.session.appending(False)  # the commit now compares the table with ``present``
        self._absent = (key, present, flag, at_column, at)

    def _apply_absent(self, session: Session) -> None:
        assert self._absent is not None
        key, present, flag, at_column, at = self._absent
        self._evolve({flag: Kind.BOOLEAN, at_column: Kind.TIMESTAMP})
        self._sync_target()
        names = resolve_names(self._columns, [key, flag, at_column])
        k, f, t = (quote(names[n]) for n in (key, flag, at_column))
        seen = session.create_stage("_bridge_present", {"key": Kind.TEXT}, False)
        if len(present):
            session.insert_batch(seen, pa.table({"key": present}), {"key": "key"}, {"key": Kind.TEXT})
        when = session.cast("'" + at.astimezone(timezone.utc).isoformat() + "'", Kind.TIMESTAMP)
        gone = f"({f} IS NULL OR {f} = FALSE) AND NOT EXISTS (SELECT 1 FROM {seen} AS p WHERE p.key = {self._target}.{k})"
        self.marked_absent = int(session.fetch(f"SELECT count(*) FROM {self._target} WHERE {gone}")[0][0])
        session.execute(f"UPDATE {self._target} SET {f} = TRUE, {t} = {when} WHERE {gone}")

    # --- commit --------------------------------------------------------------------------
    def commit(self, cursors: Mapping[str, str] | None = None) -> int:
        """Apply the mode, store ``cursors`` (job/stream -> value) and commit, all at once."""
        with self._committing(cursors) as session:
            replaces = self.mode is WriteMode.REPLACE or (self.mode is WriteMode.REPLACE_ON_NEW_DATA and self.rows > 0)
            if replaces or (self.mode is WriteMode.MERGE and self.rows > 0) or self._target_columns is None:
                self._sync_target()
            if replaces and self._in_place:
                if not self._cleared:
                    self._clear()  # a replace that brought no rows empties the table
            elif replaces and self._target_columns is not None:
                if self._stage is not None:
                    session.replace_contents(self._target, self._stage, list(self._columns))
                else:
                    session.clear_table(self._target)
            elif self.mode is WriteMode.MERGE and self.rows > 0:
                keys = list(resolve_names(self._columns, self.primary_key).values())
                session.prepare_merge(self.database, self.table, keys)
                updates = [] if self._insert_only else [c for c in self._columns if c in self._present and c not in keys]
                session.merge(self._target, self._ensure_stage(), list(self._columns), keys, updates)
            if self._absent is not None:
                self._apply_absent(session)
        return self.rows
