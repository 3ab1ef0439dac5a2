"""The emulator's fault injection: SPEC parsing, determinism, and each fault as a client sees it."""

from __future__ import annotations

import httpx
import pytest

from klaviyo_bridge.api.client import KlaviyoClient
from klaviyo_bridge.api.retry import RetryPolicy
from klaviyo_bridge.api.settings import ClientSettings
from klaviyo_bridge.errors import RetriesExhausted, TransportError
from klaviyo_emulator.app import create_app
from klaviyo_emulator.faults import FaultPlan, Storm, parse_duration, parse_faults
from klaviyo_emulator.server import running_emulator
from klaviyo_emulator.settings import DEFAULT_API_KEY, EmulatorSettings

from ..fakes import FakeClock

MIX = "429=0.2,500=0.05,503=0.05,reset=0.02,slow=0.05:30s,truncate=0.01,seed=7"
HEADERS = {"Authorization": f"Klaviyo-API-Key {DEFAULT_API_KEY}", "revision": "2024-10-15"}


def test_the_issue_example_parses():
    spec = parse_faults(MIX)
    assert dict(spec.rates) == {"429": 0.2, "500": 0.05, "503": 0.05, "reset": 0.02, "slow": 0.05, "truncate": 0.01}
    assert spec.seed == 7 and spec.slow_seconds == 30.0 and spec.storms == ()
    assert spec.total_rate == pytest.approx(0.38)


def test_storms_and_durations():
    spec = parse_faults("storm=get_events:503:10s, storm=get_lists:reset:forever, slow=0.1:250ms, retry_after=3")
    assert spec.storms == (Storm("get_events", "503", 10.0), Storm("get_lists", "reset", float("inf")))
    assert spec.slow_seconds == 0.25 and spec.retry_after == 3
    assert parse_duration("2m") == 120 and parse_duration("7") == 7 and parse_duration("500ms") == 0.5
    assert parse_faults("") == parse_faults(None) == parse_faults(" , ")


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("429=0.2,50=0.1", ["'50=0.1'", "unknown fault '50'"]),
        ("503=high", ["'503=high'", "not a probability"]),
        ("503=1.5", ["'503=1.5'", "outside 0..1"]),
        ("503=-0.1", ["'503=-0.1'", "outside 0..1"]),
        ("reset", ["'reset'", "KEY=VALUE"]),
        ("seed=x", ["'seed=x'", "integer"]),
        ("slow=0.1:soon", ["'slow=0.1:soon'", "not a duration"]),
        ("slow=0.1:forever", ["'slow=0.1:forever'", "finite"]),
        ("storm=get_evnts:503:10s", ["'storm=get_evnts:503:10s'", "did you mean 'get_events'"]),
        ("storm=get_events:418:10s", ["'storm=get_events:418:10s'", "unknown fault kind '418'"]),
        ("storm=get_events:503", ["'storm=get_events:503'", "OPERATION:KIND:DURATION"]),
        ("storm=get_events:503:ten", ["'storm=get_events:503:ten'", "not a duration"]),
        ("truncte=0.1", ["'truncte=0.1'", "did you mean 'truncate'"]),
        ("503=0.1,503=0.2", ["'503=0.2'", "given twice"]),
        ("429=0.6,503=0.6", ["add up to 1.2"]),
        ("retry_after=-1", ["'retry_after=-1'", ">= 0"]),
    ],
)
def test_parse_errors_name_the_bad_item(text, names):
    with pytest.raises(ValueError) as info:
        parse_faults(text)
    for name in names:
        assert name in str(info.value)


def test_settings_reject_a_bad_spec_at_construction():
    with pytest.raises(ValueError, match="'503=2'"):
        EmulatorSettings(faults="503=2")


def _sequence(text: str, ops=("get_events", "get_profiles", "get_lists"), n=400):
    plan = FaultPlan(parse_faults(text))
    return [(op, plan.decide(op, 0.0)) for _ in range(n) for op in ops]


def test_same_seed_same_decisions_different_seed_different():
    a, b = _sequence(MIX), _sequence(MIX)
    assert a == b
    assert a != _sequence(MIX.replace("seed=7", "seed=8"))


def test_decisions_per_operation_do_not_depend_on_interleaving():
    plan1, plan2 = FaultPlan(parse_faults(MIX)), FaultPlan(parse_faults(MIX))
    only_events = [plan1.decide("get_events", 0.0) for _ in range(300)]
    mixed = []
    for _ in range(300):
        plan2.decide("get_lists", 0.0)
        mixed.append(plan2.decide("get_events", 0.0))
    assert only_events == mixed


