"""Column types in the words a user expects ("text", "number", "time"), not Arrow's names.

Used wherever types are shown to people: the ``sql`` and ``tables`` verbs and the console's
result tables. (``connector:preview`` keeps the seed platform's own words: string, long, ...)
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa

_T = pa.types

#: The user's word for each kind of Arrow type, tried in order: (tests, word).
_WORDS: tuple[tuple[tuple[Callable[[pa.DataType], bool], ...], str], ...] = (
    ((_T.is_string, _T.is_large_string, getattr(_T, "is_string_view", lambda _: False)), "text"),
    ((_T.is_integer, _T.is_floating, _T.is_decimal), "number"),
    ((_T.is_timestamp,), "time"),
    ((_T.is_date,), "date"),
    ((_T.is_time,), "time of day"),
    ((_T.is_duration, _T.is_interval), "duration"),
    ((_T.is_boolean,), "true/false"),
    ((_T.is_list, _T.is_large_list, _T.is_fixed_size_list), "list"),
    ((_T.is_struct, _T.is_map), "object"),
    ((_T.is_binary, _T.is_large_binary, _T.is_fixed_size_binary), "bytes"),
    ((_T.is_null,), "empty"),
)


def friendly_type(arrow_type: pa.DataType) -> str:
    t = arrow_type
    if isinstance(t, pa.ExtensionType):
        return "json" if "json" in str(t.extension_name) else friendly_type(t.storage_type)
    for tests, word in _WORDS:
        if any(test(t) for test in tests):
            return word
    if pa.types.is_dictionary(t):
        return friendly_type(t.value_type)
    return str(t)
