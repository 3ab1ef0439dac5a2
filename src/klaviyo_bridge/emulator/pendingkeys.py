"""Identifier keys of bulk-created profiles that are not in the exact index yet.

A bulk import of 10,000 new profiles used to insert each email and phone number
into a dict holding every key so far (a million after a 1M-row export), after
checking that none of them was there: two scattered dict probes per key, which
cost more than the rest of the job. Most such keys are never looked up again,
so ``AccountState`` keeps them here in batches, with the sorted 64-bit hashes of
all of them, and moves them into the dict only when something reads the index.
A new batch is then told disjoint from them with one vectorised search. Equal
hashes (a duplicate key, or very rarely a collision) only send the batch down
the exact, general path.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def sorted_hashes(keys: list[str]) -> np.ndarray | None:
    """``hash`` of each key, sorted; None if two are equal (a duplicate key, or a collision)."""
    h = np.fromiter(map(hash, keys), dtype=np.int64, count=len(keys))
    h.sort()
    if len(h) > 1 and (h[1:] == h[:-1]).any():
        return None
    return h


class PendingKeys:
    """Batches of (keys, rows) to add to one field's index dict, in order, and their hashes.

    The hashes are kept as a few sorted arrays of doubling sizes (merged like a binary
    counter), so adding a batch costs O(batch x log) amortised, not a copy of all of them.
    """

    def __init__(self) -> None:
        self.batches: list[tuple[list[str], Sequence[int]]] = []
        self.levels: list[np.ndarray] = []  # sorted hash arrays, sizes decreasing

    def may_hold(self, hashes: np.ndarray) -> bool:
        """False: none of the keys with these (sorted) hashes is pending; True may be a collision."""
        for level in self.levels:
            at = np.searchsorted(level, hashes)
            at[at == len(level)] = 0
            if (level[at] == hashes).any():
                return True
        return False

    def add(self, keys: list[str], rows: Sequence[int], hashes: np.ndarray) -> None:
        if not keys:
            return
        self.batches.append((keys, rows))
        levels = self.levels
        levels.append(hashes)
        while len(levels) > 1 and len(levels[-2]) <= len(levels[-1]):
            top = levels.pop()
            merged = np.concatenate([levels.pop(), top])
            merged.sort(kind="stable")  # timsort: two sorted runs merge in linear time
            levels.append(merged)

    def flush_into(self, index: dict[str, int]) -> None:
        """Add the batches to ``index`` as the eager ``update`` calls would have, in order."""
        for keys, rows in self.batches:
            index.update(zip(keys, rows))
        self.batches = []
        self.levels = []
