"""The account's clock: real (default of the command), fixed:ISO, offset:DURATION. The real time
is injected (``wall``), so no test reads it."""

from __future__ import annotations

from datetime import datetime, timezone

import httpx
import pytest

from klaviyo_emulator.app import create_app
from klaviyo_emulator.clock import parse_clock
from klaviyo_emulator.settings import EmulatorSettings

from .conftest import HEADERS
from .writes_helpers import FakeClock

REAL_START = 1_800_000_000.0  # 2027-01-15T08:00:00Z


class Wall:
    def __init__(self, t: float = REAL_START) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def _app(clock_spec: str, wall: Wall):
    return create_app(
        EmulatorSettings(seed=4, profiles=50, events=200, lists=2, rate_limits=False, clock=clock_spec),
        clock=FakeClock(),
        wall=wall,
    )


async def _create_profile(c: httpx.AsyncClient, email: str) -> dict:
    r = await c.post("/api/profile-import", json={"data": {"type": "profile", "attributes": {"email": email}}})
    assert r.status_code == 201, r.text
    return r.json()["data"]["attributes"]


async def _latest_event(c: httpx.AsyncClient) -> float:
    r = await c.get("/api/events", params={"sort": "-datetime", "page[size]": "1"})
    return _epoch(r.json()["data"][0]["attributes"]["datetime"])


@pytest.mark.parametrize(
    "text,kind,at",
    [
        ("real", "real", 0.0),
        ("fixed:2026-01-01T00:00:00Z", "fixed", 1_767_225_600.0),
        ("offset:-30d", "offset", -30 * 86400.0),
        ("offset:+2h", "offset", 7200.0),
        ("offset:90s", "offset", 90.0),
    ],
)
def test_clock_specs(text, kind, at):
    spec = parse_clock(text)
    assert (spec.kind, spec.at) == (kind, at)


@pytest.mark.parametrize(
    "text,needle",
    [("wall", "unknown clock"), ("fixed:yesterday", "ISO 8601"), ("offset:-3w", "offset:-30d"), ("real:now", "unknown clock")],
)
def test_bad_clock_specs_say_what_is_expected(text, needle):
    with pytest.raises(ValueError, match=needle):
        parse_clock(text)
    with pytest.raises(ValueError):
        EmulatorSettings(clock=text)


async def test_real_clock_anchors_the_data_and_stamps_writes_with_the_real_time():
    wall = Wall()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=_app("real", wall)), base_url="http://e.test", headers=HEADERS
    ) as c:
        latest = await _latest_event(c)
        assert REAL_START - 30 * 86400 < latest <= REAL_START  # the data runs up to the real time at start
        wall.t += 3600
        created = await _create_profile(c, "later@example.com")
        assert _epoch(created["created"]) == REAL_START + 3600
        # an incremental read after it finds it
        r = await c.get(
            "/api/profiles",
            params={"filter": f"greater-than(created,{datetime.fromtimestamp(REAL_START, timezone.utc).isoformat()})"},
        )
        assert [p["attributes"]["email"] for p in r.json()["data"]] == ["later@example.com"]


async def test_fixed_clock_does_not_move():
    wall = Wall()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=_app("fixed:2025-06-01T12:00:00Z", wall)), base_url="http://e.test", headers=HEADERS
    ) as c:
        fixed = _epoch("2025-06-01T12:00:00+00:00")
        assert fixed - 30 * 86400 < await _latest_event(c) <= fixed
        wall.t += 86400
        assert _epoch((await _create_profile(c, "a@example.com"))["created"]) == fixed


async def test_fixed_clock_gives_the_same_bytes_whatever_the_real_time():
    bodies = []
    for start in (REAL_START, REAL_START + 12345):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=_app("fixed:2025-06-01T12:00:00Z", Wall(start))),
            base_url="http://e.test",
            headers=HEADERS,
        ) as c:
            bodies.append((await c.get("/api/profiles", params={"page[size]": "20"})).content)
    assert bodies[0] == bodies[1]


async def test_offset_clock_moves_with_the_real_time():
    wall = Wall()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=_app("offset:-1d", wall)), base_url="http://e.test", headers=HEADERS
    ) as c:
        assert await _latest_event(c) <= REAL_START - 86400
        wall.t += 60
        assert _epoch((await _create_profile(c, "b@example.com"))["created"]) == REAL_START - 86400 + 60


def test_the_command_rejects_a_bad_clock(capsys):
    from klaviyo_emulator.cli import emulator_command

    with pytest.raises(SystemExit) as info:
        emulator_command(["--clock", "sometime"], prog_name="klaviyo-emulator")
    assert info.value.code == 2
    assert "unknown clock 'sometime'" in capsys.readouterr().err
