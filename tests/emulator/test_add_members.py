"""``AccountState.add_members`` (with its append fast path) against the plain sorted-insert algorithm."""

from __future__ import annotations

import random

import numpy as np
import pytest

from klaviyo_emulator.data import build_account
from klaviyo_emulator.members import Membership
from klaviyo_emulator.settings import EmulatorSettings
from klaviyo_emulator.state import AccountState


def _state() -> AccountState:
    s = AccountState(build_account(EmulatorSettings(seed=5, profiles=120, events=0, lists=2, segments=0)))
    for i in range(60):
        s.upsert({"email": f"m{i}@x.org"}, 2000 + i)
    return s


def _reference(state: AccountState, m: Membership, rows, now: int) -> tuple[Membership, int]:
    """What add_members did before the fast path: unique, drop members, insert in id order."""
    rows = np.unique(np.asarray(rows, dtype=np.int64))
    rows = rows[~np.isin(rows, m.profiles)]
    if not len(rows):
        return m, 0
    ranks = state.id_rank(rows)
    order = np.argsort(ranks, kind="stable")
    rows, ranks = rows[order], ranks[order]
    at = np.searchsorted(state.id_rank(m.profiles), ranks)
    return Membership(np.insert(m.profiles, at, rows), np.insert(m.joined, at, np.full(len(rows), now, dtype=np.int64))), len(
        rows
    )


def _batch(rng: random.Random, s: AccountState) -> list[int]:
    kind = rng.choice(["new_run", "new_run", "base", "mixed", "dups", "reversed", "empty"])
    start = rng.randrange(s.base.count, s.count)
    run = list(range(start, min(s.count, start + rng.randint(1, 15))))
    if kind == "new_run":
        return run
    if kind == "base":
        return [rng.randrange(s.base.count) for _ in range(rng.randint(1, 10))]
    if kind == "mixed":
        return run + [rng.randrange(s.count) for _ in range(rng.randint(1, 5))]
    if kind == "dups":
        return run + run[:2]
    if kind == "reversed":
        return run[::-1]
    return []


@pytest.mark.parametrize("seed", range(30))
def test_add_members_matches_sorted_insert(seed):
    rng = random.Random(seed)
    s = _state()
    list_id = s.base.list_ids[seed % 2]
    seen = []  # every membership handed out, with a copy of its arrays: appends must not change them
    for step in range(16):
        before = s.account.list_members[list_id]
        if rng.random() < 0.15:
            gone = rng.sample(before.profiles.tolist(), min(3, len(before)))
            s.remove_members(list_id, np.array(gone, dtype=np.int64), 3000 + step)
            before = s.account.list_members[list_id]
        rows = _batch(rng, s)
        expected, added = _reference(s, before, rows, 3000 + step)
        version = s.version
        assert s.add_members(list_id, np.array(rows, dtype=np.int64), 3000 + step) == added
        got = s.account.list_members[list_id]
        assert got.profiles.tolist() == expected.profiles.tolist()
        assert got.joined.tolist() == expected.joined.tolist()
        assert s.version == version + (1 if added else 0)
        seen.append((got, got.profiles.tolist(), got.joined.tolist()))
    for m, profiles, joined in seen:
        assert m.profiles.tolist() == profiles and m.joined.tolist() == joined


def test_appends_reuse_room_and_fall_back_after_a_removal():
    s = _state()
    list_id = s.base.list_ids[0]
    new = list(range(s.base.count, s.count))
    s.add_members(list_id, np.array(new[:10], dtype=np.int64), 1)
    first = s.account.list_members[list_id]
    s.add_members(list_id, np.array(new[10:20], dtype=np.int64), 2)
    second = s.account.list_members[list_id]
    assert second.profiles.base is first.profiles.base  # appended in place, past the first's view
    assert first.profiles.tolist()[-10:] == new[:10] and len(second) == len(first) + 10
    s.remove_members(list_id, np.array(new[:1], dtype=np.int64), 3)
    s.add_members(list_id, np.array(new[20:30], dtype=np.int64), 4)
    third = s.account.list_members[list_id]
    assert third.profiles.base is not second.profiles.base and third.profiles.tolist()[-10:] == new[20:30]
    assert second.profiles.tolist()[-10:] == new[10:20]
