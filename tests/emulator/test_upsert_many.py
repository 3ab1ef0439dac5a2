"""``AccountState.upsert_many`` against one ``upsert`` per item, on randomized batches."""

from __future__ import annotations

import random

import numpy as np
import pytest

from klaviyo_emulator.data import build_account
from klaviyo_emulator.pendingkeys import HashSet, sorted_hashes
from klaviyo_emulator.settings import EmulatorSettings
from klaviyo_emulator.state import AccountState


def _state() -> AccountState:
    return AccountState(build_account(EmulatorSettings(seed=3, profiles=200, events=0, lists=2, segments=1)))


def _fingerprint(s: AccountState) -> dict:
    return {
        "blobs": list(s.new_blobs),
        "created": list(s.new_created),
        "updated": list(s.new_updated.items()),
        "changes": {k: list(v.items()) for k, v in s.changes.items()},
        "index": {f: list(ix.items()) for f, ix in s.index.items()},
        "version": s.version,
        "count": s.count,
    }


def _pools(s: AccountState, rng: random.Random):
    base = s.base
    emails = [base.email(r) for r in range(0, 200, 7)] + [f"user{i}@example.com" for i in range(12)]
    emails += [f"  {e.upper()} " for e in emails[:3]]
    phones = [p for p in (base.phone(r) for r in range(0, 200, 5)) if p] + [f"+44203000{i:04d}" for i in range(10)]
    exts = [x for x in (base.external_id(r) for r in range(0, 200, 3)) if x] + [f"ext-{i}" for i in range(8)]
    ids = [base.profile_id(r) for r in range(0, 200, 11)] + [s.new_id(base.count + k) for k in range(6)] + ["nope"]
    return emails, phones, exts, ids


def _item(rng: random.Random, pools) -> tuple[str | None, dict]:
    emails, phones, exts, ids = pools
    attrs: dict = {}
    for name, pool in (("email", emails), ("phone_number", phones), ("external_id", exts)):
        r = rng.random()
        if r < 0.45:
            attrs[name] = rng.choice(pool)
        elif r < 0.55:
            attrs[name] = None
        elif r < 0.6:
            attrs[name] = ""
    if rng.random() < 0.5:
        attrs["first_name"] = rng.choice(["Ann", "Bob", None])
    if rng.random() < 0.4:
        attrs["properties"] = {rng.choice("abc"): rng.randint(0, 9)}
    if rng.random() < 0.2:
        attrs["location"] = {rng.choice(["city", "zip"]): rng.choice(["X", "Y", None])}
    if rng.random() < 0.1:
        attrs["_kx"] = "kx"
    if not any(attrs.get(f) for f in ("email", "phone_number", "external_id")):
        attrs["email"] = rng.choice(emails)
    pid = rng.choice(ids) if rng.random() < 0.1 else None
    return pid, attrs


def _items(batch):
    return (
        [pid for pid, _ in batch],
        *([a.get(f) for _, a in batch] for f in ("email", "phone_number", "external_id")),
        [a for _, a in batch],
        [None] * len(batch),
    )


@pytest.mark.parametrize("seed", range(40))
def test_upsert_many_matches_one_by_one(seed):
    rng = random.Random(seed)
    one, many = _state(), _state()
    pools = _pools(one, rng)
    for b in range(4):
        size = rng.choice([1, 5, 30, 120])
        if rng.random() < 0.5:  # a batch of fresh identifiers: the bulk create path
            batch = [
                (None, {"email": f"fresh{seed}-{b}-{i}@x.org", "phone_number": f"+4479{seed:03d}{b}{i:05d}", "last_name": "L"})
                for i in range(size)
            ]
        else:
            batch = [_item(rng, pools) for _ in range(size)]
        rows_one = [one.upsert(dict(a), 1000 + b, pid)[0] for pid, a in batch]
        rows_many = many.upsert_many(*_items([(pid, dict(a)) for pid, a in batch]), 1000 + b)
        assert rows_one == rows_many
        assert _fingerprint(one) == _fingerprint(many)
        for f in ("email", "phone_number", "external_id"):
            for v in pools[{"email": 0, "phone_number": 1, "external_id": 2}[f]]:
                assert one.row_for(f, v) == many.row_for(f, v)


