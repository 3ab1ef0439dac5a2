"""Split prepared rows into request-sized batches: by count AND by payload bytes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Klaviyo's bulk import accepts 5 MB per request; keep room for the envelope.
MAX_BODY_BYTES = 5_000_000
ENVELOPE_BYTES = 512


@dataclass(frozen=True)
class Endpoint:
    """Where one operation's batches go and how big a batch may be."""

    operation_id: str
    max_items: int
    max_bytes: int = MAX_BODY_BYTES


def plan_batches(sizes: np.ndarray, endpoint: Endpoint) -> list[tuple[int, int]]:
    """[start, end) slices of the item list, each within the endpoint's count and byte limits.

    ``sizes`` are the JSON byte lengths of the items (each already under the per-item limit).
    """
    n = len(sizes)
    if n == 0:
        return []
    budget = endpoint.max_bytes - ENVELOPE_BYTES
    cost = sizes.astype(np.int64) + 1  # the comma between items
    slices = []
    start = 0
    while start < n:
        end = min(n, start + endpoint.max_items)
        cumulative = np.cumsum(cost[start:end])
        fits = int(np.searchsorted(cumulative, budget, side="right"))
        end = start + max(1, fits)
        slices.append((start, end))
        start = end
    return slices
