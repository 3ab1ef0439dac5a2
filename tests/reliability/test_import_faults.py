"""Imports under the issue's fault mix end with exactly the tables of a fault-free run.

How it stays fast and honest: the real ``run_import`` (fetch, decode, writer, cursor) runs
against the emulator over real sockets (so ``reset`` is a real aborted TCP connection and
``slow`` a real read timeout). The client is the real ``KlaviyoClient`` with the config's
``retry_limit: 7`` (the settings' maximum) and its own retry decisions and wait schedule;
only its ``sleep`` is compressed (``KlaviyoClient(sleep=...)``, patched into the runner
module because ``run_import`` does not expose it) and its read timeout is lowered to 0.25 s
(below the settings' 30 s minimum, via ``model_copy``), with ``slow`` held for 1 s.
``concurrency=1`` makes the request order, hence every fault decision, replayable for the
seed; ``--full`` adds runs with 8 concurrent windows and more seeds.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pytest

from klaviyo_bridge.config import parse_import_config
from klaviyo_bridge.imports import runner
from klaviyo_bridge.store.factory import open_warehouse
from klaviyo_emulator.app import create_app
from klaviyo_emulator.settings import EmulatorSettings

from .helpers import FIGURES, fast_client_class, rows_of, serve_app

MIX = "429=0.2,500=0.05,503=0.05,reset=0.02,slow=0.05:1s,truncate=0.01,seed={seed}"
DATA = dict(seed=21, profiles=250, events=1500, lists=6, rate_limits=False)
NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
MODES = ("append", "replace", "replace_on_new_data", "merge")
SOURCES = {
    "events": dict(incremental_field="created", start_time="2025-03-01T00:00:00", end_time="2025-12-01T00:00:00"),
    "profiles": dict(incremental_field="updated", start_time="2024-06-01T00:00:00", end_time="2025-12-01T00:00:00"),
    "lists": dict(),
}


def config(source, mode, base_url):
    return parse_import_config(
        {
            "in": {
                "type": "klaviyo",
                "data_source": source,
                "api_token": "pk_emulator_demo_key",
                "base_url": base_url,
                "retry_limit": 7,
                **SOURCES[source],
            },
            "out": {"mode": mode},
        }
    )


def run_twice(tmp_path, name, base_url, source, mode, concurrency, windows=12):
    """Two runs of the same import into one table (merge/replace/append semantics all show)."""
    with open_warehouse(tmp_path / f"{name}.duckdb") as wh:
        for _ in range(2):
            asyncio.run(
                runner.run_import(
                    config(source, mode, base_url), wh, "klaviyo", source, now=NOW, concurrency=concurrency, windows=windows
                )
            )
        rows = rows_of(wh, "klaviyo", source)
        runs = [r.status for r in wh.state.runs(f"klaviyo.{source}")]
    return rows, runs


@pytest.fixture(scope="module")
def clean_url():
    with serve_app(create_app(EmulatorSettings(**DATA))) as url:
        yield url


@pytest.fixture
def fast_client(monkeypatch):
    monkeypatch.setattr(runner, "KlaviyoClient", fast_client_class(read_timeout=0.25))


def _check(tmp_path, clean_url, source, mode, seed, concurrency):
    app = create_app(EmulatorSettings(**DATA, faults=MIX.format(seed=seed)))
    expected, _ = run_twice(tmp_path, "clean", clean_url, source, mode, concurrency)
    with serve_app(app) as url:
        got, runs = run_twice(tmp_path, "faulty", url, source, mode, concurrency)
    plan = app.state.faults
    assert runs == ["success", "success"]
    assert len(got) == len(expected) and got == expected  # same ids, same values, same multiplicity
    if mode != "append":
        ids = [row for row in got]
        assert len(set(ids)) == len(ids), "duplicates"
    FIGURES["import runs under faults"] += 2
    FIGURES["import requests under faults"] += plan.total_requests
    FIGURES["faults injected (imports)"] += plan.total_injected
    FIGURES["rows checked (imports under faults)"] += len(got)
    return plan


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("source", list(SOURCES))
def test_import_under_faults_equals_a_fault_free_run(tmp_path, clean_url, fast_client, source, mode):
    plan = _check(tmp_path, clean_url, source, mode, seed=7, concurrency=1)
    if source != "lists":
        assert plan.total_injected > 0, "the mix injected nothing: the test proves nothing"


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("source", ["events", "profiles"])
def test_import_under_faults_concurrent_windows(tmp_path, clean_url, fast_client, full, source, mode, seed):
    if not full:
        pytest.skip("--full: concurrent windows under faults, three more seeds")
    _check(tmp_path, clean_url, source, mode, seed=seed, concurrency=8)


def test_every_kind_of_fault_was_exercised(tmp_path, clean_url, fast_client):
    """One events run with a harsh mix: every kind is injected at least once and the table still matches."""
    harsh = "429=0.15,500=0.05,502=0.03,503=0.05,504=0.03,524=0.05,reset=0.05,slow=0.03:1s,truncate=0.05,seed=3"
    app = create_app(EmulatorSettings(**DATA, faults=harsh))
    expected, _ = run_twice(tmp_path, "clean", clean_url, "events", "merge", 1, 24)
    with serve_app(app) as url:
        got, runs = run_twice(tmp_path, "faulty", url, "events", "merge", 1, 24)
    assert got == expected and runs == ["success", "success"]
    kinds = set(app.state.faults.injected)
    assert kinds == {"429", "500", "502", "503", "504", "524", "reset", "slow", "truncate"}, kinds
    FIGURES["faults injected (imports)"] += app.state.faults.total_injected
    FIGURES["rows checked (imports under faults)"] += len(got)