def test_bulk_create_path_taken_and_declined():
    s = _state()
    fresh = [(None, {"email": f"a{i}@x.org", "phone_number": f"+4479000{i:05d}"}) for i in range(50)]
    assert s._create_all(*_items(fresh), now=5) is not None
    again = _state()
    dup = fresh + [(None, {"email": "A0@x.org "})]
    assert again._create_all(*_items(dup), now=5) is None  # duplicate email key inside the batch
    base_email = (None, {"email": again.base.email(3)})
    assert again._create_all(*_items([base_email]), now=5) is None
    with_id = (again.base.profile_id(4), {"first_name": "x"})
    assert again._create_all(*_items([with_id]), now=5) is None


@pytest.mark.parametrize("seed", range(10))
def test_bulk_batches_against_pending_keys(seed):
    """Fresh batches whose keys reach back into earlier, not yet indexed, batches (a repeated email,
    phone or the same key in another case) match what those created, as one-by-one upserts do."""
    rng = random.Random(seed)
    one, many = _state(), _state()
    made: list[dict] = []
    for b in range(6):
        batch = []
        for i in range(rng.choice([1, 20, 200])):
            attrs = {"email": f"p{seed}-{b}-{i}@x.org", "phone_number": f"+4479{seed:02d}{b}{i:05d}", "first_name": f"F{b}"}
            if made and rng.random() < (0.02 if b % 2 else 0.0):
                old = rng.choice(made)
                key = rng.choice(["email", "phone_number", "upper"])
                attrs = {**attrs, **({"email": old["email"].upper()} if key == "upper" else {key: old[key]})}
            batch.append((None, attrs))
        made += [a for _, a in batch]
        rows_one = [one.upsert(dict(a), 1000 + b)[0] for _, a in batch]
        assert many.upsert_many(*_items([(None, dict(a)) for _, a in batch]), 1000 + b) == rows_one
    assert _fingerprint(one) == _fingerprint(many)


@pytest.mark.parametrize("seed", range(5))
def test_hash_set_answers_as_a_set(seed):
    """No false "absent": every added hash is found, through growth, full slots (narrow hashes
    share slots) and a hash of 0 (the empty-slot marker)."""
    rng = np.random.default_rng(seed)
    hashes, added = HashSet(), set()
    for size in [1, 3, 10, 10, 100, 7, 1000, 2, 50, 3000]:
        wide = rng.integers(-(2**63), 2**63 - 1, size, dtype=np.int64)
        narrow = rng.integers(0, 2**40, size, dtype=np.int64)  # top bits 0: one slot for all
        fresh = np.array(
            sorted({*wide.tolist(), *narrow[: size // 3].tolist(), *([0] if size == 7 else [])} - added), dtype=np.int64
        )
        assert not hashes.any_of(fresh[fresh != 0])
        hashes.add(fresh)
        added |= set(fresh.tolist())
        probe = sorted(added)
        assert all(hashes.any_of(np.array(probe[i : i + 1], dtype=np.int64)) for i in range(0, len(probe), 3))
        others = np.unique(rng.integers(-(2**63), 2**63 - 1, 500, dtype=np.int64))
        assert hashes.any_of(others) == bool(set(others.tolist()) & added)
    assert hashes.count == len(added) and 2 * hashes.count <= len(hashes.table)


def test_sorted_hashes_flags_repeats():
    assert sorted_hashes(["a", "b", "a"]) is None and list(sorted_hashes(["b", "a"])) == sorted([hash("a"), hash("b")])


@pytest.mark.parametrize("seed", range(5))
def test_rows_for_identifiers_is_one_lookup_per_value(seed):
    rng = random.Random(seed)
    base = _state().base
    pool = [base.email(r) for r in range(0, 200, 9)] + [f"user{i}@example.com" for i in range(30)] + ["a.b@c.d", "x.y1@"]
    keys = [e.strip().lower() for e in rng.sample(pool, rng.randint(0, 12))]
    phones = [p for p in (base.phone(r) for r in range(0, 200, 13)) if p][: rng.randint(0, 3)] + ["+442030000000"]
    exts = [x for x in (base.external_id(r) for r in range(0, 200, 17)) if x][: rng.randint(0, 3)] + ["cust_x"]
    expected = [
        (f, row)
        for f, values, find in (
            ("email", keys, base.row_for_email),
            ("phone_number", phones, base.row_for_phone),
            ("external_id", exts, base.row_for_external_id),
        )
        for row in map(find, values)
        if row is not None
    ]
    assert base.rows_for_identifiers(keys, phones, exts) == expected