def test_rates_are_roughly_the_configured_ones():
    plan = FaultPlan(parse_faults(MIX))
    decisions = [plan.decide(f"op{i % 7}", 0.0) for i in range(20_000)]
    share = lambda kind: decisions.count(kind) / len(decisions)  # noqa: E731
    assert share("429") == pytest.approx(0.2, abs=0.015)
    assert share("503") == pytest.approx(0.05, abs=0.01)
    assert share("reset") == pytest.approx(0.02, abs=0.006)
    assert share(None) == pytest.approx(0.62, abs=0.02)


def test_storm_lasts_its_duration_from_the_first_hit():
    plan = FaultPlan(parse_faults("storm=get_events:503:10s"))
    assert plan.decide("get_lists", 100.0) is None
    assert plan.decide("get_events", 100.0) == "503"  # first hit starts the storm
    assert plan.decide("get_events", 109.9) == "503"
    assert plan.decide("get_lists", 105.0) is None
    assert plan.decide("get_events", 110.0) is None


# ----- each fault as the client sees it ------------------------------------------------------


def _client(transport=None, base="http://emulator.local", read_timeout=None, retry_limit=1):
    settings = ClientSettings(api_key=DEFAULT_API_KEY, base_url=base, retry_limit=retry_limit)
    if read_timeout is not None:
        settings = settings.model_copy(update={"read_timeout": read_timeout})

    async def no_sleep(_):
        return None

    return KlaviyoClient(
        settings, transport=transport, sleep=no_sleep, retry=RetryPolicy(retry_limit=retry_limit, initial_wait=0.0, max_wait=0.0)
    )


def _emu(faults, **kw):
    return EmulatorSettings(seed=5, profiles=50, events=100, lists=2, rate_limits=False, faults=faults, **kw)


async def _get(transport, path="/api/lists"):
    async with httpx.AsyncClient(transport=transport, base_url="http://emulator.local", headers=HEADERS) as http:
        return await http.get(path)


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504, 524])
async def test_status_faults_in_process(status):
    app = create_app(_emu(f"{status}=1"))
    response = await _get(httpx.ASGITransport(app=app))
    assert response.status_code == status
    assert response.json()["errors"][0]["status"] == status
    if status == 429:
        assert response.headers["Retry-After"] == "1"
    assert app.state.faults.injected[str(status)] == 1


async def test_no_faults_means_the_plain_app():
    app = create_app(_emu(None))
    assert not hasattr(app.state, "faults")
    assert (await _get(httpx.ASGITransport(app=app))).status_code == 200


async def test_reset_and_truncate_in_process_are_transport_errors_for_the_client():
    for kind, words in (("reset", "connection failed"), ("truncate", "cut off")):
        app = create_app(_emu(f"{kind}=1"))
        async with _client(httpx.ASGITransport(app=app)) as client:
            with pytest.raises(RetriesExhausted) as info:
                await client.request("get_lists")
        assert isinstance(info.value.last_error, TransportError)
        assert words in str(info.value)
        assert app.state.faults.injected[kind] == 2  # first try and one retry


async def test_storm_then_recovery_with_an_app_clock():
    clock = FakeClock()
    app = create_app(_emu("storm=get_lists:503:10s"), clock=clock)
    transport = httpx.ASGITransport(app=app)
    assert (await _get(transport)).status_code == 503
    clock.t += 5
    assert (await _get(transport)).status_code == 503
    assert (await _get(transport, "/api/profiles")).status_code == 200
    clock.t += 5
    assert (await _get(transport)).status_code == 200


def test_faults_over_real_sockets():
    """reset aborts the TCP connection; slow outlasts the read timeout; truncate cuts the JSON."""
    import asyncio

    async def one(url, read_timeout=None):
        async with _client(base=url, read_timeout=read_timeout) as client:
            with pytest.raises(RetriesExhausted) as info:
                await client.request("get_lists")
            return str(info.value)

    with running_emulator(_emu("reset=1")) as url:
        assert "connection failed" in asyncio.run(one(url))
    with running_emulator(_emu("truncate=1")) as url:
        assert "cut off" in asyncio.run(one(url))
    with running_emulator(_emu("slow=1:3s")) as url:
        assert "timed out" in asyncio.run(one(url, read_timeout=0.3))


def test_cli_emulator_rejects_a_bad_spec(capsys):
    from klaviyo_bridge.cli import main

    with pytest.raises(SystemExit) as info:
        main(["emulator", "--faults", "429=0.2,5O3=0.1"])
    assert info.value.code == 2
    assert "'5O3=0.1'" in capsys.readouterr().err
