"""Column kinds shared by both engines, Arrow -> kind mapping and the schema-evolution rules.

Both engines store the same small set of kinds, so a table has the same columns and types
whichever warehouse it lives in. When a run brings a column whose kind differs from the table's,
``widen`` picks a kind that holds both without losing data (int -> double, anything -> text);
when none exists (binary vs anything else) the write fails with a SchemaConflict naming the
table and column instead of dropping values.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import pyarrow as pa

from ..errors import StoreError
from .identifiers import check_column_name


class Kind(enum.Enum):
    BOOLEAN = "boolean"
    INTEGER = "integer"
    FLOAT = "float"
    TEXT = "text"
    JSON = "json"
    TIMESTAMP = "timestamp"  # always with time zone; naive input is taken as UTC
    DATE = "date"
    BINARY = "binary"


class SchemaConflict(StoreError):
    """A column changed kind in a way no wider kind can hold."""

    def __init__(self, message: str, *, table: str, column: str) -> None:
        super().__init__(message)
        self.table = table
        self.column = column


SEQUENCE_COLUMN = "_bridge_seq"
"""Arrival order of rows in a merge run, so the last duplicate of a key wins."""


def is_json_type(arrow_type: pa.DataType) -> bool:
    return isinstance(arrow_type, pa.BaseExtensionType) and arrow_type.extension_name == "arrow.json"


def kind_of(arrow_type: pa.DataType, *, table: str, column: str) -> Kind | None:
    """The kind an Arrow type is stored as; None for the all-null type (kind still unknown)."""
    t = arrow_type
    if is_json_type(t):
        return Kind.JSON
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_null(t):
        return None
    if pa.types.is_boolean(t):
        return Kind.BOOLEAN
    if pa.types.is_integer(t):
        return Kind.INTEGER
    if pa.types.is_floating(t):
        return Kind.FLOAT
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return Kind.TEXT
    if pa.types.is_timestamp(t):
        return Kind.TIMESTAMP
    if pa.types.is_date(t):
        return Kind.DATE
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t) or pa.types.is_binary_view(t):
        return Kind.BINARY
    raise SchemaConflict(
        f"{table}.{column}: Arrow type {t} is not supported; send open-ended values as JSON "
        "strings (pa.json_()) and numbers as int/float",
        table=table,
        column=column,
    )


# Arrow type each kind travels as once normalised (what the engines' bulk paths receive).
_WIRE_TYPE = {
    Kind.BOOLEAN: pa.bool_(),
    Kind.INTEGER: pa.int64(),
    Kind.FLOAT: pa.float64(),
    Kind.TEXT: pa.string(),
    Kind.JSON: pa.json_(pa.string()),
    Kind.TIMESTAMP: pa.timestamp("us", tz="UTC"),
    Kind.DATE: pa.date32(),
    Kind.BINARY: pa.binary(),
}


@dataclass
class NormalisedBatch:
    """A batch with one wire type per kind, its all-null columns dropped, and its kinds."""

    batch: pa.RecordBatch
    kinds: dict[str, Kind] = field(default_factory=dict)


def normalise(batch: pa.RecordBatch, *, table: str) -> NormalisedBatch:
    """Cast every column to its kind's wire type (safe casts only: a lossy cast raises)."""
    seen: dict[str, str] = {}
    names, arrays, kinds = [], [], {}
    for name, column in zip(batch.schema.names, batch.columns):
        check_column_name(name)
        if name == SEQUENCE_COLUMN:
            raise SchemaConflict(f"{table}: column name {name!r} is reserved", table=table, column=name)
        folded = name.casefold()
        if folded in seen:
            raise SchemaConflict(
                f"{table}: columns {seen[folded]!r} and {name!r} differ only by case",
                table=table,
                column=name,
            )
        seen[folded] = name
        kind = kind_of(column.type, table=table, column=name)
        if kind is None:
            continue
        wire = _WIRE_TYPE[kind]
        if column.type != wire:
            try:
                if pa.types.is_dictionary(column.type):
                    column = column.dictionary_decode()
                if kind is Kind.JSON:
                    column = pa.ExtensionArray.from_storage(wire, column.storage.cast(pa.string()))
                elif kind is Kind.TIMESTAMP and column.type.tz is None:
                    column = column.cast(pa.timestamp(column.type.unit, tz="UTC")).cast(wire)
                else:
                    column = column.cast(wire)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise SchemaConflict(
                    f"{table}.{name}: cannot store {column.type} as {kind.value} without losing data: {exc}",
                    table=table,
                    column=name,
                ) from exc
        names.append(name)
        arrays.append(column)
        kinds[name] = kind
    return NormalisedBatch(pa.RecordBatch.from_arrays(arrays, names=names), kinds)


def schema_kinds(schema: pa.Schema, *, table: str) -> dict[str, Kind]:
    """Kinds of a declared schema (used to create tables before any row arrives)."""
    kinds = {}
    for f in schema:
        check_column_name(f.name)
        kind = kind_of(f.type, table=table, column=f.name)
        kinds[f.name] = kind if kind is not None else Kind.TEXT
    return kinds


def widen(old: Kind, new: Kind, *, table: str, column: str) -> Kind:
    """The narrowest kind holding values of both ``old`` and ``new`` kinds."""
    if old is new:
        return old
    pair = {old, new}
    if pair == {Kind.INTEGER, Kind.FLOAT}:
        return Kind.FLOAT
    if pair == {Kind.DATE, Kind.TIMESTAMP}:
        return Kind.TIMESTAMP
    if Kind.BINARY in pair:
        raise SchemaConflict(
            f"{table}.{column}: column holds {old.value} but this run sent {new.value}; "
            "binary data cannot be widened without loss (rename the column or rebuild the table)",
            table=table,
            column=column,
        )
    return Kind.TEXT


@dataclass
class Evolution:
    """What must change in a table so that it can take a batch."""

    added: dict[str, Kind] = field(default_factory=dict)
    widened: dict[str, Kind] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.added or self.widened)


def plan_evolution(current: dict[str, Kind], incoming: dict[str, Kind], *, table: str) -> Evolution:
    """Compare a table's columns with a batch's; names match case-insensitively (DuckDB's rule)."""
    by_fold = {name.casefold(): name for name in current}
    evolution = Evolution()
    for name, kind in incoming.items():
        existing = by_fold.get(name.casefold())
        if existing is None:
            evolution.added[name] = kind
        elif current[existing] is not kind:
            wider = widen(current[existing], kind, table=table, column=existing)
            if wider is not current[existing]:
                evolution.widened[existing] = wider
    return evolution


def resolve_names(current: dict[str, Kind], names: list[str]) -> dict[str, str]:
    """Map batch column names to the table's spelling of them."""
    by_fold = {name.casefold(): name for name in current}
    return {name: by_fold[name.casefold()] for name in names}
