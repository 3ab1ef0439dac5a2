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

from ..errors import BridgeError
from .columns import TIMESTAMP, Column, arrow_schema


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
            raise FlattenError(f"column {column!r} of record {rid!r}: {value!r} is not an ISO 8601 datetime") from None
    return pa.array(parsed, TIMESTAMP)


def _typed(values: list[Any], col: Column, ids: Sequence[Any]) -> pa.Array:
    if col.is_json:
        return pa.array([None if v is None else orjson.dumps(v).decode() for v in values], pa.string())
    if col.type == TIMESTAMP:
        return _timestamps(values, col.name, ids)
    try:
        return pa.array(values, col.type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        if pa.types.is_string(col.type):
            return pa.array([None if v is None else v if isinstance(v, str) else orjson.dumps(v).decode() for v in values], pa.string())
        for value, rid in zip(values, ids):
            try:
                pa.array([value], col.type)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
                raise FlattenError(f"column {col.name!r} of record {rid!r}: {value!r} is not {col.type}") from None
        raise


def to_batch(resources: Sequence[dict[str, Any]], columns: Sequence[Column]) -> pa.RecordBatch:
    """One record batch with exactly ``columns`` (missing values are NULL)."""
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
    return pa.RecordBatch.from_arrays(arrays, schema=arrow_schema(list(columns)))
