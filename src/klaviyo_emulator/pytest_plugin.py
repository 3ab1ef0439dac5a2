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
a small account (200 profiles, 2,000 events, 3 lists), rate limits on. The account's clock is the
settings' ``now`` (2026-01-01) moving with the app clock; ``clock="fixed:ISO"`` / ``"real"`` /
``"offset:-30d"`` chooses another (see ``klaviyo_emulator.clock``), and ``app_clock=`` a callable
returning seconds (a fake clock for rate limits and job progress).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

import klaviyo_spec

if TYPE_CHECKING:  # the emulator's modules are heavy: imported when the fixture runs (see below)
    from .app import Emulator
    from .settings import EmulatorSettings

MARKER = "klaviyo_emulator"
SMALL = {"profiles": 200, "events": 2000, "lists": 3}
EMPTY = {"profiles": 0, "events": 0, "lists": 0, "segments": 0, "campaigns": 0, "templates": 0, "flows": 0}


@dataclass
class RunningEmulator:
    """What a test needs to talk to the emulator: its URL, key and headers, and the emulator itself."""

    base_url: str
    api_key: str
    revision: str
    settings: EmulatorSettings
    emulator: Emulator = field(repr=False)

    @property
    def headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Klaviyo-API-Key {self.api_key}",
            "revision": self.revision,
            "accept": "application/vnd.api+json",
        }

    def snapshot(self) -> dict[str, Any]:
        """List members, consent and suppressions as they are now (after due jobs)."""
        return self.emulator.snapshot()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(**settings): settings of the klaviyo_emulator fixture "
        "(EmulatorSettings fields, clean=True for an empty account, app_clock=callable)",
    )


@pytest.fixture
def klaviyo_emulator(request: pytest.FixtureRequest) -> Iterator[RunningEmulator]:
    """A Klaviyo emulator served over HTTP on a free port of 127.0.0.1 for this test."""
    # Imported here, not at the top: pytest loads this plugin in every session of every project that
    # installs the distribution, and the emulator's modules load numpy, starlette and uvicorn.
    from .app import create_app
    from .server import serving
    from .settings import EmulatorSettings

    marker = request.node.get_closest_marker(MARKER)
    options = dict(marker.kwargs) if marker else {}
    clean = options.pop("clean", False)
    app_clock = options.pop("app_clock", None)
    base: dict[str, Any] = dict(EMPTY if clean else SMALL)
    base.update(options)
    settings = EmulatorSettings(**base)
    if app_clock is not None and not callable(app_clock):
        raise TypeError("app_clock= takes a callable returning seconds (e.g. a fake clock)")
    app = create_app(settings, clock=app_clock)
    emulator = app.state.emulator
    with serving(app, name="klaviyo-emulator") as url:
        yield RunningEmulator(url, settings.api_key, klaviyo_spec.spec_revision(), settings, emulator)
