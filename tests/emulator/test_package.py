"""The emulator is a package of its own: it imports nothing from the product, and its pytest
plugin serves it to any test that asks for the ``klaviyo_emulator`` fixture."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

import klaviyo_emulator

BLOCK_PRODUCT = """
import importlib, pkgutil, sys

class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "klaviyo_bridge" or name.startswith("klaviyo_bridge."):
            raise ImportError(f"the emulator imported {name}")
        return None

sys.meta_path.insert(0, Block())
import klaviyo_emulator, klaviyo_spec
names = [m.name for m in pkgutil.iter_modules(klaviyo_emulator.__path__, "klaviyo_emulator.")]
for name in names:
    importlib.import_module(name)
from klaviyo_emulator.app import create_app
from klaviyo_emulator.settings import EmulatorSettings
create_app(EmulatorSettings(profiles=5, events=5, lists=1, faults="429=0.1,seed=1"))
print(len(names), "modules", "klaviyo_bridge" in sys.modules)
"""


def test_the_emulator_imports_nothing_from_the_product():
    out = subprocess.run([sys.executable, "-c", BLOCK_PRODUCT], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    count, _, loaded = out.stdout.split()
    assert int(count) >= 20 and loaded == "False"


def test_the_package_lives_beside_the_product():
    here = Path(klaviyo_emulator.__file__).resolve().parent
    assert here.name == "klaviyo_emulator" and (here.parent / "klaviyo_bridge").is_dir()
    assert not (here.parent / "klaviyo_bridge" / "emulator").exists()


def test_the_plugin_fixture_serves_a_seeded_account(klaviyo_emulator):
    assert klaviyo_emulator.base_url.startswith("http://127.0.0.1:")
    r = httpx.get(f"{klaviyo_emulator.base_url}/api/lists", headers=klaviyo_emulator.headers)
    assert r.status_code == 200
    assert len(r.json()["data"]) == 3


@pytest.mark.klaviyo_emulator(clean=True)
def test_the_plugin_fixture_serves_a_clean_account(klaviyo_emulator):
    r = httpx.get(f"{klaviyo_emulator.base_url}/api/profiles", headers=klaviyo_emulator.headers)
    assert r.status_code == 200 and r.json()["data"] == []


@pytest.mark.klaviyo_emulator(profiles=10, events=10, lists=1, faults="429=1.0,seed=2")
def test_the_plugin_fixture_serves_a_faulty_account(klaviyo_emulator):
    r = httpx.get(f"{klaviyo_emulator.base_url}/api/lists", headers=klaviyo_emulator.headers)
    assert r.status_code == 429 and r.headers["Retry-After"]


@pytest.mark.klaviyo_emulator(profiles=5, events=5, lists=1, clock="fixed:2024-03-01T00:00:00Z", rate_limits=False)
def test_the_plugin_fixture_takes_a_clock(klaviyo_emulator):
    r = httpx.post(
        f"{klaviyo_emulator.base_url}/api/profile-import",
        headers=klaviyo_emulator.headers,
        json={"data": {"type": "profile", "attributes": {"email": "p@example.com"}}},
    )
    assert r.status_code == 201 and r.json()["data"]["attributes"]["created"].startswith("2024-03-01T00:00:00")
