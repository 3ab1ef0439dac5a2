"""Windows whose edges fall exactly on a timestamp many records share (events; profiles at the end).

The emulator's events keep at most a handful per second, so this account's event times are
changed first: a block of events at each window bound (the run's start, every split point,
the run's end), one block bigger than a page so a tie also spans pages. ``run_import(windows=4)``
over ``[S, S + 4D)`` splits at ``S + D``, ``S + 2D``, ``S + 3D`` (``partition.split``): every
bound is a shared timestamp. Each event must land in exactly one window: none lost at a
``greater-or-equal`` edge, none doubled by two adjacent windows.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone

import httpx
import numpy as np
import pytest

from klaviyo_bridge.api import query as q
from klaviyo_bridge.imports.partition import split
from klaviyo_bridge.imports.runner import SAFETY_MARGIN, run_import
from klaviyo_emulator.app import create_app
from klaviyo_emulator.data import build_account

from .conftest import EMU, make_config
from .test_runner import NOW, all_records

D = timedelta(days=170)
#: events stamped at S, S+D, S+2D, S+3D, S+4D; the middle block is longer than a 1000-event page
BLOCKS = (150, 150, 1100, 150, 150)


@pytest.fixture(scope="module")
def tied():
    """(transport, the five shared instants) of an account whose events pile up on them."""
    account = build_account(EMU)
    dt = account.events.datetime
    start = int(dt[200])
    instants = [start + k * int(D.total_seconds()) for k in range(len(BLOCKS))]
    for t, n in zip(instants, BLOCKS):
        r = int(np.searchsorted(dt, t))
        dt[r : r + n] = t  # only later events are moved back onto t: the rows stay in time order
    assert np.all(np.diff(dt) >= 0)
    counts = Counter(dt.tolist())
    assert all(counts[t] >= n for t, n in zip(instants, BLOCKS))
    app = create_app(EMU, account=account)
    return app, [datetime.fromtimestamp(t, timezone.utc) for t in instants]


async def api_event_ids(transport, lo: datetime, hi: datetime) -> list[str]:
    records = await all_records(
        transport,
        "get_events",
        query=q.Query(page_size=1000, filters=(q.greater_or_equal("datetime", lo), q.less_than("datetime", hi))),
    )
    return [r["id"] for r in records]


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


async def test_split_points_on_shared_timestamps_lose_and_double_nothing(tied, warehouse):
    app, instants = tied
    transport = httpx.ASGITransport(app=app)
    lo, hi = instants[0], instants[-1]
    assert [w.start for w in split(lo, hi, 4)] == instants[:-1]  # the scenario: every bound is shared
    cfg = make_config("events", start_time=iso(lo), end_time=iso(hi))
    result = await run_import(cfg, warehouse, "klaviyo", "events", transport=transport, now=NOW, windows=4, concurrency=4)
    rows = warehouse.table_arrow("klaviyo", "events").select(["id", "datetime"]).to_pylist()
    ids = [r["id"] for r in rows]
    expected = await api_event_ids(transport, lo, hi)
    assert len(ids) == len(set(ids)) == result.rows == len(expected)
    assert set(ids) == set(expected)
    at = Counter(r["datetime"] for r in rows)
    assert all(at[t] >= n for t, n in zip(instants[:-1], BLOCKS)) and at[hi] == 0  # start kept, end left out


async def test_consecutive_runs_meeting_on_a_shared_timestamp(tied, warehouse):
    """The first run's end (the cursor) is the middle block's second: the block belongs to the second run.
    Two windows a run: each run's split point is a shared second too."""
    app, instants = tied
    transport = httpx.ASGITransport(app=app)
    lo, mid, hi = instants[0], instants[2], instants[-1]
    # no lookback, and "now" one safety margin after each run's end: the runs meet exactly at mid
    cfg = make_config("events", mode="append", incremental=True, start_time=iso(lo), lookback="0h")
    first = await run_import(cfg, warehouse, "klaviyo", "ev", transport=transport, now=mid + SAFETY_MARGIN, windows=2)
    second = await run_import(cfg, warehouse, "klaviyo", "ev", transport=transport, now=hi + SAFETY_MARGIN, windows=2)
    assert second.start == mid
    assert [w.start for w in split(lo, mid, 2) + split(mid, hi, 2)] == instants[:-1]
    ids = warehouse.table_arrow("klaviyo", "ev").column("id").to_pylist()
    assert first.rows == len(await api_event_ids(transport, lo, mid))
    assert len(ids) == len(set(ids)) == first.rows + second.rows
    assert set(ids) == set(await api_event_ids(transport, lo, hi))


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


async def _shared_profile_seconds(transport) -> list[datetime]:
    """`updated` seconds that several profiles share, most shared first."""
    records = await all_records(transport, "get_profiles", query=q.Query(page_size=100))
    counts = Counter(_at(r["attributes"]["updated"]) for r in records)
    return [t for t, n in counts.most_common() if n >= 4]


@pytest.mark.parametrize("edges", ["start and split", "split and end"])
async def test_profile_windows_bounded_on_shared_seconds(transport, warehouse, edges):
    """profiles.updated has only greater-than/less-than: each window asks one second wider on both
    sides and trims. With bounds exactly on seconds several profiles share, a trimmed-away row
    must be the one its neighbour window keeps."""
    a, b = sorted((await _shared_profile_seconds(transport))[:2])
    lo, hi = (a, b + (b - a)) if edges == "start and split" else (a - (b - a), b)
    assert split(lo, hi, 2)[1].start == (b if edges == "start and split" else a)
    cfg = make_config("profiles", start_time=iso(lo), end_time=iso(hi))
    result = await run_import(cfg, warehouse, "klaviyo", "profiles", transport=transport, now=NOW, windows=2)
    rows = warehouse.table_arrow("klaviyo", "profiles").select(["id", "updated"]).to_pylist()
    everyone = await all_records(transport, "get_profiles", query=q.Query(page_size=100))
    expected = {r["id"] for r in everyone if lo <= _at(r["attributes"]["updated"]) < hi}
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)) == result.rows == len(expected)
    assert set(ids) == expected
    stamps = Counter(r["updated"] for r in rows)
    shared = (a, b) if edges == "start and split" else (a,)
    assert all(stamps[t] >= 4 for t in shared) and stamps[hi] == 0
