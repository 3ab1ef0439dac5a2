"""Per-collection filtering and ordering: which mask a condition makes, which
permutation a sort makes. Orders are computed once per account and kept.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from . import vocabulary as V
from .catalog import Record, ordered_records
from .data import Account
from .filters import Condition
from .keyset import Keyset
from .members import Membership
from .selection import lookup_mask, order_by, time_mask, value_mask
from .state import LiveProfiles

LIST_SUPPRESSION = "subscriptions.email.marketing.list_suppressions."
SUPPRESSION = "subscriptions.email.marketing.suppression."


class Orders:
    """Cached sort permutations of one account's big collections."""

    def __init__(self, account: Account) -> None:
        self.account = account
        self._cache: dict[tuple[object, ...], np.ndarray] = {}

    def _get(self, key: tuple[object, ...], compute: Callable[[], np.ndarray]) -> np.ndarray:
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def profiles(self, sort: str | None) -> np.ndarray | None:
        p = self.account.profiles
        name, desc = (sort or "id").lstrip("-"), (sort or "").startswith("-")
        if name == "created" and not desc:
            return None  # rows are in creation order already
        if name == "id":
            return self._get(("profile", "id", desc), lambda: p.id_sort_order[::-1].copy() if desc else p.id_sort_order)
        columns = {
            "created": lambda: p.created,
            "updated": lambda: p.updated,
            "email": lambda: p.email_sort_key,
            LIST_SUPPRESSION + "timestamp": lambda: _nulls_last(p.list_suppression_ts),
            SUPPRESSION + "timestamp": lambda: _nulls_last(p.suppression_ts),
        }
        return self._get(("profile", name, desc), lambda: order_by(columns[name](), desc))

    def _profile_key_column(self, name: str) -> np.ndarray:
        p = self.account.profiles
        if name == "id":
            return self._get(
                ("profile", "id-rank", p.count),
                lambda: (
                    p.state.id_rank(np.arange(p.count, dtype=np.int64)) if isinstance(p, LiveProfiles) else _rank(p.id_sort_order)
                ),
            )
        return {
            "created": lambda: p.created,
            "updated": lambda: p.updated,
            "email": lambda: p.email_sort_key,
            LIST_SUPPRESSION + "timestamp": lambda: _nulls_last(p.list_suppression_ts),
            SUPPRESSION + "timestamp": lambda: _nulls_last(p.suppression_ts),
        }[name]()

    def profile_keyset(self, sort: str | None) -> Keyset:
        """Profiles are ordered by the sort column, ties by row (the id sort has no ties)."""
        name, desc = (sort or "id").lstrip("-"), (sort or "").startswith("-")
        return Keyset(lambda rows: (self._profile_key_column(name)[rows], rows), desc, False)

    def member_keyset(self, members: Membership, sort: str | None) -> Keyset:
        """Members are in profile-id order; sorted by joined_group_at, ties in profile-id order."""

        def ranks(rows: np.ndarray) -> np.ndarray:
            rank: np.ndarray = self._profile_key_column("id")[members.profiles[rows]]
            return rank

        if sort is None:
            return Keyset(lambda rows: (ranks(rows), ranks(rows)))
        return Keyset(lambda rows: (members.joined[rows], ranks(rows)), sort.startswith("-"), False)

    @staticmethod
    def record_keyset(records: list[Record], sort: str | None) -> Keyset:
        """Small collections: by the sort value (None last), ties by creation; descending reverses both."""
        name = sort.lstrip("-") if sort else None

        def values(rows: np.ndarray) -> tuple[list[Any], list[int]]:
            idx: list[int] = rows.tolist()
            if name is None:
                return idx, idx
            keys = [(records[i].values.get(name) is None, records[i].values.get(name) or 0) for i in idx]
            return keys, idx

        desc = bool(sort and sort.startswith("-"))
        return Keyset(values, desc, desc)

    def members(self, group_id: str, members: Membership, sort: str | None) -> np.ndarray | None:
        if sort is None:
            return None
        return self._get(("members", group_id, sort), lambda: order_by(members.joined, sort.startswith("-")))

    def events(self, sort: str | None) -> np.ndarray | None:
        e = self.account.events
        if not e.sorted_by_row:
            # events written with a time in the past: datetime order, ties by row
            asc = self._get(("event", "asc"), lambda: np.argsort(e.datetime, kind="stable").astype(np.int64))
            if sort is None or not sort.startswith("-"):
                return asc
            return self._get(("event", "desc"), lambda: asc[::-1].copy())
        if sort is None or not sort.startswith("-"):
            return None  # rows are in datetime order already (datetime and timestamp agree)
        return self._get(("event", "desc"), lambda: np.arange(self.account.events.count - 1, -1, -1, dtype=np.int64))

    @staticmethod
    def records(records: list[Record], sort: str | None) -> np.ndarray | None:
        if sort is None:
            return None
        order = ordered_records(records, sort.lstrip("-"))
        return order[::-1].copy() if sort.startswith("-") else order


