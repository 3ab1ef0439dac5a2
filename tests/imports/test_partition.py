"""Windows cover the range exactly; widened windows plus trimming keep each record once."""

from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest

from klaviyo_bridge.imports.columns import TIMESTAMP
from klaviyo_bridge.imports.partition import Window, keep_mask, split, window_filter

UTC = timezone.utc
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def test_split_covers_the_range_without_gaps_or_overlap():
    windows = split(T0, T0 + timedelta(days=7, microseconds=3), 5)
    assert windows[0].start == T0 and windows[-1].end == T0 + timedelta(days=7, microseconds=3)
    assert all(a.end == b.start for a, b in zip(windows, windows[1:]))
    assert len(windows) == 5


def test_split_of_an_empty_or_tiny_range():
    assert split(T0, T0, 4) == []
    assert len(split(T0, T0 + timedelta(microseconds=2), 10)) == 2


def test_exact_operators_are_used_when_available():
    wf = window_filter("datetime", Window(T0, T0 + timedelta(hours=1)), ["greater-or-equal", "less-than", "greater-than"])
    assert not wf.trim
    assert [c.render() for c in wf.conditions] == [
        "greater-or-equal(datetime,2024-01-01T00:00:00+00:00)",
        "less-than(datetime,2024-01-01T01:00:00+00:00)",
    ]


def test_strict_only_operators_widen_and_trim():
    wf = window_filter("updated", Window(T0, T0 + timedelta(hours=1)), ["greater-than", "less-than"])
    assert wf.trim
    assert [c.render() for c in wf.conditions] == [
        "greater-than(updated,2023-12-31T23:59:59+00:00)",
        "less-than(updated,2024-01-01T01:00:01+00:00)",
    ]


def test_records_on_a_shared_boundary_land_in_exactly_one_window():
    boundary = T0 + timedelta(hours=1)
    stamps = pa.array([T0, boundary, boundary, boundary, boundary + timedelta(seconds=0.5), None], TIMESTAMP)
    first, second = Window(T0, boundary), Window(boundary, boundary + timedelta(hours=1))
    a, b = keep_mask(stamps, first).to_pylist(), keep_mask(stamps, second).to_pylist()
    assert a == [True, False, False, False, False, False]
    assert b == [False, True, True, True, True, False]


def test_lower_bound_only_fields_trim_the_upper_end():
    wf = window_filter("created", Window(T0, T0 + timedelta(hours=1)), ["greater-than"])
    assert wf.trim and [c.render() for c in wf.conditions] == ["greater-than(created,2023-12-31T23:59:59+00:00)"]


def test_unwindowable_field_is_refused():
    with pytest.raises(ValueError, match="cannot be windowed"):
        window_filter("name", Window(T0, T0 + timedelta(hours=1)), ["equals", "any"])
