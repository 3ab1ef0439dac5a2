"""The column-at-a-time profile builder writes exactly what orjson writes for the same profile."""

from __future__ import annotations

import datetime as dt
import decimal
import random

import numpy as np
import orjson
import pyarrow as pa
import pytest

from klaviyo_bridge.exports.ops.add import LOCATION_FIELDS, PROFILE_FIELDS, prepare_add
from klaviyo_bridge.exports.payloads import Payloads, build_profiles
from klaviyo_bridge.exports.settings import parse_export_settings

SETTINGS = parse_export_settings(
    {
        "type": "klaviyo",
        "api_token": "pk_" + "0123456789abcdef" * 2 + "00",
        "operation": "add",
        "list_identify_type": "id",
        "list_value": "L1",
        "skip_invalid_records": True,
    }
)


def _reference(table: pa.Table) -> list[bytes]:
    """One dict per row dumped by orjson: the builder's contract."""
    out = []
    for row in table.to_pylist():
        attrs, location, props = {}, {}, {}
        for name, value in row.items():
            if value is None:
                continue
            (attrs if name in PROFILE_FIELDS else location if name in LOCATION_FIELDS else props)[name] = value
        if location:
            attrs["location"] = location
        if props:
            attrs["properties"] = props
        out.append(orjson.dumps({"type": "profile", "attributes": attrs}, default=str))
    return out


def _split(table: pa.Table):
    groups = {"a": [], "l": [], "p": []}
    for name in table.column_names:
        key = "a" if name in PROFILE_FIELDS else "l" if name in LOCATION_FIELDS else "p"
        groups[key].append((name, table.column(name).combine_chunks()))
    return groups["a"], groups["l"], groups["p"]


def test_awkward_values_match_orjson_byte_for_byte():
    table = pa.table(
        {
            "email": ["a@x.com", 'quote"d@x.com', "c@x.com", "back\\slash@x.com"],
            "first_name": ["tab\there", None, "uni ✓ \u2028 é", "\x01ctl"],
            "city": [None, "Paris", None, "new\nline"],
            "score": [1.5, None, float("nan"), 1e20],
            "points": pa.array([1, None, -3, 2**40], pa.int64()),
            "vip": [True, False, None, True],
            "seen": pa.array([dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc), None, None, None], pa.timestamp("us", tz="UTC")),
            "amount": pa.array([decimal.Decimal("1.50"), None, None, None]),
            "tags": pa.array([["a", "b"], None, [], ['c"']]),
            "empty": pa.array([None, None, None, None], pa.null()),
        }
    )
    built = Payloads(build_profiles(*_split(table), default=str))
    assert list(built) == _reference(table)
    for item in built:
        orjson.loads(item)  # valid JSON


def test_random_strings_match_orjson():
    rng = random.Random(7)
    alphabet = 'ab"\\\n\t\x02✓é x{}:,'

    def text():
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 10))) if rng.random() < 0.7 else None

    table = pa.table(
        {
            "email": [f"u{i}@x.com" for i in range(3000)],
            "last_name": [text() for _ in range(3000)],
            "zip": [text() for _ in range(3000)],
            "tier": [text() for _ in range(3000)],
        }
    )
    assert list(Payloads(build_profiles(*_split(table), default=str))) == _reference(table)


def test_sliced_and_large_string_columns_match_orjson():
    """Columns that start inside their buffers (slices), large strings, and escapes only near the end."""
    rng = random.Random(11)
    names = [f"n{i}" + ('"' if rng.random() < 0.01 else "") for i in range(2000)] + ["tail\\", None, "end\n"]
    table = pa.table(
        {"email": [f"u{i}@x.com" for i in range(len(names))], "first_name": names, "city": pa.array(names, pa.large_string())}
    ).slice(1500)
    attrs = [("email", table.column("email").chunk(0)), ("first_name", table.column("first_name").chunk(0))]
    built = Payloads(build_profiles(attrs, [("city", table.column("city").chunk(0))], [], default=str))
    assert attrs[1][1].offset == 1500
    assert list(built) == _reference(table)


def test_payload_slices_sizes_and_filter_share_the_array():
    items = Payloads.of([b'{"a":1}', b'{"b":22}', b'{"c":333}'])
    assert list(items.sizes()) == [7, 8, 9]
    assert list(items[1:].sizes()) == [8, 9]
    assert bytes(items[1:].joined()) == b'{"b":22},{"c":333}'
    assert bytes(items[3:].joined()) == b""
    assert list(items.filter(np.array([True, False, True]))) == [b'{"a":1}', b'{"c":333}']
    assert items[2] == b'{"c":333}' and len(items[5:]) == 0


@pytest.mark.parametrize("rows", [0, 1, 2500])
def test_prepare_add_items_are_one_per_valid_row(rows):
    table = pa.table(
        {
            "email": [f"user{i}@example.com" if i % 7 else "broken" for i in range(rows)],
            "first_name": [f"F{i}" if i % 3 else None for i in range(rows)],
        }
    )
    p = prepare_add(table, SETTINGS)
    assert len(p.items) == len(p.row_index) == sum(1 for i in range(rows) if i % 7)
    assert list(p.items) == _reference(table.take(pa.array(p.row_index)))
