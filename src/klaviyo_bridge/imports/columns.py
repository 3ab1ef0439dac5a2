"""Table columns of a Klaviyo resource, derived from the spec's response schema.

Deriving the columns from the official schema (instead of from whatever the
first page happens to contain) keeps column names and types identical between
runs: a profile without a ``location`` still gets the ``location_city`` column,
typed, and NULL. Rules:

* ``id`` first, then scalar attributes: strings, ``date-time`` strings as
  timestamps (UTC), integers, numbers, booleans;
* objects with declared properties are flattened with ``_`` (``location_city``);
* open-ended objects (``properties``, ``event_properties``) and arrays become
  one JSON text column (field metadata ``json=true`` so sinks can use a JSON type).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from klaviyo_spec import _raw as _spec_raw
from klaviyo_spec import operation

TIMESTAMP = pa.timestamp("us", tz="UTC")
#: Open-ended objects travel as Arrow's JSON type, so the warehouse stores them as JSON
#: (DuckDB) / JSONB (PostgreSQL); a table made when they were plain text keeps its text columns.
JSON = pa.json_(pa.string())


def as_json(texts: pa.Array) -> pa.Array:
    """A string array of JSON texts, typed as JSON."""
    return pa.ExtensionArray.from_storage(JSON, texts)


@dataclass(frozen=True)
class Column:
    """One output column: where its value sits in a resource, and its Arrow type."""

    name: str
    path: tuple[str, ...]
    type: pa.DataType
    is_json: bool = False

    def field(self) -> pa.Field:
        return pa.field(self.name, JSON if self.is_json else self.type)


def _schemas() -> dict[str, Any]:
    schemas: dict[str, Any] = _spec_raw()["schemas"]  # the spec file's JSON
    return schemas


def _deref(node: dict[str, Any]) -> dict[str, Any]:
    """Follow $ref and unwrap the ``anyOf [X, null]`` that nullable refs become."""
    while True:
        if "$ref" in node:
            node = _schemas()[node["$ref"].rsplit("/", 1)[-1]]
            continue
        options = node.get("anyOf") or node.get("oneOf")
        if options:
            non_null = [o for o in options if o.get("type") != "null"]
            if len(non_null) == 1:
                node = non_null[0]
                continue
        if "allOf" in node:
            merged: dict[str, Any] = {"type": "object", "properties": {}}
            for part in node["allOf"]:
                _merge_properties(merged, _deref(part))
            node = merged
            continue
        return node


def _merge_properties(into: dict[str, Any], part: dict[str, Any]) -> None:
    """Deep-merge the declared properties of ``part`` (allOf members extend each other)."""
    for name, raw in part.get("properties", {}).items():
        existing = into["properties"].get(name)
        if existing is None:
            into["properties"][name] = raw
            continue
        a, b = _deref(existing), _deref(raw)
        if a.get("properties") or b.get("properties"):
            merged: dict[str, Any] = {"type": "object", "properties": {}}
            _merge_properties(merged, a)
            _merge_properties(merged, b)
            into["properties"][name] = merged
        else:
            into["properties"][name] = raw


def _types(node: dict[str, Any]) -> set[str]:
    t = node.get("type")
    if t is None:
        return set()
    return {t} if isinstance(t, str) else set(t) - {"null"}


def _scalar_type(node: dict[str, Any]) -> pa.DataType | None:
    kinds = _types(node)
    if kinds == {"string"}:
        return TIMESTAMP if node.get("format") == "date-time" else pa.string()
    if kinds == {"integer"}:
        return pa.int64()
    if kinds in ({"number"}, {"number", "integer"}):
        return pa.float64()
    if kinds == {"boolean"}:
        return pa.bool_()
    return None


def columns_for_attributes(schema: dict[str, Any], prefix: tuple[str, ...] = ("attributes",), depth: int = 0) -> list[Column]:
    """Columns for the properties of an attributes object (recursing into declared objects)."""
    out: list[Column] = []
    for name, raw in schema.get("properties", {}).items():
        node = _deref(raw)
        path = (*prefix, name)
        col_name = "_".join(path[1:])
        scalar = _scalar_type(node)
        if scalar is not None:
            out.append(Column(col_name, path, scalar))
        elif "object" in _types(node) or node.get("properties"):
            if node.get("properties") and depth < 2:
                out.extend(columns_for_attributes(node, path, depth + 1))
            else:
                out.append(Column(col_name, path, pa.string(), is_json=True))
        else:
            out.append(Column(col_name, path, pa.string(), is_json=True))
    return out


def operation_resource(operation_id: str) -> dict[str, Any]:
    """The resource object schema of an operation's ``data`` (item schema for collections)."""
    name = operation(operation_id).response_schema
    if name is None:  # (a KeyError, as the lookup of a missing schema gave)
        raise KeyError(f"{operation_id} answers without a response schema")
    document = _deref(_schemas()[name])
    data = _deref(document["properties"]["data"])
    return _deref(data["items"]) if "items" in data else data


def resource_columns(
    resource: str | dict[str, Any],
    *,
    omit: tuple[str, ...] = (),
    types: dict[str, pa.DataType] | None = None,
) -> list[Column]:
    """``id`` plus the flattened attributes of a resource schema (a name like
    'ProfileResponseObjectResource', or a schema from ``operation_resource``)."""
    resource = _deref(_schemas()[resource] if isinstance(resource, str) else resource)
    attributes = _deref(resource["properties"]["attributes"])
    cols = [Column("id", ("id",), pa.string())]
    for col in columns_for_attributes(attributes):
        if col.name in omit or any(col.name.startswith(o + "_") for o in omit):
            continue
        if types and col.name in types:
            col = Column(col.name, col.path, types[col.name], col.is_json)
        cols.append(col)
    return cols


def arrow_schema(columns: list[Column]) -> pa.Schema:
    return pa.schema([c.field() for c in columns])
