"""Column types in the words a user expects ("text", "number", "time"), not Arrow's names.

Used wherever types are shown to people: the ``sql`` and ``tables`` verbs and the console's
result tables. (``connector:preview`` keeps the seed platform's own words: string, long, ...)
"""

from __future__ import annotations

import pyarrow as pa


def friendly_type(arrow_type: pa.DataType) -> str:
    t = arrow_type
    if isinstance(t, pa.ExtensionType):
        return "json" if "json" in str(t.extension_name) else friendly_type(t.storage_type)
    if pa.types.is_string(t) or pa.types.is_large_string(t) or getattr(pa.types, "is_string_view", lambda _: False)(t):
        return "text"
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "number"
    if pa.types.is_timestamp(t):
        return "time"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_time(t):
        return "time of day"
    if pa.types.is_duration(t) or pa.types.is_interval(t):
        return "duration"
    if pa.types.is_boolean(t):
        return "true/false"
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return "list"
    if pa.types.is_struct(t) or pa.types.is_map(t):
        return "object"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return "bytes"
    if pa.types.is_null(t):
        return "empty"
    if pa.types.is_dictionary(t):
        return friendly_type(t.value_type)
    return str(t)
