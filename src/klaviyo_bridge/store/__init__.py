"""Warehouse sinks (DuckDB, PostgreSQL) fed with Arrow batches, and the ``_bridge`` state tables."""

from .columns import Kind, SchemaConflict
from .factory import open_warehouse
from .state import ExportBatchRecord, JobRecord, StateStore
from .warehouse import TableWriter, Warehouse, WriteMode

__all__ = [
    "ExportBatchRecord",
    "JobRecord",
    "Kind",
    "SchemaConflict",
    "StateStore",
    "TableWriter",
    "Warehouse",
    "WriteMode",
    "open_warehouse",
]
