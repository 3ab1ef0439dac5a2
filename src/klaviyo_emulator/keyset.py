"""Keyset cursors: a page cursor names the last item it passed, by its sort key and tie.

A selection is an array of domain rows ordered by (sort key, tie), each ascending or
descending. A cursor made after the item at position p-1 keeps that item's (key, tie).
While the account's data version is unchanged, the selection is the same and the cursor's
position is exact (the hot path: no search). After a write (profiles created or updated,
members added or removed, lists created) the selection is recomputed and the next page
starts at the first item ordered after the cursor's (key, tie): no record is skipped, and
no unchanged record is served twice (a record whose sort key changed moves, as at Klaviyo).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .query import Cursor


@dataclass(frozen=True)
class Keyset:
    """How a selection is ordered: ``values(rows)`` gives the (keys, ties) of domain rows, either
    numpy arrays or (for small collections) lists of comparable Python values."""

    values: Callable[[np.ndarray], tuple[Any, Any]]
    key_descending: bool = False
    tie_descending: bool = False


def by_row(descending: bool = False) -> Keyset:
    """Append-only domains ordered by row (events by datetime, jobs, import errors)."""
    return Keyset(lambda rows: (rows, rows), descending, descending)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def cursor_after(rows: np.ndarray, position: int, version: int, keyset: Keyset) -> Cursor:
    """The cursor of a page starting at ``position`` of ``rows``."""
    if position <= 0:
        return Cursor(0, version)
    keys, ties = keyset.values(rows[position - 1 : position])
    return Cursor(position, version, _plain(keys[0]), _plain(ties[0]))


def locate(rows: np.ndarray, cursor: Cursor | None, version: int, keyset: Keyset) -> int:
    """Position in ``rows`` of the first item after the cursor's item."""
    if cursor is None or cursor.position == 0:
        return 0
    if cursor.version == version:
        return min(cursor.position, len(rows))
    if not len(rows):
        return 0
    keys, ties = keyset.values(rows)
    lk, lt = cursor.key, cursor.tie
    if isinstance(keys, np.ndarray):
        beyond_key = keys < lk if keyset.key_descending else keys > lk
        beyond_tie = ties < lt if keyset.tie_descending else ties > lt
        after = beyond_key | ((keys == lk) & beyond_tie)
        return int(np.argmax(after)) if after.any() else len(rows)
    for i, (k, t) in enumerate(zip(keys, ties)):
        if (k < lk if keyset.key_descending else k > lk) or (k == lk and (t < lt if keyset.tie_descending else t > lt)):
            return i
    return len(rows)
