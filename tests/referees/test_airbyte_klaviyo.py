"""Referee: ``airbyte-source-klaviyo`` through its Python entry point (spec, check, discover, and a read
of a configured catalog of every stream) against the emulator. Each stream's record count must equal
the emulator's data."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from .conftest import HERE, referee_venv, run_json_lines

pytestmark = [pytest.mark.referees, pytest.mark.timeout(1800)]  # includes a cold venv build

AIRBYTE = "airbyte-source-klaviyo==2.13.1"
# A frozen clock: the account's data spreads over 2024-2025, and the connector's date windows
# (events by 7 days, flows by 30, campaigns by 60) start at the config's start_date.
EMULATOR_ARGS = ["--profiles", "300", "--events", "3000", "--seed", "5", "--clock", "fixed:2026-01-01T00:00:00Z"]
START = "2023-12-01T00:00:00Z"


@pytest.fixture(scope="module")
def source():
    return referee_venv(AIRBYTE) / "bin" / "python"


def _run(source, emu, cwd, *args, timeout=900):
    return run_json_lines(
        [str(source), str(HERE / "clients" / "airbyte_klaviyo_run.py"), emu.base_url, *args], cwd=cwd, timeout=timeout
    )


def _expected_counts(emu) -> dict[str, int]:
    suppressed = 0
    url, params = f"{emu.base_url}/api/profiles", {"additional-fields[profile]": "subscriptions", "page[size]": "100"}
    while url:
        body = emu.fetch(url, params)
        suppressed += sum(1 for p in body["data"] if p["attributes"]["subscriptions"]["email"]["marketing"].get("suppression"))
        url, params = body["links"].get("next"), None
    campaigns = sum(
        emu.count("/api/campaigns", {"filter": f"equals(messages.channel,'{channel}')"}) for channel in ("email", "sms")
    )
    flows = sum(emu.count("/api/flows", {"filter": f"equals(archived,{archived})"}) for archived in ("true", "false"))
    events = emu.count("/api/events", {"page[size]": "200"})
    lists = emu.count("/api/lists")
    return {
        "profiles": emu.count("/api/profiles", {"page[size]": "100"}),
        "global_exclusions": suppressed,
        "events": events,
        "events_detailed": events,
        "email_templates": emu.count("/api/templates"),
        "campaigns": campaigns,
        "campaigns_detailed": campaigns,
        "flows": flows,
        "metrics": emu.count("/api/metrics"),
        "lists": lists,
        "lists_detailed": lists,
    }


def test_airbyte_spec_check_discover_and_read_every_stream(source, referee_emulator, tmp_path):
    emu = referee_emulator
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"api_key": emu.api_key, "start_date": START}))

    spec, _ = _run(source, emu, tmp_path, "spec")
    assert [m["spec"]["connectionSpecification"]["required"] for m in spec if m["type"] == "SPEC"] == [["api_key"]]

    check, _ = _run(source, emu, tmp_path, "check", "--config", str(config))
    assert [m["connectionStatus"]["status"] for m in check if m["type"] == "CONNECTION_STATUS"] == ["SUCCEEDED"]

    discover, _ = _run(source, emu, tmp_path, "discover", "--config", str(config))
    catalogs = [m["catalog"] for m in discover if m["type"] == "CATALOG"]
    assert len(catalogs) == 1
    streams = catalogs[0]["streams"]
    expected = _expected_counts(emu)
    assert {s["name"] for s in streams} == set(expected)

    configured = tmp_path / "configured_catalog.json"
    configured.write_text(
        json.dumps(
            {"streams": [{"stream": s, "sync_mode": "full_refresh", "destination_sync_mode": "overwrite"} for s in streams]}
        )
    )
    messages, _ = _run(source, emu, tmp_path, "read", "--config", str(config), "--catalog", str(configured))
    errors = [m["trace"]["error"]["message"] for m in messages if m["type"] == "TRACE" and m["trace"]["type"] == "ERROR"]
    assert errors == []
    statuses = {
        m["trace"]["stream_status"]["stream_descriptor"]["name"]: m["trace"]["stream_status"]["status"]
        for m in messages
        if m["type"] == "TRACE" and m["trace"]["type"] == "STREAM_STATUS"
    }
    assert statuses == {name: "COMPLETE" for name in expected}
    records = Counter(m["record"]["stream"] for m in messages if m["type"] == "RECORD")
    assert all(expected.values()), f"the emulator's account should have data for every stream: {expected}"
    assert dict(records) == expected
    detailed = [m["record"]["data"] for m in messages if m["type"] == "RECORD" and m["record"]["stream"] == "lists_detailed"]
    assert all(isinstance(r["attributes"]["profile_count"], int) for r in detailed)
    campaigns = [m["record"]["data"] for m in messages if m["type"] == "RECORD" and m["record"]["stream"] == "campaigns_detailed"]
    assert all(isinstance(c["estimated_recipient_count"], int) and c["campaign_messages"] for c in campaigns)
    events = [m["record"]["data"] for m in messages if m["type"] == "RECORD" and m["record"]["stream"] == "events_detailed"]
    assert all(e["relationships"]["metric"]["data"]["name"] for e in events)  # the included metric's name
    print(f"airbyte-source-klaviyo 2.13.1: {len(streams)} streams, {sum(records.values())} records")
