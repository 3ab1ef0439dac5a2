"""The vectorised id/uuid/timestamp builders must match the scalar ones exactly (responses are compared byte for byte)."""

import numpy as np

from klaviyo_emulator import ids
from klaviyo_emulator.timefmt import iso, iso_many


def test_ulids_match_scalar_ulid():
    rng = np.random.default_rng(7)
    ms, tag, idx = rng.integers(0, 2**48, 2000), rng.integers(0, 2**40, 2000), rng.integers(0, 2**31, 2000)
    key = ids.index_key(3, 100)
    assert ids.ulids(ms, tag, idx, key).astype("U26").tolist() == [
        ids.ulid(int(m), int(t), int(i), key) for m, t, i in zip(ms, tag, idx)
    ]


def test_uuids_match_scalar_uuid():
    hi, lo = ids.mix(1, 2, np.arange(2000)), ids.mix(1, 3, np.arange(2000))
    assert ids.uuids(hi, lo).astype("U36").tolist() == [ids.uuid_from_bits(int(h), int(l)) for h, l in zip(hi, lo)]


def test_iso_many_matches_iso_and_keeps_missing():
    seconds = np.concatenate([[-1, 0, 5], np.random.default_rng(2).integers(0, 4_000_000_000, 2000)])
    assert iso_many(seconds) == [iso(int(s)) for s in seconds]
