"""Identifier keys of bulk-created profiles that are not in the exact index yet.

A bulk import of 10,000 new profiles used to insert each email and phone number
into a dict holding every key so far (a million after a 1M-row export), after
checking that none of them was there: two scattered dict probes per key, which
cost more than the rest of the job. Most such keys are never looked up again,
so ``AccountState`` keeps them here in batches, with the 64-bit hashes of all of
them in a set numpy can probe a batch at a time, and moves them into the dict only
when something reads the index. Equal hashes (a duplicate key, or very rarely a
collision) only send the batch down the exact, general path.
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
    """Batches of (keys, rows) to add to one field's index dict, in order, and their hashes."""

    def __init__(self) -> None:
        self.batches: list[tuple[tuple[str, ...], Sequence[int]]] = []
        self.hashes = HashSet()

    def may_hold(self, hashes: np.ndarray) -> bool:
        """False: none of the keys with these hashes is pending; True may be a collision."""
        return self.hashes.any_of(hashes)

    def add(self, keys: list[str], rows: Sequence[int], hashes: np.ndarray) -> None:
        if keys:
            # Tuples of strs and ints: the garbage collector untracks them after one look (a list of a
            # million keys would be walked on every full collection).
            self.batches.append((tuple(keys), rows if isinstance(rows, range) else tuple(rows)))
            self.hashes.add(hashes)

    def flush_into(self, index: dict[str, int]) -> None:
        """Add the batches to ``index`` as the eager ``update`` calls would have, in order."""
        for keys, rows in self.batches:
            index.update(zip(keys, rows))
        self.batches = []
        self.hashes = HashSet()


class HashSet:
    """A set of int64 hashes asked about a batch at a time (vectorised, one probe per value).

    Each hash lives in the table slot its top bits name (0 marks an empty slot; the table
    is kept at most half full) or, when that slot was taken, in ``spill``: sorted arrays of
    doubling sizes, merged like a binary counter. Slots are never emptied, so a spilled hash
    always finds its slot taken and is looked for in ``spill`` only then.
    """

    def __init__(self, bits: int = 10) -> None:
        self._empty(bits)

    def _empty(self, bits: int) -> None:
        self.table = np.zeros(1 << bits, dtype=np.int64)
        self.shift = np.uint64(64 - bits)
        self.spill: list[np.ndarray] = []  # sorted arrays, sizes decreasing
        self.count = 0

    def _slots(self, hashes: np.ndarray) -> np.ndarray:
        return (hashes.view(np.uint64) >> self.shift).astype(np.intp)

    def any_of(self, hashes: np.ndarray) -> bool:
        """Whether any of ``hashes`` is in the set."""
        if not self.count or not len(hashes):
            return False
        held = self.table[self._slots(hashes)]
        if (held == hashes).any():  # also an unheld 0 in an empty slot: a harmless "maybe"
            return True
        taken = hashes[held != 0]
        return any(_sorted_has_any(level, taken) for level in self.spill) if len(taken) else False

    def add(self, hashes: np.ndarray) -> None:
        """Add distinct hashes that are not in the set yet."""
        if 2 * (self.count + len(hashes)) > len(self.table):
            self._grow(self.count + len(hashes))
        slots = self._slots(hashes)
        free = (self.table[slots] == 0) & (hashes != 0)
        self.table[slots[free]] = hashes[free]  # of several for one free slot, one lands: read back which
        placed = (self.table[slots] == hashes) & (hashes != 0)
        self._spill(np.sort(hashes[~placed]))
        self.count += len(hashes)

    def _spill(self, hashes: np.ndarray) -> None:
        if not len(hashes):
            return
        levels = self.spill
        levels.append(hashes)
        while len(levels) > 1 and len(levels[-2]) <= len(levels[-1]):
            top = levels.pop()
            merged = np.concatenate([levels.pop(), top])
            merged.sort(kind="stable")  # timsort: two sorted runs merge in linear time
            levels.append(merged)

    def _grow(self, count: int) -> None:
        everything = np.concatenate([self.table[self.table != 0], *self.spill])
        self._empty(max(10, (4 * count - 1).bit_length()))
        self.add(everything)


def _sorted_has_any(haystack: np.ndarray, needles: np.ndarray) -> bool:
    at = np.searchsorted(haystack, needles)
    at[at == len(haystack)] = 0
    return bool((haystack[at] == needles).any())
