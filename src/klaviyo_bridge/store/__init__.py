"""Warehouse sinks (DuckDB, PostgreSQL) fed with Arrow batches, and the ``_bridge`` state tables."""

from .columns import Kind, SchemaConflict
from .state import ExportBatchRecord, RunRecord, StateStore
from .factory import open_warehouse
from .warehouse import TableWriter, Warehouse, WriteMode

__all__ = [
    "ExportBatchRecord", "Kind", "RunRecord", "SchemaConflict", "StateStore", "TableWriter",
    "Warehouse", "WriteMode", "open_warehouse",
]
