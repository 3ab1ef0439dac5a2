"""Run the user's query on the warehouse, with ``-d DATABASE`` as the default schema."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pyarrow as pa

from ..errors import ConfigError
from ..store.identifiers import check_object_name
from ..store.warehouse import QueryStream, Warehouse

__all__ = ["BATCH_ROWS", "QueryStream", "query_source", "read_query"]

#: Rows per record batch read from the warehouse. Wide rows must fit Arrow's 2 GB string buffers
#: (65,536 rows of 40 KB did not): 4,096 rows of up to ~500 KB do; narrow rows lose nothing.
BATCH_ROWS = 4_096


def _clean(sql: str) -> str:
    sql = sql.strip().rstrip(";").strip()
    if not sql:
        raise ConfigError("the query is empty", key="query")
    return sql


def query_source(
    wh: Warehouse, sql: str, database: str | None = None, *, batch_size: int = BATCH_ROWS
) -> Callable[[], tuple[pa.Schema, Iterator[pa.RecordBatch]]]:
    """A source for ``run_export``: each call runs the query and streams its Arrow batches.

    Only a few batches are in memory at a time; the session closes when the stream ends.
    """
    sql = _clean(sql)
    if database:
        check_object_name(database, "database")

    def open_() -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        stream = wh.stream_query(sql, database, batch_size=batch_size)
        return stream.schema, stream

    return open_


def read_query(wh: Warehouse, sql: str, database: str | None = None, *, batch_size: int = BATCH_ROWS) -> pa.Table:
    """The whole result as one Arrow table (columnar: 1M narrow rows take tens of MB).

    Materialising lets validation see every row before anything is sent, so
    ``skip_invalid_records: false`` can fail the job with nothing sent.
    """
    stream = wh.stream_query(_clean(sql), database, batch_size=batch_size)
    try:
        batches = list(stream)
    finally:
        stream.close()
    return pa.Table.from_batches(batches, schema=stream.schema) if batches else stream.schema.empty_table()
