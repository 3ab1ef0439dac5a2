"""Kept per-block columns give exactly what computing them gives, across blocks, widths and writes."""

import numpy as np
import orjson

import klaviyo_spec as spec
from klaviyo_emulator.app import Emulator
from klaviyo_emulator.blockcache import BLOCK, BlockColumn
from klaviyo_emulator.pages import events_page, profiles_page
from klaviyo_emulator.query import parse_query
from klaviyo_emulator.resources import Renderer
from klaviyo_emulator.settings import EmulatorSettings


def test_block_column_equals_compute_across_blocks_and_widths():
    calls = []

    def compute(rows: np.ndarray) -> np.ndarray:
        calls.append(len(rows))
        # wider values in later blocks: the kept array must widen without losing earlier blocks
        return np.array([b"v" * (1 + int(r) // BLOCK) + str(int(r)).encode() for r in rows], dtype=bytes)

    count = 2 * BLOCK + 123
    column = BlockColumn(count, compute)
    rng = np.random.default_rng(7)
    for rows in (np.array([5, 3]), np.array([count - 1, 0, BLOCK]), rng.integers(0, count, 500), np.arange(BLOCK - 3, BLOCK + 3)):
        assert column.take(rows).tolist() == compute(rows).tolist()
    assert column.missing == 0
    before = len(calls)
    column.take(rng.integers(0, count, 100))
    assert len(calls) == before  # every block kept: nothing computed again


def test_event_and_profile_pages_across_a_block_boundary_equal_the_renderer():
    emulator = Emulator(EmulatorSettings(seed=9, profiles=BLOCK + 1000, events=BLOCK + 2000, lists=2, rate_limits=False))
    query = parse_query(
        spec.operation("get_events"), [("include", "profile"), ("fields[profile]", "email,phone_number,external_id")], scope=""
    )
    r = Renderer(emulator.account, "http://emulator.test", query)
    rows = np.arange(BLOCK - 700, BLOCK + 700, dtype=np.int64)
    for _ in range(2):  # computed, then kept
        assert b"[" + events_page(r, rows) + b"]" == orjson.dumps(r.events(rows))
        assert b"[" + profiles_page(r, rows[::-1], extras=False) + b"]" == orjson.dumps(r.profiles(rows[::-1], extras=False))
    state = emulator.state
    state.upsert({"email": "moved@example.com"}, emulator.now(), state.profile_id(BLOCK + 1))
    after = profiles_page(r, rows, extras=False)
    assert b"[" + after + b"]" == orjson.dumps(r.profiles(rows, extras=False)) and b"moved@example.com" in after
