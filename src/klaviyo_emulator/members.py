"""Group membership (lists and segments) as per-group column pairs.

Each group holds the member rows (profile indexes, in profile-id order) and
when each joined (``joined_group_at``). Many members of a group share a join
second (bulk imports), so paging by ``joined_group_at`` must break ties.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import ids
from .profiles import ProfileTable

S_MEMBER, S_JOIN, S_IMPORT = 300, 301, 302


@dataclass(frozen=True)
class Membership:
    """Members of one list or segment."""

    profiles: np.ndarray  # int64 profile rows, in profile-id order
    joined: np.ndarray  # int64 epoch seconds, aligned with ``profiles``

    def __len__(self) -> int:
        return len(self.profiles)

    def contains(self, profile_row: int) -> bool:
        return bool(np.any(self.profiles == profile_row))


def build_memberships(profiles: ProfileTable, fractions: list[float], stream: int) -> list[Membership]:
    """One Membership per group; group g takes about ``fractions[g]`` of all profiles."""
    seed = profiles.seed
    order = profiles.id_sort_order
    out = []
    for g, fraction in enumerate(fractions):
        s = stream + 10 * g
        rows = order[ids.unit(seed, S_MEMBER + s, order) < fraction]
        created = profiles.created[rows]
        span = (profiles.now - created).astype(np.float64)
        joined = created + (ids.unit(seed, S_JOIN + s, rows) ** 2 * span * 0.8).astype(np.int64)
        imports = profiles.now - (ids.unit(seed, S_IMPORT + s, np.arange(6)) * 300 * 86400).astype(np.int64)
        imported = ids.unit(seed, S_IMPORT + s + 1, rows) < 0.3
        pick = imports[ids.choice(seed, S_IMPORT + s + 2, rows, 6)]
        joined = np.where(imported, np.maximum(created, pick), joined)
        out.append(Membership(rows.astype(np.int64), joined.astype(np.int64)))
    return out
