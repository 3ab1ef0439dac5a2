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
    """Half-open time range ``[start, end)``, timezone-aware; ``None`` leaves that side open."""

    start: datetime | None
    end: datetime | None

    def __post_init__(self) -> None:
        for bound in (self.start, self.end):
            if bound is not None and bound.tzinfo is None:
                raise ValueError("window bounds must be timezone-aware")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError(f"empty window {self.start} .. {self.end}")


def split(start: datetime, end: datetime, parts: int, *, open_start: bool = False, open_end: bool = False) -> list[Window]:
    """``parts`` equal windows covering ``[start, end)`` exactly (microsecond bounds).

    ``open_start``/``open_end`` drop the outer bounds, so a full load also gets records
    stamped before the oldest one seen or after "now" (clock skew, late writes).
    """
    if parts < 1:
        raise ValueError("parts must be >= 1")
    total_us = (end - start) // timedelta(microseconds=1)
    if total_us <= 0:
        return [Window(None, None)] if open_start and open_end else []
    parts = min(parts, total_us)
    bounds: list[datetime | None] = [start + timedelta(microseconds=total_us * i // parts) for i in range(parts)]
    bounds.append(end)
    if open_start:
        bounds[0] = None
    if open_end:
        bounds[-1] = None
    return [Window(a, b) for a, b in zip(bounds, bounds[1:])]


@dataclass(frozen=True)
class WindowFilter:
    """The filter terms for one window and whether rows must be trimmed afterwards."""

    conditions: tuple[Condition, ...]
    trim: bool


def window_filter(field: str, window: Window, allowed_ops: Sequence[str]) -> WindowFilter:
    """Exact terms when the field has ``greater-or-equal``; widened + trim otherwise."""
    lower: tuple[Condition, ...] = ()
    upper: tuple[Condition, ...] = ()
    trim = False
    if window.start is not None:
        if "greater-or-equal" in allowed_ops:
            lower = (greater_or_equal(field, window.start),)
        elif "greater-than" in allowed_ops:
            lower, trim = (greater_than(field, window.start - WIDEN),), True
        else:
            raise ValueError(f"field {field!r} cannot be windowed with operators {list(allowed_ops)}")
    if window.end is not None:
        if "less-than" in allowed_ops:
            upper = (less_than(field, window.end + WIDEN if trim else window.end),)
        else:
            trim = True  # no upper operator (lists, segments): enforced by trimming
    return WindowFilter((*lower, *upper), trim)


def keep_mask(values: pa.Array, window: Window) -> pa.Array:
    """True where ``start <= value < end`` (NULL timestamps are dropped: they belong to no bounded window)."""
    mask = pc.is_valid(values)
    if window.start is not None:
        mask = pc.and_(mask, pc.greater_equal(values, pa.scalar(window.start.astimezone(timezone.utc), values.type)))
    if window.end is not None:
        mask = pc.and_(mask, pc.less(values, pa.scalar(window.end.astimezone(timezone.utc), values.type)))
    return pc.fill_null(mask, False)
