"""Shared fixtures for import tests: an in-process emulator and a DuckDB warehouse per test."""

import httpx
import pytest

from klaviyo_bridge.config import parse_import_config
from klaviyo_bridge.store.factory import open_warehouse
from klaviyo_emulator.app import create_app
from klaviyo_emulator.settings import EmulatorSettings

from ..emulator.writes_helpers import FakeClock

EMU = EmulatorSettings(seed=11, profiles=1234, events=5432, lists=4, rate_limits=False)
#: a small account for tests that change it (``account``)
SMALL = EmulatorSettings(seed=23, profiles=300, events=200, lists=3, segments=2, rate_limits=False)
BASE = "http://emulator.local"


@pytest.fixture(scope="session")
def emulator_app():
    return create_app(EMU)


@pytest.fixture
def transport(emulator_app):
    return httpx.ASGITransport(app=emulator_app)


@pytest.fixture
def account():
    """(clock, transport) of a fresh small emulator of its own, for tests that write to the account."""
    clock = FakeClock()  # its account's "now" is settings.now + elapsed; tests move clock.t
    return clock, httpx.ASGITransport(app=create_app(SMALL, clock=clock))


@pytest.fixture
def warehouse(tmp_path):
    wh = open_warehouse(tmp_path / "warehouse.duckdb")
    yield wh
    wh.close()


def make_config(data_source: str, mode: str = "append", out: dict | None = None, **source):
    return parse_import_config(
        {
            "in": {"type": "klaviyo", "data_source": data_source, "api_token": EMU.api_key, "base_url": BASE, **source},
            "out": {"mode": mode, **(out or {})},
        }
    )