def _rank(order: np.ndarray) -> np.ndarray:
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order), dtype=np.int64)
    return rank


def _nulls_last(column: np.ndarray) -> np.ndarray:
    return np.where(column < 0, np.iinfo(np.int64).max, column)


def profile_mask(account: Account, cond: Condition, rows: np.ndarray | None, joined: np.ndarray | None = None) -> np.ndarray:
    """Mask over a profile domain: all profiles (rows None) or a group's member rows."""
    p = account.profiles
    key = np.arange(p.count, dtype=np.int64) if rows is None else rows

    def col(column: np.ndarray) -> np.ndarray:
        return column if rows is None else column[rows]

    f = cond.field
    lookups = {
        "email": p.row_for_email,
        "phone_number": p.row_for_phone,
        "external_id": p.row_for_external_id,
        "id": p.row_for_id,
        "profile_id": p.row_for_id,
        "_kx": p.row_for_exchange_id,
    }
    if f in lookups:
        return lookup_mask(key, cond, lookups[f])
    if f == "push_token":
        return np.zeros(len(key), dtype=bool)  # no profile in the synthetic account has a push token
    if f in ("created", "updated"):
        return time_mask(col(p.created if f == "created" else p.updated), cond)
    if f == "joined_group_at":
        if joined is None:
            raise KeyError("joined_group_at filters only a group's members")
        return time_mask(joined, cond)
    if f == LIST_SUPPRESSION + "list_id":
        index = account.profiles.list_ids.index(cond.value) if cond.value in account.profiles.list_ids else -2
        listed: np.ndarray = col(p.list_suppression_list) == index
        return listed
    if f == LIST_SUPPRESSION + "reason":
        suppressed: np.ndarray = (col(p.list_suppression_list) >= 0) & (cond.value == "USER_SUPPRESSED")
        return suppressed
    if f == LIST_SUPPRESSION + "timestamp":
        return time_mask(col(p.list_suppression_ts), cond)
    if f == SUPPRESSION + "reason":
        code = V.SUPPRESSION_REASONS.index(cond.value) if cond.value in V.SUPPRESSION_REASONS else -2
        reason: np.ndarray = col(p.suppression_reason) == code
        return reason
    if f == SUPPRESSION + "timestamp":
        return time_mask(col(p.suppression_ts), cond)
    raise KeyError(f"no profile filter for {f!r}")


def event_mask(account: Account, cond: Condition) -> np.ndarray:
    e = account.events
    f = cond.field
    if f in ("datetime", "timestamp"):
        return time_mask(e.datetime, cond)
    if f in ("metric", "profile"):  # has(...): every event has both
        return np.ones(e.count, dtype=bool)
    values = cond.value if cond.operator == "any" else [cond.value]
    if f == "metric_id":
        ids = [r.id for r in account.records["metric"]]
        return np.isin(e.metric, np.array([ids.index(v) for v in values if v in ids] or [-2]))
    if f == "profile_id":
        rows = [r for r in map(account.profiles.row_for_id, values) if r is not None]
        return np.isin(e.profile, np.array(rows or [-2]))
    raise KeyError(f"no event filter for {f!r}")


def record_mask(records: list[Record], cond: Condition) -> np.ndarray:
    return value_mask([r.values.get(cond.field) for r in records], cond)
