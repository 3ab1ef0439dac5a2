"""Split a time range into windows that can be fetched concurrently, losing nothing.

A single cursor-paged request stream is latency-bound (one page in flight); N
windows fetched side by side reach the rate limit instead. Windows are
half-open ``[start, end)`` so adjacent windows never share a record.

Klaviyo does not offer ``greater-or-equal`` on every field (profiles' ``updated``
and ``created`` only have greater-than / less-than), and many records can share
one timestamp. Where the exact operators are missing, the request asks for a
window widened by one second on both sides and the rows are then kept only if
``start <= value < end`` (``keep_mask``), so every record lands in exactly one
window whatever the server's timestamp precision.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.compute as pc

from ..api.query import Condition, greater_or_equal, greater_than, less_than

WIDEN = timedelta(seconds=1)


@dataclass(frozen=True)
class Window:
    """Half-open time range ``[start, end)``, both timezone-aware."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("window bounds must be timezone-aware")
        if self.end <= self.start:
            raise ValueError(f"empty window {self.start} .. {self.end}")


def split(start: datetime, end: datetime, parts: int) -> list[Window]:
    """``parts`` equal windows covering ``[start, end)`` exactly (microsecond bounds)."""
    if parts < 1:
        raise ValueError("parts must be >= 1")
    total_us = (end - start) // timedelta(microseconds=1)
    if total_us <= 0:
        return []
    parts = min(parts, total_us)
    bounds = [start + timedelta(microseconds=total_us * i // parts) for i in range(parts)] + [end]
    return [Window(a, b) for a, b in zip(bounds, bounds[1:])]


@dataclass(frozen=True)
class WindowFilter:
    """The filter terms for one window and whether rows must be trimmed afterwards."""

    conditions: tuple[Condition, ...]
    trim: bool


def window_filter(field: str, window: Window, allowed_ops: Sequence[str]) -> WindowFilter:
    """Exact terms when the field has ``greater-or-equal``; widened + trim otherwise."""
    if "greater-or-equal" in allowed_ops and "less-than" in allowed_ops:
        return WindowFilter((greater_or_equal(field, window.start), less_than(field, window.end)), trim=False)
    if "greater-than" in allowed_ops and "less-than" in allowed_ops:
        return WindowFilter(
            (greater_than(field, window.start - WIDEN), less_than(field, window.end + WIDEN)), trim=True
        )
    if "greater-than" in allowed_ops:
        # Lower bound only (lists, segments): the upper bound is enforced by trimming.
        return WindowFilter((greater_than(field, window.start - WIDEN),), trim=True)
    raise ValueError(f"field {field!r} cannot be windowed with operators {list(allowed_ops)}")


def keep_mask(values: pa.Array, window: Window) -> pa.Array:
    """True where ``start <= value < end`` (NULL timestamps are dropped: they belong to no window)."""
    start = pa.scalar(window.start.astimezone(timezone.utc), values.type)
    end = pa.scalar(window.end.astimezone(timezone.utc), values.type)
    mask = pc.and_(pc.greater_equal(values, start), pc.less(values, end))
    return pc.fill_null(mask, False)
