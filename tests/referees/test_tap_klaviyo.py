"""Referee: singer-io ``tap-klaviyo`` (discovery, then a sync of every stream) against the emulator.

Every stream must produce records, each event stream exactly the emulator's events of its metric,
global_exclusions the suppressed profiles, lists and campaigns the emulator's."""

from __future__ import annotations

import json
import subprocess
from collections import Counter

import pytest

from .conftest import HERE, referee_venv, run_json_lines

pytestmark = [pytest.mark.referees, pytest.mark.timeout(1800)]  # includes a cold venv build

TAP = "tap-klaviyo==1.1.5"
EMULATOR_ARGS = ["--profiles", "300", "--events", "3000", "--seed", "5"]
REASONS = ("HARD_BOUNCE", "USER_SUPPRESSED", "UNSUBSCRIBE", "INVALID_EMAIL")


@pytest.fixture(scope="module")
def tap():
    return referee_venv(TAP) / "bin" / "python"


def test_tap_discovers_and_syncs_every_stream(tap, referee_emulator, tmp_path):
    emu = referee_emulator
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"api_key": emu.api_key, "start_date": "2000-01-01T00:00:00Z"}))
    wrapper = str(HERE / "clients" / "tap_klaviyo_run.py")

    mapping = json.loads(
        subprocess.run(
            [str(tap), "-c", "import json, tap_klaviyo; print(json.dumps(tap_klaviyo.EVENT_MAPPINGS))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    metrics = [m for page in [emu.get("/api/metrics")] for m in page["data"]]
    expected_events = {mapping[m["attributes"]["name"]]: m["id"] for m in metrics if m["attributes"]["name"] in mapping}
    assert len(expected_events) >= 14, "the emulator's account should have the tap's 14 email/SMS metrics"

    # discovery
    done = subprocess.run(
        [str(tap), wrapper, emu.base_url, "--config", str(config), "--discover"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    catalog = json.loads(done.stdout)
    streams = {s["stream"]: s for s in catalog["streams"]}
    assert set(streams) == {*expected_events, "global_exclusions", "lists", "campaigns"}
    for name, metric_id in expected_events.items():
        assert streams[name]["tap_stream_id"] == metric_id

    # sync of every stream
    for stream in catalog["streams"]:
        for entry in stream["metadata"]:
            if entry["breadcrumb"] == []:
                entry["metadata"]["selected"] = True
    selected = tmp_path / "catalog.json"
    selected.write_text(json.dumps(catalog))
    messages, _ = run_json_lines(
        [str(tap), wrapper, emu.base_url, "--config", str(config), "--catalog", str(selected)], cwd=tmp_path, timeout=600
    )
    records = Counter(m["stream"] for m in messages if m["type"] == "RECORD")
    schemas = {m["stream"] for m in messages if m["type"] == "SCHEMA"}
    assert schemas == set(streams)

    expected = {
        name: emu.count("/api/events", {"filter": f'equals(metric_id,"{metric_id}")', "page[size]": "200"})
        for name, metric_id in expected_events.items()
    }
    expected["global_exclusions"] = sum(
        emu.count(
            "/api/profiles",
            {"filter": f"equals(subscriptions.email.marketing.suppression.reason,'{reason}')", "page[size]": "100"},
        )
        for reason in REASONS
    )
    expected["lists"] = emu.count("/api/lists")
    expected["campaigns"] = emu.count("/api/campaigns", {"filter": "equals(messages.channel,'email')"})
    assert all(expected.values()), f"the emulator's account should have data for every stream: {expected}"
    assert dict(records) == expected
    # the included profile and metric are flattened into each event, the messages and tags into campaigns
    for m in messages:
        if m["type"] == "RECORD" and m["stream"] in expected_events:
            record = m["record"]
            assert record["metric"][0]["name"] and record["profile"][0]["id"], record
            assert record["metric"][0]["id"] == expected_events[m["stream"]]
        if m["type"] == "RECORD" and m["stream"] == "campaigns":
            assert all("send_times" in message for message in m["record"]["campaign-messages"]), m["record"]
    states = [m for m in messages if m["type"] == "STATE"]
    assert set(states[-1]["value"]["bookmarks"]) == set(expected_events.values())
    print(f"tap-klaviyo 1.1.5: {len(streams)} streams ({len(expected_events)} event streams), {sum(records.values())} records")
