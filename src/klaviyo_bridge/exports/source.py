"""Run the user's query on the warehouse, with ``-d DATABASE`` as the default schema."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from ..errors import ConfigError
from ..store.identifiers import check_object_name, quote
from ..store.warehouse import Warehouse
from ..store.duckdb import CATALOG


def _use_database(session, database: str) -> None:
    kind = type(session).__name__
    if kind.startswith("DuckDB"):
        found = session.fetch("SELECT count(*) FROM duckdb_schemas() WHERE database_name = $1 AND schema_name = $2",
                              [CATALOG, database])
        if not found[0][0]:
            raise ConfigError(f"database {database!r} does not exist in the warehouse", key="database")
        session.execute(f"USE {CATALOG}.{quote(database)}")
    else:
        found = session.fetch("SELECT count(*) FROM information_schema.schemata WHERE schema_name = $1", [database])
        if not found[0][0]:
            raise ConfigError(f"database {database!r} does not exist in the warehouse", key="database")
        session.execute(f"SET search_path TO {quote(database)}, public")


class QueryStream:
    """The query's Arrow batches; closes its session at the end, on ``close()``, or when dropped.

    (A generator would only close the session once iterated: a run refused before reading,
    e.g. for a missing column, kept the DuckDB file attached in a long-lived scheduler.)
    """

    def __init__(self, session, reader: pa.RecordBatchReader) -> None:
        self._session = session
        self._reader = reader

    def __iter__(self) -> "QueryStream":
        return self

    def __next__(self) -> pa.RecordBatch:
        if self._session is None:
            raise StopIteration
        try:
            return self._reader.read_next_batch()
        except StopIteration:
            self.close()
            raise

    def close(self) -> None:
        self._reader = None  # the reader pins DuckDB's result (and so the database file) too
        if self._session is not None:
            session, self._session = self._session, None
            session.close()

    def __del__(self) -> None:
        self.close()


#: Rows per record batch read from the warehouse. Wide rows must fit Arrow's 2 GB string buffers
#: (65,536 rows of 40 KB did not): 4,096 rows of up to ~500 KB do; narrow rows lose nothing.
BATCH_ROWS = 4_096


def query_source(wh: Warehouse, sql: str, database: str | None = None, *, batch_size: int = BATCH_ROWS):
    """A source for ``run_export``: each call runs the query and streams its Arrow batches.

    Only a few batches are in memory at a time; the session closes when the stream ends.
    """
    sql = sql.strip().rstrip(";").strip()
    if not sql:
        raise ConfigError("the query is empty", key="query")
    if database:
        check_object_name(database, "database")

    def open_() -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        session = wh._open_session()
        try:
            if database:
                _use_database(session, database)
            reader = session.stream(sql, (), batch_size)
        except BaseException:
            session.close()
            raise

        return reader.schema, QueryStream(session, reader)

    return open_


def read_query(wh: Warehouse, sql: str, database: str | None = None, *, batch_size: int = BATCH_ROWS) -> pa.Table:
    """The whole result as one Arrow table (columnar: 1M narrow rows take tens of MB).

    Materialising lets validation see every row before anything is sent, so
    ``skip_invalid_records: false`` can fail the job with nothing sent.
    """
    sql = sql.strip().rstrip(";").strip()
    if not sql:
        raise ConfigError("the query is empty", key="query")
    session = wh._open_session()
    try:
        if database:
            check_object_name(database, "database")
            _use_database(session, database)
        reader = session.stream(sql, (), batch_size)
        batches = []
        while True:
            try:
                batches.append(reader.read_next_batch())
            except StopIteration:
                break
        schema = reader.schema
    finally:
        session.close()
    return pa.Table.from_batches(batches, schema=schema) if batches else schema.empty_table()
