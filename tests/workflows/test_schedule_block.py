"""A .dig file's ``schedule:`` block (digdag's operators) -> cron, time zone and delay."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from klaviyo_bridge.config import load_yaml
from klaviyo_bridge.errors import ConfigError
from klaviyo_bridge.schedule.workflow_block import parse_schedule
from klaviyo_bridge.schedule.workflow_push import snapshot
from klaviyo_bridge.secrets import CredentialStore


def sched(text):
    return parse_schedule(load_yaml(text, "wf.dig"), "wf.dig")


@pytest.mark.parametrize(
    "text,cron,tz,delay",
    [
        ('schedule:\n  cron>: "0 1 * * *"\n', "0 1 * * *", "UTC", 0),
        ("timezone: Asia/Tokyo\nschedule:\n  daily>: 07:00:00\n", "0 7 * * *", "Asia/Tokyo", 0),
        ("schedule:\n  daily>: 10:00:00\n", "0 10 * * *", "UTC", 0),  # YAML 1.1 reads 10:00:00 as 36000
        ("schedule:\n  daily>: '23:59:30'\n", "59 23 * * *", "UTC", 30),  # seconds become the delay
        ("schedule:\n  hourly>: 30:00\n", "30 * * * *", "UTC", 0),  # YAML reads 30:00 as 1800
        ("schedule:\n  hourly>: 05:15\n", "5 * * * *", "UTC", 15),
        ("schedule:\n  weekly>: Sun,09:00:00\n", "0 9 * * 0", "UTC", 0),
        ("schedule:\n  monthly>: 1,09:30:00\n  skip_on_overtime: true\n", "30 9 1 * *", "UTC", 0),
    ],
)
def test_operators(text, cron, tz, delay):
    s = sched(text)
    assert (s.cron, s.timezone, s.delay_seconds) == (cron, tz, delay)


def test_daily_run_times_in_the_workflow_time_zone():
    s = sched("timezone: Asia/Tokyo\nschedule:\n  daily>: 07:00:10\n")
    runs = s.parsed().next_runs(datetime(2026, 1, 1, tzinfo=timezone.utc), 2)
    assert [r.isoformat() for r in runs] == ["2026-01-02T07:00:10+09:00", "2026-01-03T07:00:10+09:00"]


def test_no_block_means_no_schedule():
    assert sched("+t:\n  td>: q.sql\n") is None


@pytest.mark.parametrize(
    "text,needle",
    [
        ("timezone: PST\nschedule:\n  daily>: 07:00:00\n", "PST"),
        ("schedule:\n  daily>: '25:00:00'\n", "not a time of day"),
        ("schedule:\n  hourly>: '61:00'\n", "MM:SS"),
        ('schedule:\n  cron>: "0 1 * *"\n', "cron>"),
        ('schedule:\n  cron>: "0 1 * * *"\n  daily>: 07:00:00\n', "exactly one"),
        ("schedule:\n  minutes_interval>: 5\n", "exactly one"),
        ("schedule:\n  weekly>: Funday,09:00:00\n", "day of the week"),
        ("schedule:\n  monthly>: 32,09:00:00\n", "day of the month"),
        ("schedule:\n  daily>: 07:00:00\n  start: 2026-01-01\n", "not supported"),
    ],
)
def test_errors_name_the_problem(text, needle):
    with pytest.raises(ConfigError) as err:
        sched(text)
    assert needle in str(err.value) and "wf.dig" in str(err.value)


def test_snapshot_stores_files_and_moves_inline_keys_out(tmp_path):
    (tmp_path / "q.sql").write_text("SELECT email FROM t")
    dig = tmp_path / "wf.dig"
    dig.write_text(
        "schedule:\n  hourly>: 10:00\n_export:\n  f: q.sql\n"
        "+a:\n  td>: ${f}\n  result_settings:\n    operation: add\n    list_value: L\n"
        "    api_token: pk_secret_value_123456\n"
        "+b:\n  +c:\n    td>: q.sql\n    result_connection: saved\n"
        "    result_settings:\n      operation: add\n      list_value: L\n      api_token: pk_other_0123456789\n"
    )
    store = CredentialStore(tmp_path / "creds.json")
    store.save("saved", "pk_saved_0123456789")
    pushed = snapshot(dig, "wf", store)
    doc = pushed.config["workflow"]["document"]
    assert pushed.config["workflow"]["files"] == {"q.sql": "SELECT email FROM t"}
    assert {k: v.reveal() for k, v in pushed.keys.items()} == {"workflow:wf": "pk_secret_value_123456"}
    assert doc["+a"]["result_connection"] == "workflow:wf" and "api_token" not in doc["+a"]["result_settings"]
    assert pushed.dropped == ["wf+b+c"] and "api_token" not in doc["+b"]["+c"]["result_settings"]
    assert "pk_" not in str(pushed.config)
    dig.write_text("_export:\n  api_token: pk_secret_value_123456\n+a:\n  td>: q.sql\n")
    with pytest.raises(ConfigError, match="_export.api_token"):
        snapshot(dig, "wf", store)
    dig.write_text("+a:\n  td>: missing.sql\n")
    with pytest.raises(ConfigError, match="missing.sql"):
        snapshot(dig, "wf", store)


def test_a_key_in_export_variables_is_moved_out_and_never_stored(tmp_path):
    """Issue 17: a key in an _export variable that result_settings uses was stored in _bridge.schedules."""
    secret = "pk_exportvarsecret_0123456789"
    (tmp_path / "q.sql").write_text("SELECT email FROM t")
    dig = tmp_path / "wf.dig"
    dig.write_text(
        f"_export:\n  klaviyo:\n    key: {secret}\n    list: L\n  td:\n    database: crm\n"
        "+a:\n  td>: q.sql\n  result_settings:\n    operation: add\n    list_value: ${klaviyo.list}\n"
        "    api_token: ${klaviyo.key}\n"
    )
    store = CredentialStore(tmp_path / "creds.json")
    pushed = snapshot(dig, "wf", store)
    doc = pushed.config["workflow"]["document"]
    assert {k: v.reveal() for k, v in pushed.keys.items()} == {"workflow:wf": secret}
    assert doc["_export"] == {"klaviyo": {"list": "L"}, "td": {"database": "crm"}}  # only the key went
    assert doc["+a"]["result_connection"] == "workflow:wf"
    assert secret not in json.dumps(pushed.config) and secret not in repr(pushed)
    # the variable is used elsewhere too: refused, naming where, without the key
    dig.write_text(dig.read_text() + "+b:\n  echo>: ${klaviyo.key}\n")
    with pytest.raises(ConfigError, match=r"\+b\.echo>.*auth:create") as err:
        snapshot(dig, "wf", store)
    assert secret not in str(err.value)
    # a key-shaped value under a secret-sounding name that no task uses: refused too
    dig.write_text(f"_export:\n  klaviyo:\n    apikey: {secret}\n+a:\n  td>: q.sql\n")
    with pytest.raises(ConfigError, match="_export.klaviyo.apikey") as err:
        snapshot(dig, "wf", store)
    assert secret not in str(err.value)
