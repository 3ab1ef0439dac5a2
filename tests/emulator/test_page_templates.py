"""Template-rendered pages must equal the reference ``Renderer`` (dicts + orjson) byte for byte,
including after writes change the profiles an events page includes."""

import numpy as np
import orjson
import pytest

import klaviyo_spec as spec
from klaviyo_emulator.app import Emulator
from klaviyo_emulator.pages import events_page, profiles_page
from klaviyo_emulator.query import parse_query
from klaviyo_emulator.resources import Renderer
from klaviyo_emulator.settings import EmulatorSettings


def renderer(emulator: Emulator, op_id: str, params: list[tuple[str, str]]) -> Renderer:
    return Renderer(emulator.account, "http://emulator.test", parse_query(spec.operation(op_id), params, scope=""))


@pytest.fixture(scope="module")
def emulator():
    return Emulator(EmulatorSettings(seed=11, profiles=300, events=5000, lists=3, campaigns=7, rate_limits=False))


@pytest.mark.parametrize(
    "params",
    [
        [],
        [("include", "attributions")],
        [("fields[event]", "uuid,timestamp")],
        [("fields[event]", "event_properties,id")],
        [("fields[event]", "id")],
    ],
)
def test_events_page_equals_renderer(emulator, params):
    r = renderer(emulator, "get_events", params)
    rows = np.arange(emulator.account.events.count, dtype=np.int64)[::-1]
    assert b"[" + events_page(r, rows) + b"]" == orjson.dumps(r.events(rows))


@pytest.mark.parametrize("settings", [dict(lists=0, campaigns=1), dict(lists=9, campaigns=40)])
def test_properties_json_equals_dicts(settings):
    events = Emulator(EmulatorSettings(seed=5, profiles=50, events=20000, rate_limits=False, **settings)).account.events
    rows = np.arange(events.count, dtype=np.int64)
    assert events.properties_json(rows) == [orjson.dumps(a["event_properties"]) for a in events.attributes_for(rows)]


def included_profiles(emulator: Emulator, rows: np.ndarray, fields: str) -> tuple[bytes, bytes]:
    r = renderer(emulator, "get_events", [("include", "profile"), ("fields[profile]", fields)])
    return b"[" + profiles_page(r, rows, extras=False) + b"]", orjson.dumps(r.profiles(rows, extras=False))


def test_included_profiles_follow_writes():
    emulator = Emulator(EmulatorSettings(seed=4, profiles=200, events=100, rate_limits=False))
    state = emulator.state
    rows = np.array([7, 3, 150, 0], dtype=np.int64)
    before, reference = included_profiles(emulator, rows, "email,phone_number,external_id")
    assert before == reference
    state.upsert({"email": "changed@example.com", "external_id": "x-1"}, emulator.now(), state.profile_id(3))
    new_row, created = state.upsert({"email": "new@example.com"}, emulator.now())
    assert created
    rows = np.append(rows, new_row)
    for fields in ("email,phone_number,external_id", "external_id,email", "created,updated,location,properties"):
        after, reference = included_profiles(emulator, rows, fields)
        assert after == reference, fields
    after, _ = included_profiles(emulator, rows, "email,phone_number,external_id")
    assert after != before and b"changed@example.com" in after and b"new@example.com" in after


def test_empty_pages(emulator):
    r = renderer(emulator, "get_events", [("include", "profile"), ("fields[profile]", "email,phone_number,external_id")])
    none = np.array([], dtype=np.int64)
    assert events_page(r, none) == b"" and profiles_page(r, none, extras=False) == b""


def test_properties_json_without_packed_keys_equals_dicts(monkeypatch):
    """Choices too large to pack into one int (a million campaigns) take the tuple-keyed path:
    same JSON (a list key there failed: unhashable)."""
    import klaviyo_emulator.events as events_module

    monkeypatch.setattr(events_module, "_packable", lambda keys: False)
    events = Emulator(EmulatorSettings(seed=5, profiles=50, events=3000, rate_limits=False, lists=3, campaigns=5)).account.events
    rows = np.arange(events.count, dtype=np.int64)
    assert events.properties_json(rows) == [orjson.dumps(a["event_properties"]) for a in events.attributes_for(rows)]
