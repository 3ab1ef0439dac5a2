"""Turn validated conditions and a sort into the ordered rows a query selects.

Every collection is a *domain* of rows 0..n-1 with a fixed default order. A
condition becomes a boolean mask (vectorised; lookups like email invert to a
row), a sort becomes a permutation whose ties are broken by row, and the
selection is the permutation filtered by the mask, cached per query so paging
through a million rows costs O(page) per request. Offsets into this immutable
sequence make cursors exact: every record exactly once, however many share a
timestamp.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from .filters import Condition

NULL_TIME = -1


def time_mask(column: np.ndarray, cond: Condition) -> np.ndarray:
    """Compare an epoch-seconds column (NULL_TIME = missing) with a condition's datetime(s)."""
    present: np.ndarray = column != NULL_TIME
    op, v = cond.operator, cond.value
    hit: npt.NDArray[np.bool_]
    if op == "equals":
        hit = column == v
    elif op == "any":
        hit = np.isin(column, np.array(v))
    elif op == "greater-than":
        hit = column > v
    elif op == "greater-or-equal":
        hit = column >= v
    elif op == "less-than":
        hit = column < v
    elif op == "less-or-equal":
        hit = column <= v
    else:
        raise ValueError(op)
    return present & hit


def value_mask(values: Sequence[object], cond: Condition) -> np.ndarray:
    """Compare a small column of Python values (strings, bools) with a condition."""
    op, v = cond.operator, cond.value
    test: Callable[[object], bool]
    if op == "equals":
        test = lambda x: x == v  # noqa: E731
    elif op == "any":
        test = lambda x: x in v  # noqa: E731
    elif op == "contains":
        test = lambda x: isinstance(x, str) and v in x  # noqa: E731
    elif op == "starts-with":
        test = lambda x: isinstance(x, str) and x.startswith(v)  # noqa: E731
    elif op == "ends-with":
        test = lambda x: isinstance(x, str) and x.endswith(v)  # noqa: E731
    elif op in ("greater-than", "greater-or-equal", "less-than", "less-or-equal"):
        return time_mask(np.array([NULL_TIME if x is None else x for x in values], dtype=np.float64), cond)
    else:
        raise ValueError(op)
    return np.fromiter((test(x) for x in values), dtype=bool, count=len(values))


def lookup_mask(key_column: np.ndarray, cond: Condition, resolve: Callable[[str], int | None]) -> np.ndarray:
    """equals/any on an invertible field: resolve each value to a row, then match the key column."""
    values = cond.value if cond.operator == "any" else [cond.value]
    rows = [r for r in (resolve(v) for v in values if isinstance(v, str)) if r is not None]
    if not rows:
        return np.zeros(len(key_column), dtype=bool)
    return np.isin(key_column, np.array(rows, dtype=np.int64))


def order_by(key: np.ndarray, descending: bool) -> np.ndarray:
    """Stable permutation sorting ``key`` (numbers or strings); ties keep row order."""
    if key.dtype.kind in "USO":
        key = np.unique(key, return_inverse=True)[1]
    key = key.astype(np.int64, copy=False)
    return np.argsort(-key if descending else key, kind="stable")


class SelectionCache:
    """LRU of computed selections (int32/int64 row arrays), keyed by query fingerprint."""

    def __init__(self, capacity: int = 24) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()
        #: small rendered records (an events page's included metrics), valid as long as this cache:
        #: the emulator starts a new one whenever a write changes the account
        self.rendered: dict[tuple[str, tuple[str, ...] | None, int], bytes] = {}

    def get(self, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        rows = self._items.get(key)
        if rows is None:
            rows = compute()
            self._items[key] = rows
            if len(self._items) > self.capacity:
                self._items.popitem(last=False)
        else:
            self._items.move_to_end(key)
        return rows


def select(count: int, order: np.ndarray | None, masks: list[np.ndarray]) -> np.ndarray:
    """Rows in ``order`` (None = 0..count-1) that pass every mask."""
    rows = np.arange(count, dtype=np.int64) if order is None else order
    if not masks:
        return rows
    mask: np.ndarray = masks[0] if len(masks) == 1 else np.logical_and.reduce(masks)
    picked: np.ndarray = rows[mask[rows]]
    return picked
