"""JSON:API resources -> one typed Arrow record batch, a column at a time.

Working column-wise (one list comprehension per column, then one Arrow cast)
keeps the per-cell Python work to a dictionary lookup, which is what lets an
import stay ahead of Klaviyo's rate limits on two cores.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import orjson
import pyarrow as pa

from ..api.client import Page
from ..errors import BridgeError
from .columns import TIMESTAMP, Column, arrow_schema, as_json


def attach_included(page: Page) -> None:
    """Put each related resource next to the record as ``_<relationship>`` (for column paths)."""
    if not page.included:
        return
    by_key = {(r.get("type"), r.get("id")): r for r in page.included}
    for record in page.data:
        for name, rel in (record.get("relationships") or {}).items():
            data = rel.get("data") if isinstance(rel, dict) else None
            if isinstance(data, dict):
                found = by_key.get((data.get("type"), data.get("id")))
                if found is not None:
                    record["_" + name] = found


class FlattenError(BridgeError):
    """A value does not fit its column's type; names the column and the record id."""


def value_at(resource: dict[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = resource
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
        if node is None:
            return None
    return node


def _parse_timestamp(text: str) -> datetime:
    stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)


def _timestamps(values: list[Any], column: str, ids: Sequence[Any]) -> pa.Array:
    try:
        return pa.array(values, pa.string()).cast(TIMESTAMP)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    parsed = []
    for value, rid in zip(values, ids):
        if value is None or isinstance(value, datetime):
            parsed.append(value)
            continue
        try:
            parsed.append(_parse_timestamp(str(value)))
        except ValueError:
            raise FlattenError(
                f"column {column!r} of record {rid!r}: {value!r} is not an ISO 8601 datetime", field=str(column)
            ) from None
    return pa.array(parsed, TIMESTAMP)


def _typed(values: list[Any], col: Column, ids: Sequence[Any]) -> pa.Array:
    if col.is_json:
        return as_json(pa.array([None if v is None else orjson.dumps(v).decode() for v in values], pa.string()))
    if col.type == TIMESTAMP:
        return _timestamps(values, col.name, ids)
    try:
        return pa.array(values, col.type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        if pa.types.is_string(col.type):
            return pa.array(
                [None if v is None else v if isinstance(v, str) else orjson.dumps(v).decode() for v in values], pa.string()
            )
        for value, rid in zip(values, ids):
            try:
                pa.array([value], col.type)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
                raise FlattenError(
                    f"column {col.name!r} of record {rid!r}: {value!r} is not {col.type}", field=col.name
                ) from None
        raise


#: Attributes the spec does not declare (Klaviyo adds some in newer revisions) land here as
#: one JSON object per row, so a new attribute never fails a run nor disappears. The column
#: appears in a batch only when some row has such an attribute; the table gains it then.
EXTRA_ATTRIBUTES = "extra_attributes"

#: A tree of declared attribute names: a name maps to the tree of its flattened sub-object,
#: or to None when its whole value lands in one column.
AttributeTree = dict[str, "AttributeTree | None"]


def declared_attributes(columns: Sequence[Column]) -> AttributeTree:
    tree: AttributeTree = {}
    for col in columns:
        if col.path[0] != "attributes" or len(col.path) < 2:
            continue
        node = tree
        for key in col.path[1:-1]:
            inner = node.get(key)
            if inner is None:
                inner = node[key] = {}
            node = inner
        node[col.path[-1]] = None
    return tree


def undeclared(value: Any, tree: AttributeTree) -> dict[str, Any] | None:
    """The parts of an attributes object the tree does not declare (nested as they came)."""
    if not isinstance(value, dict):
        return None
    extra: dict[str, Any] = {}
    for key, item in value.items():
        if key not in tree:
            extra[key] = item
            continue
        subtree = tree[key]
        if subtree is not None:
            inner = undeclared(item, subtree)
            if inner:
                extra[key] = inner
    return extra or None


def to_batch(resources: Sequence[dict[str, Any]], columns: Sequence[Column]) -> pa.RecordBatch:
    """One record batch with ``columns`` (missing values are NULL), plus ``extra_attributes``
    when some resource carries attributes the columns do not declare."""
    ids = [r.get("id") for r in resources]
    arrays = []
    for col in columns:
        if len(col.path) == 1:
            key = col.path[0]
            values = [r.get(key) for r in resources]
        elif len(col.path) == 2:
            a, b = col.path
            values = [(r.get(a) or {}).get(b) for r in resources]
        else:
            values = [value_at(r, col.path) for r in resources]
        arrays.append(_typed(values, col, ids))
    schema = arrow_schema(list(columns))
    tree = declared_attributes(columns)
    if tree:
        extras = [undeclared(r.get("attributes"), tree) for r in resources]
        if any(extras):
            extra = Column(EXTRA_ATTRIBUTES, (EXTRA_ATTRIBUTES,), pa.string(), is_json=True)
            arrays.append(_typed(extras, extra, ids))
            schema = schema.append(extra.field())
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
