"""A run with start_time and end_time keeps exactly the records whose time field is in [start, end),
for every source and time field: each source's filter operators differ (greater-than only for lists
and segments, greater-than/less-than for profiles, exact bounds elsewhere), so each takes its own
path of filters and trimming. The bounds are records' own timestamps, so both edges are exercised.
"""

from __future__ import annotations

from datetime import datetime

import pytest

from klaviyo_bridge.imports.runner import run_import

from .conftest import make_config
from .test_import_values import expected_documents
from .test_runner import NOW

CASES = [
    ("events", "created", "datetime"),
    ("templates", "created", "created"),
    ("templates", "updated", "updated"),
    ("campaigns", "created", "created_at"),
    ("campaigns", "updated", "updated_at"),
    ("lists", "created", "created"),
    ("lists", "updated", "updated"),
    ("segments", "created", "created"),
    ("segments", "updated", "updated"),
    ("flows", "created", "created"),
    ("flows", "updated", "updated"),
    ("profiles", "created", "created"),
    ("profiles", "updated", "updated"),
]


@pytest.mark.parametrize("data_source, field, attribute", CASES)
async def test_time_range_keeps_exactly_the_records_in_it(transport, warehouse, data_source, field, attribute):
    documents = await expected_documents(transport, data_source, {})
    stamps = {r["id"]: datetime.fromisoformat(r["attributes"][attribute]) for r, _, _ in documents}
    ordered = sorted(stamps.values())
    lo, hi = ordered[len(ordered) // 4], ordered[3 * len(ordered) // 4]
    assert lo < hi
    cfg = make_config(data_source, incremental_field=field, start_time=lo.isoformat(), end_time=hi.isoformat())
    result = await run_import(cfg, warehouse, "klaviyo", "t", transport=transport, now=NOW, windows=4)
    ids = warehouse.table_arrow("klaviyo", "t").column("id").to_pylist()
    expected = {i for i, t in stamps.items() if lo <= t < hi}
    assert len(ids) == len(set(ids)) == result.rows
    assert set(ids) == expected
