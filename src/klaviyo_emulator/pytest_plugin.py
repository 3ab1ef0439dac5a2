"""pytest plugin: the ``klaviyo_emulator`` fixture, a Klaviyo emulator on a free port of 127.0.0.1.

Installed with this distribution (entry point ``pytest11``), so any project's tests can write::

    def test_reads_lists(klaviyo_emulator):
        r = httpx.get(f"{klaviyo_emulator.base_url}/api/lists", headers=klaviyo_emulator.headers)

    @pytest.mark.klaviyo_emulator(seed=7, profiles=50, events=200, faults="429=0.2,seed=3")
    def test_survives_throttling(klaviyo_emulator): ...

    @pytest.mark.klaviyo_emulator(clean=True)        # an empty account (no profiles, events, lists...)
    def test_first_export(klaviyo_emulator): ...

The marker takes any ``EmulatorSettings`` field (``seed``, ``profiles``, ``events``, ``lists``,
``rate_limits``, ``faults``, ``latency_ms``, ``now``...) plus ``clean=True``. Without it: seed 1,
a small account (200 profiles, 2,000 events, 3 lists), rate limits on. The clock is fixed at
the settings' ``now`` unless the marker passes ``clock=`` (a ``klaviyo_emulator.clock`` spec).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

MARKER = "klaviyo_emulator"
SMALL = {"profiles": 200, "events": 2000, "lists": 3}
EMPTY = {"profiles": 0, "events": 0, "lists": 0, "segments": 0, "campaigns": 0, "templates": 0, "flows": 0}


@dataclass
class RunningEmulator:
    """What a test needs to talk to the emulator: its URL, key and headers, and the emulator itself."""

    base_url: str
    api_key: str
    revision: str
    settings: Any
    emulator: Any = field(repr=False)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Klaviyo-API-Key {self.api_key}", "revision": self.revision,
                "accept": "application/vnd.api+json"}

    def snapshot(self) -> dict:
        """List members, consent and suppressions as they are now (after due jobs)."""
        return self.emulator.snapshot()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{MARKER}(**settings): settings of the klaviyo_emulator fixture "
                                       "(EmulatorSettings fields, clean=True for an empty account, clock=SPEC)")


@pytest.fixture
def klaviyo_emulator(request: pytest.FixtureRequest):
    """A Klaviyo emulator served over HTTP on a free port of 127.0.0.1 for this test."""
    import klaviyo_spec

    from .app import create_app
    from .server import serving
    from .settings import EmulatorSettings

    marker = request.node.get_closest_marker(MARKER)
    options = dict(marker.kwargs) if marker else {}
    clean = options.pop("clean", False)
    clock = options.pop("clock", None)
    base = dict(EMPTY if clean else SMALL)
    base.update(options)
    settings = EmulatorSettings(**base)
    app = create_app(settings, clock=_clock(clock, settings) if clock else None)
    emulator = app.state.emulator
    with serving(app, name="klaviyo-emulator") as url:
        yield RunningEmulator(url, settings.api_key, klaviyo_spec.spec_revision(), settings, emulator)


def _clock(spec: Any, settings: Any):
    if callable(spec):
        return spec
    raise TypeError("clock= takes a callable returning seconds (e.g. a fake clock)")
